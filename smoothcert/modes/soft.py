"""Soft certificates (Smooth.certify_soft): CERTIFY the smoothed SOFT classifier (000 §2.4-2.5: the class with the
largest expected softmax score) with a certificate of `smoothcert.certificates.soft` (soft-hoeffding,
soft-bernstein, soft-lipschitz, soft-betting): the selection samples' score sums choose A; the n fresh samples'
per-class score sums and squares (and, for soft-betting, betting capital) bound E_A from below and the other
classes from above (alpha/2 each).
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from .. import certificates
from ..bounds.mean import centred_grid
from ..certificates import soft
from ..engine import streams as stage
from ..engine.statistics import BettingScores, ScoreSums, Votes
from ..engine.streams import Request
from ..errors import check, check_alpha, check_count
from ..noises.norms import dims_of
from .common import as_certificate, groups, run_seed, soft_selection, streams
from .grouping import GROUPING


def certify_soft(smooth, xs, n0, n, alpha, batch_size, *, certificate, seed, indices, generator, norm, skip,
                 on_batch):
    """Yields one Certificate per input, carrying the votes (any hard certificate can be recomputed) and `scores`
    (the stored soft statistics)."""
    alpha = check_alpha(alpha)
    check_count("n0", n0)
    check_count("n", n)
    spec, norm = certificates.resolve(certificate, smooth.noise, norm, dims_of(xs))
    check(spec.statistic == "scores", f"{spec.name} is not a soft certificate (soft ones: {', '.join(soft.CERTIFICATES)})")
    seed, generator = run_seed(seed, generator)
    for sampler, chunk, members, keep in groups(smooth, xs, GROUPING["certify_soft"](dict(n0=n0, n=n)), batch_size,
                                                indices, skip):
        t0 = time.perf_counter()
        G = len(members)
        c0, s0, top = soft_selection(sampler, chunk, members, n0, seed, generator, on_batch)
        stats = [Votes(), ScoreSums()]
        if spec.name == "soft-betting":              # grids around the selection means: fixed before sampling
            mean = s0 / n0
            rest = np.where(np.arange(mean.shape[1])[None, :] == top[:, None], -1.0, mean).max(axis=1)
            stats.append(BettingScores(top, n, alpha / 2, centred_grid(mean[np.arange(G), top]),
                                       centred_grid(np.clip(rest, 0, 1))))
        est = streams(members, stage.ESTIMATION, seed, generator, sampler.device)
        out = sampler.run(chunk, [Request(j, est[j], n) for j in range(G)], stats, on_batch)
        c1, (s1, q1) = out[0], out[1]
        if spec.name == "soft-betting":
            v = soft.soft_betting(s0, *out[2], smooth.noise, alpha, norm)
        else:
            v = soft.CERTIFICATES[spec.name](s0, s1, q1, n, smooth.noise, alpha, norm)
        v = certificates.complete(v, top)
        seconds = (time.perf_counter() - t0) / G
        for j in keep:
            c = as_certificate(members[j], v, j, c0[j], c1[j], alpha, spec.name, norm, seconds, seed)
            yield replace(c, scores={"selection": s0[j], "sums": s1[j], "squares": q1[j]})
