"""Several n from one pass (Smooth.certify_nested): the estimation stream is read once to max(ns), and the
certificate at each n reads its first n samples.

A stream is read in pieces that do not depend on n, so the certificate at each n is exactly the one
`certify_many` gives at that n with the same seed (and batch size). Each is valid at level alpha; the
certificates of one input at different n share samples, so they are not independent of each other.
"""
from __future__ import annotations

import time

from .. import certificates
from ..engine import streams as stage
from ..engine.statistics import NestedVotes, Votes
from ..engine.streams import Request
from ..errors import check_alpha, check_count
from ..noises.norms import dims_of
from .common import as_certificate, groups, run_seed, streams
from .grouping import GROUPING, sample_sizes


def certify_nested(smooth, xs, n0, ns, alpha, batch_size, *, seed, indices, generator, certificate, norm, skip,
                   on_batch):
    """Yields, per input, one Certificate per n in ns (ascending)."""
    alpha = check_alpha(alpha)
    check_count("n0", n0)
    ns = sample_sizes(ns)
    spec, norm = certificates.resolve(certificate, smooth.noise, norm, dims_of(xs))
    seed, generator = run_seed(seed, generator)
    for sampler, chunk, members, keep in groups(smooth, xs, GROUPING["certify_nested"](dict(n0=n0, ns=ns)),
                                                batch_size, indices, skip):
        t0 = time.perf_counter()
        sel = streams(members, stage.SELECTION, seed, generator, sampler.device)
        est = streams(members, stage.ESTIMATION, seed, generator, sampler.device)
        requests = [Request(j, stream, k) for j in range(len(members)) for stream, k in ((sel[j], n0),
                                                                                        (est[j], ns[-1]))]
        votes, nested = sampler.run(chunk, requests, [Votes(), NestedVotes(ns)], on_batch)
        c0, c1 = votes[0::2][keep], nested[1::2][keep]
        seconds = (time.perf_counter() - t0) / len(members)
        verdicts = [certificates.certify(spec.name, c0, c1[:, level], smooth.noise, alpha, norm)
                    for level in range(len(ns))]
        for j, g in enumerate(keep):
            yield tuple(as_certificate(members[g], v, j, c0[j], c1[j, level], alpha, spec.name, norm, seconds, seed)
                        for level, v in enumerate(verdicts))
