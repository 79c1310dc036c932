"""Binomial confidence bounds: Clopper-Pearson and the exact binomial test."""
from __future__ import annotations

import numpy as np
from scipy.special import betaincinv as _betaincinv
from scipy.stats import binomtest as _binomtest

from ..errors import SmoothcertError, check_alpha


def _check_counts(k, n):
    k = np.asarray(k)
    n = np.asarray(n)
    if not np.all(n >= 1):
        raise SmoothcertError(f"number of samples must be >= 1, got {n!r}")
    if not np.all((k >= 0) & (k <= n)):
        raise SmoothcertError(f"count must lie in [0, n], got k={k!r}, n={n!r}")
    return k, n


def clopper_pearson_lower(k, n, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion from k successes in n.

    The alpha-quantile of Beta(k, n - k + 1), 0 when k = 0 (Clopper & Pearson 1934; Cohen et al. 2019, Alg.
    CERTIFY's LowerConfBound, which calls it with the two-sided level 2*alpha). Vectorised over k and n.
    """
    alpha = check_alpha(alpha)
    k, n = _check_counts(k, n)
    with np.errstate(invalid="ignore"):
        out = _betaincinv(k, n - k + 1, alpha)       # = scipy.stats.beta.ppf, without its overhead
    return np.where(k == 0, 0.0, out)[()]


def clopper_pearson_upper(k, n, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson upper bound: the (1 - alpha)-quantile of Beta(k + 1, n - k)."""
    alpha = check_alpha(alpha)
    k, n = _check_counts(k, n)
    with np.errstate(invalid="ignore"):
        out = 1.0 - _betaincinv(n - k, k + 1, alpha)    # = Beta(k+1, n-k) quantile 1 - alpha, accurate for tiny alpha
    return np.where(k == n, 1.0, out)[()]


def binomial_test_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test of H0: success probability = p (Cohen et al. 2019, PREDICT)."""
    return float(_binomtest(int(k), int(n), p, alternative="two-sided").pvalue)
