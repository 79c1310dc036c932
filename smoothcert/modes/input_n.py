"""Input-specific n (Smooth.certify_input_n; Chen et al. 2022's idea, corrected): the n0 selection samples choose
the class A and, from A's selection count alone, the smallest n <= n_max whose expected radius is within
`max_loss` of the expected radius at n_max (`planning.choose_n`); then n FRESH samples give the certificate.
Conditional on the selection samples n and A are fixed and the fresh samples independent of them, so the
certificate keeps level alpha (proof in planning.choose_n); the pilot samples never enter the bound.
`Certificate.samples` is the n used.
"""
from __future__ import annotations

import time

from .. import certificates
from ..engine import streams as stage
from ..engine.streams import Request
from ..errors import check_alpha, check_count
from ..noises.norms import LINF, dims_of, kind
from ..planning import choose_n
from .common import as_certificate, groups, run_seed, streams
from .grouping import GROUPING


def certify_input_n(smooth, xs, n0, n_max, alpha, batch_size, *, max_loss, relative, grid, seed, indices,
                    generator, certificate, norm, skip, on_batch):
    """Yields one Certificate per input, each from the n its selection samples chose."""
    alpha = check_alpha(alpha)
    check_count("n0", n0)
    check_count("n_max", n_max)
    spec, norm = certificates.resolve(certificate, smooth.noise, norm, dims_of(xs))
    proxy_norm = norm if norm in smooth.noise.norms or kind(norm) == LINF else None
    seed, generator = run_seed(seed, generator)
    for sampler, chunk, members, keep in groups(smooth, xs, GROUPING["certify_input_n"](dict(n0=n0)), batch_size,
                                                indices, skip):
        t0 = time.perf_counter()
        sel = streams(members, stage.SELECTION, seed, generator, sampler.device)
        c0 = sampler.counts(chunk, [Request(j, sel[j], n0) for j in range(len(members))], on_batch)
        ks = [choose_n(int(row.max()), n0, n_max, alpha, smooth.noise, max_loss, relative, grid, proxy_norm)
              for row in c0]
        est = streams(members, stage.ESTIMATION, seed, generator, sampler.device)
        c1 = sampler.counts(chunk, [Request(j, est[j], k) for j, k in enumerate(ks)], on_batch)
        c0, c1 = c0[keep], c1[keep]
        seconds = (time.perf_counter() - t0) / len(members)
        v = certificates.certify(spec.name, c0, c1, smooth.noise, alpha, norm)
        for j, g in enumerate(keep):
            yield as_certificate(members[g], v, j, c0[j], c1[j], alpha, spec.name, norm, seconds, seed)
