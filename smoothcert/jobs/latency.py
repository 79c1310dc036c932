"""Latency: the largest n whose one-input certify call fits a time budget (`bench_latency`, 002 §3)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import check, check_count
from ..smooth import Smooth


@dataclass(frozen=True)
class Latency:
    """One input's end-to-end certification time at n estimation samples (median and 90th percentile, ms)."""

    n: int
    median_ms: float
    p90_ms: float


def bench_latency(smoothed: Smooth, x: torch.Tensor, *, n0: int, alpha: float, budget_ms: float,
                  repeats: int = 15, n_cap: int = 1_000_000) -> tuple[list[Latency], int]:
    """Time `Smooth.certify` on one input (noise, forward passes in one batch of n0 + n, bound: what a real-time
    caller pays, 002 §3) on a geometric grid of n, then bisect: the largest n whose median time fits `budget_ms`
    (0 if even n = 1 does not). Returns (the measurements, that n)."""
    check(0 < budget_ms < float("inf"), f"--budget-ms must be a finite number > 0, got {budget_ms}")
    check_count("--repeats", repeats)

    def measure(n: int) -> Latency:
        times = []
        for r in range(repeats + 2):                 # two warm-up calls (allocations, caches)
            t0 = time.perf_counter()
            smoothed.certify(x, n0, n, alpha, n0 + n, seed=r)
            times.append((time.perf_counter() - t0) * 1e3)
        times = np.array(times[2:])
        return Latency(n, float(np.median(times)), float(np.percentile(times, 90)))

    table, n, fits = [], 1, 0
    while n <= n_cap:
        table.append(measure(n))
        if table[-1].median_ms > budget_ms:
            break
        fits, n = n, n * 2
    hi = min(n, n_cap + 1)
    while hi - fits > max(1, fits // 50):            # bisect to within 2 %
        mid = (fits + hi) // 2
        table.append(measure(mid))
        fits, hi = (mid, hi) if table[-1].median_ms <= budget_ms else (fits, mid)
    return sorted(table, key=lambda t: t.n), fits
