"""What a run achieved: certified accuracy at each radius, average certified radius, abstain rate, the
Clopper-Pearson interval on certified accuracy, and `Summary` / `summarize` (from a file or from `certify_many`)."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..bounds import clopper_pearson_lower, clopper_pearson_upper
from ..errors import check
from .reading import Results, rounding_bounds

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def check_radii(radii, what: str = "radii") -> np.ndarray:
    """The radii as a float array, checked finite and >= 0."""
    try:
        r = np.asarray(radii, dtype=float)
    except (TypeError, ValueError):
        r = np.array(np.nan)
    check(bool(np.all(np.isfinite(r) & (r >= 0))), f"{what} must be finite numbers >= 0, got {radii!r}")
    return r


def radius_grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, ..., up to and including stop (as Cohen et al.'s table scripts), without float drift."""
    check(all(isinstance(v, (int, float)) and math.isfinite(v) for v in (start, stop, step)),
          f"radius grid needs finite numbers, got {start!r} {stop!r} {step!r}")
    check(start >= 0 and step > 0 and stop >= start, f"radius grid needs 0 <= START <= STOP and STEP > 0, got "
                                                     f"{start:g} {stop:g} {step:g}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    check(count <= 1000, f"radius grid has {count} radii; at most 1000")
    return tuple(round(start + i * step, 12) for i in range(count))   # 0.1 * 3 is 0.3, not 0.30000000000000004


def check_certify(res: Results, what: str) -> None:
    check(isinstance(res, Results), f"{what} expects Results (from load_results), got {type(res).__name__}")
    check(res.kind == "certify", f"{res.path or res.name}: predict results have no radii ({what})")


def certified_accuracy(res: Results, radii) -> np.ndarray:
    """Fraction of inputs classified correctly with certified radius >= r, for each r in radii."""
    check_certify(res, "certified accuracy")
    r = check_radii(radii)
    # Cohen et al. 2019 §4: approximate certified accuracy = mean of (correct & radius >= r)
    hit = (res.correct[None, :] == 1) & (res.radius[None, :] >= r.reshape(-1, 1))
    return hit.mean(axis=1).reshape(r.shape)


def average_certified_radius(res: Results) -> float:
    """Average certified radius: mean of radius * correct over all inputs (0 when wrong or abstaining)."""
    check_certify(res, "average certified radius")
    return float(np.mean(res.radius * res.correct))        # ACR, Zhai et al. 2020 (MACER)


def abstain_rate(res: Results) -> float:
    """Fraction of inputs on which the smoothed classifier abstained (predict == -1)."""
    return float(np.mean(res.predict == -1))


def certified_accuracy_interval(res: Results, r: float = 0.0, confidence: float = 0.95) -> tuple[float, float]:
    """A level-`confidence` interval (low, high) for the population certified accuracy at r from N i.i.d. test inputs.

    k of N certified-correct at r, miss = 1 - confidence, CP = one-sided Clopper-Pearson. high = CP_upper(k, N, miss/2)
    bounds p_cert = P(an input is certified-correct at r). Each certificate is wrong w.p. <= alpha, independently, so
    the number W of wrong ones is stochastically below Binomial(N, alpha): W <= q = binom.ppf(1 - miss/4, N, alpha)
    w.p. >= 1 - miss/4, and then >= k - q inputs are truly robust-correct. CP_lower is monotone in k, so
    low = CP_lower(k - q, N, miss/4) bounds the true certified accuracy (and p_cert) but w.p. <= miss/4 + miss/4;
    union bound: total miss <= 1 - confidence. If res.alpha is None (Cohen's 6-column files) the correction is
    skipped: low = CP_lower(k, N, miss/2), a bound on p_cert that ignores wrong certificates.
    If res.rounded (radii printed to 3 significant digits), low counts each radius at the smallest true value it
    can stand for and high at the largest, so the rounding cannot overstate the interval.
    For predict results r must be 0: the same interval on the accuracy, since PREDICT returns a class other than
    the smoothed classifier's with probability <= alpha (Cohen et al. 2019, Prop. 2).
    """
    check(isinstance(confidence, (int, float)) and 0 < confidence < 1, f"confidence must be in (0, 1): {confidence!r}")
    check(check_radii(r, "radius").ndim == 0, f"radius must be a single number, got {r!r}")
    check(res.kind == "certify" or r == 0, f"{res.path or res.name}: predict results have no radii")
    r, n, miss = float(r), res.n, 1.0 - confidence
    radius = np.zeros(n) if res.radius is None else res.radius
    least, most = rounding_bounds(radius) if res.rounded else (radius, radius)
    k_low, k_high = (int(np.sum((res.correct == 1) & (rad >= r))) for rad in (least, most))
    high = float(clopper_pearson_upper(k_high, n, miss / 2))   # k: certified-correct inputs at r
    q, level = (0, miss / 2) if res.alpha is None else (int(stats.binom.ppf(1 - miss / 4, n, res.alpha)), miss / 4)
    low = float(clopper_pearson_lower(max(k_low - q, 0), n, level))    # q >= #wrong certificates w.p. 1 - miss/4
    return float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))
