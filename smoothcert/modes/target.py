"""Early stopping at a target radius (Smooth.certify_target; the acceptance-radius use of 003): decide "certified at
`radius`?" The selection samples choose A; fresh samples are drawn in rounds (the looks of
`bounds.sequential.UnionBound`) and each input stops as soon as its anytime-valid lower bound on pA reaches the
probability that certifies `radius` (certified) or, by the `futility` rule, it is judged unable to (not part of
the guarantee: a futile input is just not certified). The bound is Clopper-Pearson at a fixed schedule of looks
with alpha split over them, valid under any data-dependent stopping (proof in bounds/sequential.py); re-checking
a fixed-n bound after every round would not be.
"""
from __future__ import annotations

import time

import numpy as np

from .. import certificates
from ..bounds.sequential import CONTINUE, UnionBound, decide, target_probability
from ..certificates.verdict import ABSTAIN
from ..engine import streams as stage
from ..engine.streams import Request
from ..errors import check_alpha, check_count
from ..noises.norms import dims_of
from ..noises import tv_of
from .common import as_certificate, groups, run_seed, streams
from .grouping import GROUPING


def certify_target(smooth, xs, n0, radius, n_max, alpha, batch_size, *, futility, futility_level, seed, indices,
                   generator, norm, skip, on_batch):
    """Yields one Certificate per input: radius = the radius of the best anytime lower bound when it stopped
    (>= `radius` exactly when certified there; a smaller radius where the bound still certifies one), counts
    = the estimation counts drawn, `samples` = how many."""
    alpha = check_alpha(alpha)
    check_count("n0", n0)
    check_count("n_max", n_max)
    spec, norm = certificates.resolve(None, smooth.noise, norm, dims_of(xs))
    one_sided = certificates.ONE_SIDED[smooth.noise.name]
    schedule = UnionBound(alpha, n_max)
    p0 = target_probability(smooth.noise, radius, norm)
    seed, generator = run_seed(seed, generator)
    for sampler, chunk, members, keep in groups(smooth, xs, GROUPING["certify_target"](dict(n0=n0)), batch_size,
                                                indices, skip):
        t0 = time.perf_counter()
        G = len(members)
        sel = streams(members, stage.SELECTION, seed, generator, sampler.device)
        c0 = sampler.counts(chunk, [Request(j, sel[j], n0) for j in range(G)], on_batch)
        top = c0.argmax(axis=1)
        est = streams(members, stage.ESTIMATION, seed, generator, sampler.device)
        c1 = np.zeros_like(c0)
        best, t, live = np.zeros(G), 0, np.ones(G, dtype=bool)
        for look in schedule.rounds():
            alive = np.flatnonzero(live)
            c1[alive] += sampler.counts(chunk, [Request(j, est[j], look - t) for j in alive], on_batch)
            t = look
            k = c1[alive, top[alive]]
            best[alive] = np.maximum(best[alive], np.atleast_1d(schedule.lower(k, t)))
            live[alive] = np.atleast_1d(decide(schedule, k, t, p0, futility, futility_level)) == CONTINUE
            if not live.any():
                break
        seconds = (time.perf_counter() - t0) / G
        ok = best - tv_of(smooth.noise) >= 0.5     # float-sound: P(A) >= pA_lower - tv (certificates.hard)
        radii = np.where(ok, smooth.noise.radius(best, norm), 0.0)
        v = certificates.Verdict(np.where(ok, top, ABSTAIN), radii, best, np.full(G, np.nan), top,
                                 np.where(ok, "", "pA_lower < 1/2").astype(object))
        for j in keep:
            yield as_certificate(members[j], v, j, c0[j], c1[j], alpha, one_sided, norm, seconds, seed)
