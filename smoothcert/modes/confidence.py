"""Certified confidence (Smooth.confidence; 001, Kumar et al. 2020): A = the class with the largest selection score
sum; the n fresh samples give the distribution of the measure (A's softmax score, or its margin over the best
other class) as a histogram on fixed bins, and for each threshold c the radius within which E[measure] provably
stays above c: by the CDF certificate (Thm 2, one-sided DKW band) and the baseline (Thm 1, Hoeffding), each at
level alpha, found by bisection and rounded down (smoothcert.certificates.confidence). The prediction is A only
where the CDF bound at radius 0 certifies A as the smoothed top class, ABSTAIN elsewhere (`conf.certified_top`).
"""
from __future__ import annotations

import time

import numpy as np

from ..certificates import confidence as conf
from ..engine import streams as stage
from ..engine.statistics import MeasureHistogram
from ..engine.streams import Request
from ..errors import check, check_alpha, check_count
from ..noises import tv_of
from .common import groups, run_seed, soft_selection, streams
from .grouping import GROUPING
from .outcomes import Confidence


def confidence(smooth, xs, n0, n, alpha, thresholds, batch_size, *, measure, num_thresholds, bins, seed, indices,
               generator, skip, on_batch):
    """Yields one Confidence per input: its CDF and baseline radius per threshold, and the stored statistics."""
    alpha = check_alpha(alpha)
    check_count("n0", n0)
    check_count("n", n)
    check(smooth.noise.name == "gaussian", "certified confidence (001) is for Gaussian noise")
    low, high = conf.measure_range(measure)
    levels = tuple(float(c) for c in thresholds)
    check(levels and all(low < c < high for c in levels), f"thresholds must lie strictly inside ({low:g}, "
                                                         f"{high:g}) for the {measure} measure, got {thresholds!r}")
    num_thresholds = conf.NUM_THRESHOLDS if num_thresholds is None else num_thresholds
    bins = conf.BINS if bins is None else bins
    check_count("num_thresholds", num_thresholds)
    check_count("bins", bins)
    seed, generator = run_seed(seed, generator)
    sigma, tv = smooth.noise.sigma, tv_of(smooth.noise)     # float-sound: the sampler's tv (certificates.confidence)
    for sampler, chunk, members, keep in groups(smooth, xs, GROUPING["confidence"](dict(n0=n0, n=n)), batch_size,
                                                indices, skip):
        t0 = time.perf_counter()
        G = len(members)
        c0, s0, top = soft_selection(sampler, chunk, members, n0, seed, generator, on_batch)
        est = streams(members, stage.ESTIMATION, seed, generator, sampler.device)
        (hist, sums), = sampler.run(chunk, [Request(j, est[j], n) for j in range(G)],
                                    [MeasureHistogram(top, measure, bins)], on_batch)
        layers = conf.layers_from_histogram(hist[keep], measure, num_thresholds)
        cdf = conf.cdf_radius(layers, np.array(levels), sigma, alpha, tv=tv)
        base = conf.baseline_radius(sums[keep], n, np.array(levels), sigma, alpha, measure, tv=tv)
        predict = conf.certified_top(layers, top[keep], measure, sigma, alpha, tv=tv)
        seconds = (time.perf_counter() - t0) / G
        for row, j in enumerate(keep):
            yield Confidence(members[j], int(predict[row]), levels, cdf[row], base[row], hist[j], float(sums[j]),
                             s0[j], c0[j], alpha, measure, seconds, seed, int(top[j]))
