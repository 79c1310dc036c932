"""The measures of certified confidence (001 §4) and the fixed histogram they are stored on: per noisy sample, the
softmax score of the selected class ('score', in [0, 1]) or its margin over the best other class ('margin', in
[-1, 1]), binned on equal-width edges chosen before sampling. The engine bins samples with `bin_index`
(MeasureHistogram); certified confidence reads thresholds at the same edges (certificates/confidence.py), and the
results files check a stored histogram against them.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import SmoothcertError, check

MEASURES = {"score": (0.0, 1.0), "margin": (-1.0, 1.0)}
BINS = 4096                 # stored histogram: bins of width 2^-12 (score) or 2^-11 (margin)


def measure_range(measure: str) -> tuple[float, float]:
    """(a, b): the range of the measure."""
    if measure not in MEASURES:
        raise SmoothcertError(f"unknown measure {measure!r} (known: {', '.join(MEASURES)})")
    return MEASURES[measure]


def histogram_edges(measure: str = "score", bins: int = BINS) -> np.ndarray:
    """The fixed bin edges a = e_0 < ... < e_bins = b (exact in binary for power-of-two `bins`)."""
    low, high = measure_range(measure)
    check(isinstance(bins, int) and bins >= 1, f"bins must be an integer >= 1, got {bins!r}")
    return np.linspace(low, high, bins + 1)


def bin_index(values, measure: str = "score", bins: int = BINS):
    """Bin k of each value: e_k <= value < e_{k+1} (the last bin is closed), compared against the SAME edges the
    bounds use. numpy array in, numpy out; torch tensor in, torch out (for the engine: torch.bucketize)."""
    inner = histogram_edges(measure, bins)[1:-1]
    if isinstance(values, torch.Tensor):          # compared in float64, as the bounds read the edges
        return torch.bucketize(values.double(), torch.as_tensor(inner, device=values.device), right=True)
    return np.searchsorted(inner, np.asarray(values, dtype=np.float64), side="right")

