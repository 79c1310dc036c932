"""CERTIFY and PREDICT at a fixed number of samples (Cohen et al. 2019, Alg. CERTIFY and PREDICT; Alg. 2 of Seferis
et al.): n0 selection samples choose the class, n fresh estimation samples bound its probability (CERTIFY); n
samples give the top two counts and a binomial test (PREDICT). Smooth.certify_many and Smooth.predict_many.
"""
from __future__ import annotations

import numpy as np

from .. import bounds, certificates
from ..certificates.verdict import ABSTAIN
from ..engine import streams as stage
from ..errors import check_alpha, check_count
from ..noises.norms import dims_of
from .common import as_certificate, grouped_counts, run_seed
from .outcomes import Prediction


def certify_many(smooth, xs, n0, n, alpha, batch_size, *, seed, indices, generator, certificate, norm, skip,
                 on_batch):
    """CERTIFY each input from its own selection and estimation streams; yields Certificates in order."""
    alpha = check_alpha(alpha)
    spec, norm = certificates.resolve(certificate, smooth.noise, norm, dims_of(xs))
    check_count("n0", n0, 1 if spec.uses_selection else 0)
    check_count("n", n)
    seed, generator = run_seed(seed, generator)
    stages = ((stage.SELECTION, n0), (stage.ESTIMATION, n))
    for idx, (c0, c1), seconds in grouped_counts(smooth, xs, stages, batch_size, seed, indices, generator, skip,
                                                 on_batch):
        v = certificates.certify(spec.name, c0, c1, smooth.noise, alpha, norm)
        for j, index in enumerate(idx):
            yield as_certificate(index, v, j, c0[j], c1[j], alpha, spec.name, norm, seconds, seed)


def predict_many(smooth, xs, n, alpha, batch_size, *, seed, indices, generator, skip, on_batch):
    """PREDICT each input from its prediction stream: the top two counts of n samples, abstaining unless a
    two-sided binomial test rejects a tie at alpha; yields Predictions in order."""
    alpha = check_alpha(alpha)
    check_count("n", n)
    seed, generator = run_seed(seed, generator)
    for idx, (counts,), seconds in grouped_counts(smooth, xs, ((stage.PREDICTION, n),), batch_size, seed, indices,
                                                  generator, skip, on_batch):
        for index, row in zip(idx, counts):
            top2 = np.argsort(-row, kind="stable")[:2]
            n_a = int(row[top2[0]])
            n_b = int(row[top2[1]]) if len(top2) > 1 else 0
            pvalue = bounds.binomial_test_pvalue(n_a, n_a + n_b, 0.5)
            prediction = ABSTAIN if pvalue > alpha else int(top2[0])
            yield Prediction(index, prediction, pvalue, row, alpha, seconds, int(top2[0]), seed)
