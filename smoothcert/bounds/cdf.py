"""Distribution-free confidence bands on a CDF: the Dvoretzky-Kiefer-Wolfowitz inequality with Massart's
constant, one- or two-sided.

For m i.i.d. values with CDF F and empirical CDF F_m (any F, continuous or not):

    one-sided   P(sup_x (F_m(x) - F(x)) > eps) <= exp(-2 m eps^2)   whenever exp(-2 m eps^2) <= 1/2
                (Massart 1990, "The tight constant in the Dvoretzky-Kiefer-Wolfowitz inequality", Ann. Probab.
                18(3)), and the same for sup_x (F(x) - F_m(x)) (apply it to -X);
    two-sided   P(sup_x |F_m(x) - F(x)| > eps) <= 2 exp(-2 m eps^2)   for every eps (Massart 1990).

So eps = sqrt(ln(1/alpha) / 2m) gives a ONE-sided band at level alpha for alpha <= 1/2 (for alpha > 1/2 we use
eps at alpha = 1/2, which is valid and only wider), and sqrt(ln(2/alpha) / 2m) the two-sided band. 001 states
the two-sided constant but its code uses the one-sided one (ERRATA); Theorem 2's lower bound needs only lower
bounds on the tails P(X >= s), i.e. only the event sup_x (F(x) - F_m(x)) <= eps, so the one-sided band is valid
for it, and likewise the upper bound needs only the other side. Using both at once needs the two-sided eps.
For a discontinuous F the statistic sup (F_m - F) is stochastically smaller than for a continuous one (the
quantile transform), so the bands hold for every distribution, ties included.

Tails: on the event sup (F - F_m) <= eps, P(X >= s) = 1 - F(s-) >= 1 - F_m(s-) - eps = #{X_j >= s}/m - eps for
EVERY s at once (F(s-) - F_m(s-) is a limit of F - F_m); on the event sup (F_m - F) <= eps,
P(X > s) = 1 - F(s) <= #{X_j > s}/m + eps.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import check, check_alpha


def dkw_epsilon(m, alpha: float, two_sided: bool = False):
    """The DKW band half-width with Massart's constant: sqrt(ln(1/alpha) / 2m) one-sided (alpha capped at 1/2,
    where Massart's one-sided bound starts to hold), sqrt(ln(2/alpha) / 2m) two-sided. m: samples (array ok)."""
    alpha = check_alpha(alpha)
    m = np.asarray(m, dtype=np.float64)
    check(np.all(m >= 1), f"the number of samples must be >= 1, got {m!r}")
    level = 2 / alpha if two_sided else 1 / min(alpha, 0.5)
    return np.sqrt(math.log(level) / (2 * m))[()]      # Massart 1990 (one-sided needs alpha <= 1/2)


def tail_lower(count_ge, m, alpha: float):
    """Lower bounds on P(X >= s), simultaneously for all s, at level alpha (one-sided DKW):
    max(#{X_j >= s}/m - eps, 0). count_ge: #{X_j >= s} for each threshold s (array)."""
    count_ge = np.asarray(count_ge, dtype=np.float64)
    return np.clip(count_ge / np.asarray(m, dtype=np.float64) - dkw_epsilon(m, alpha), 0.0, 1.0)[()]


def tail_upper(count_gt, m, alpha: float):
    """Upper bounds on P(X > s), simultaneously for all s, at level alpha (the other one-sided DKW band):
    min(#{X_j > s}/m + eps, 1). An upper bound on #{X_j > s} (e.g. #{X_j >= s}) keeps it valid."""
    count_gt = np.asarray(count_gt, dtype=np.float64)
    return np.clip(count_gt / np.asarray(m, dtype=np.float64) + dkw_epsilon(m, alpha), 0.0, 1.0)[()]


def cdf_band(values, thresholds, alpha: float, two_sided: bool = True):
    """(lower, upper) bounds on F(t) = P(X <= t) at each threshold t from the values (1-D): F_m(t) -/+ eps,
    clipped to [0, 1]. two_sided=True: both hold at once with probability >= 1 - alpha; two_sided=False: each
    side holds on its own with probability >= 1 - alpha (use one side only)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    check(x.size >= 1 and np.all(np.isfinite(x)), "cdf_band needs at least one finite value")
    f = np.searchsorted(x, np.asarray(thresholds, dtype=np.float64), side="right") / x.size
    eps = dkw_epsilon(x.size, alpha, two_sided)
    return np.clip(f - eps, 0.0, 1.0), np.clip(f + eps, 0.0, 1.0)
