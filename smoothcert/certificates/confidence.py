"""Certified confidence (001: Kumar, Levine, Feizi & Goldstein 2020): with probability >= 1 - alpha, bounds on
the expected confidence measure E[h(x' + delta)], delta ~ N(0, sigma^2 I), at EVERY x' with ||x' - x||_2 <= R,
and the largest R for which the lower bound stays above a threshold c.

Measures (001 §4), one scalar per noisy sample of the selected class i: 'score' h_i in [0, 1], and 'margin'
h_i - max_{j != i} h_j in [-1, 1]. A class chosen on separate selection samples is fixed here.

Baseline (001 Thm 1): with a lower bound e on the expected measure (Hoeffding, at alpha) and p = (e - a)/(b - a),
    E at x' >= a + (b - a) Phi(Phi^-1(p) - R/sigma)                 (upper: Phi^-1(p_upper) + R/sigma)
CDF (001 Thm 2): for thresholds a <= s_1 <= ... <= s_T <= b and lower bounds q_j on P(h >= s_j),
    E at x' >= a + sum_j (s_j - s_{j-1}) Phi(Phi^-1(q_j) - R/sigma),  s_0 = a,
    E at x' <= s_1 + sum_j (s_{j+1} - s_j) Phi(Phi^-1(u_j) + R/sigma),  s_{T+1} = b, u_j >= P(h > s_j).
Proof sketch: h >= a + sum_j (s_j - s_{j-1}) 1{h >= s_j} (layer cake), and by Neyman-Pearson (001 Lemma 3) a set
of Gaussian mass >= q at x keeps mass >= Phi(Phi^-1(q) - R/sigma) after a shift of norm R; the upper bound is
the mirror image, from h <= s_1 + sum_j (s_{j+1} - s_j) 1{h > s_j}. The layer cake holds for any thresholds,
so they may be chosen from the same samples: the q_j = #{h >= s_j}/m - eps all hold at once on the one-sided
DKW event sup (F - F_m) <= eps, eps = sqrt(ln(1/alpha) / 2m) (Massart; see bounds.cdf for why one side is
valid), and the u_j = #{h > s_j}/m + eps on the other one-sided event, sup (F_m - F) <= eps. Lower and upper
bound are each valid at alpha on their own; wanting both at once costs alpha/2 each.

Thresholds: 001 §5.2 puts them at equal-count order statistics; like the authors' code we take every g-th
sorted sample, g = ceil(m / num_thresholds), num_thresholds = 10,000 by default (every sample when m <= 10^4).
Tails are exact counts (ties counted), never the position fraction (the authors' (T - i)/T overstates the
tail when m is not a multiple of g). Adding thresholds never lowers the CDF bound (a refinement replaces
(s_j - s_{j-1}) G(q_j) by two terms with q' >= q_j), so every-sample thresholds are the best these samples give.

Stored statistic: a histogram of the measure on FIXED equal-width bins of [a, b] (`bin_index`, `histogram`),
edges chosen before sampling. Thresholds at bin lower edges e_k have exact tails #{h >= e_k} = counts of bins
>= k, so Thm 2 applies to them exactly; the upper bound uses #{h >= e_k} >= #{h > e_k}. Against thresholds at
the samples, the lower bound loses at most one bin width (b - a)/bins on the value scale.

Radius for c: the largest R with lower bound > c; the CDF bound is continuous and strictly decreasing in R, so
bisection on [0, R_max] to an absolute precision `tol` returns the lower end of the final bracket (a radius
whose bound was checked to exceed c, within tol below the exact one). 0 where the bound at R = 0 is <= c. With
m samples a constant score gives a finite radius (ERRATA), about 10x the baseline's in 001's 0.55 example.

Prediction (`certified_top`): A is reported only where the same lower bound at R = 0 certifies it as the smoothed
soft classifier's top class at x; elsewhere the row abstains (predict -1, correct 0), whatever its radii.
Float-sound noise (smoothcert.noises.sound, step 3; `tv` below, 0 otherwise): the samples come from a law within
total variation tv of the Gaussian smoothing the theorems are about, so every event's probability moves by at most
tv and the expectation of a [a, b]-valued measure by at most (b - a) tv. The layers use q_j - tv <= P(h >= s_j)
and u_j + tv >= P(h > s_j) (together (b - a) tv on the bound at R = 0: the widths sum to b - a), the baseline
p -/+ tv (p is the expectation on the [0, 1] scale), before the Gaussian shift to x': every bound is then one on
the Gaussian smoothing at x', as for the hard certificates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from ..bounds.cdf import tail_lower, tail_upper
from ..bounds.mean import hoeffding_lower, hoeffding_upper
from ..errors import SmoothcertError, check, check_alpha
from ..measures import BINS, bin_index, histogram_edges, measure_range
from .verdict import ABSTAIN

NUM_THRESHOLDS = 10_000     # the authors' code
TOP = {"score": 0.5, "margin": 0.0}    # E[measure of A] above this makes A the smoothed soft top class
TOL = 1e-9                  # absolute precision of certified radii (input-space units)


def check_thresholds(levels, measure: str = "score") -> list[float]:
    """The thresholds c as floats, checked: at least one, each strictly inside the measure's range, none repeated
    (a file names its columns cdf@c and baseline@c with c formatted by :g, so 0.5 and 0.50 are one threshold)."""
    low, high = measure_range(measure)
    try:
        levels = [float(c) for c in levels]
    except (TypeError, ValueError):
        raise SmoothcertError(f"thresholds must be numbers, got {levels!r}") from None
    names = [f"{c:g}" for c in levels]
    check(levels, "thresholds: give at least one threshold c")
    check(all(low < c < high for c in levels), f"thresholds must lie strictly inside ({low:g}, {high:g}) for the "
                                               f"{measure} measure, got {','.join(names)}")
    check(len(set(names)) == len(names), f"thresholds repeat: {','.join(names)}")
    return levels


def check_num_thresholds(num_thresholds) -> int:
    """The number of layers of the CDF certificate: an integer >= 1."""
    check(isinstance(num_thresholds, (int, np.integer)) and not isinstance(num_thresholds, bool)
          and num_thresholds >= 1, f"num_thresholds must be an integer >= 1, got {num_thresholds!r}")
    return int(num_thresholds)


def _sigma(sigma) -> float:
    check(isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0, f"sigma must be > 0, got {sigma!r}")
    return float(sigma)


@dataclass(frozen=True)
class Layers:
    """Per input: Theorem 2's thresholds and the empirical tails at them (ragged: one array per input)."""

    thresholds: tuple    # (T_g,) nondecreasing thresholds in [low, high]
    count_ge: tuple      # (T_g,) #{samples >= threshold}
    count_gt: tuple      # (T_g,) #{samples > threshold}, or an upper bound on it
    m: np.ndarray        # (G,) number of samples
    low: float
    high: float


def _rows(values, low: float, high: float) -> list[np.ndarray]:
    if isinstance(values, np.ndarray) or np.isscalar(values):
        arr = np.asarray(values, dtype=np.float64)
        rows = [arr] if arr.ndim == 1 else list(arr)
    else:
        rows = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    check(len(rows) >= 1 and all(r.ndim == 1 and r.size >= 1 for r in rows), "need at least one sample per input")
    for r in rows:
        check(bool(np.all(np.isfinite(r))) and bool(np.all((r >= low) & (r <= high))),
              f"measure values must be finite and lie in [{low:g}, {high:g}]")
    return rows


def _gap(m: int, num_thresholds: int) -> int:
    return -(-m // check_num_thresholds(num_thresholds))


def layers_from_samples(values, measure: str = "score", num_thresholds: int = NUM_THRESHOLDS) -> Layers:
    """Equal-count thresholds (every g-th sorted sample, g = ceil(m / num_thresholds)) with exact tail counts.
    values: (m,) for one input, (G, m), or a sequence of 1-D arrays (one per input)."""
    low, high = measure_range(measure)
    s, ge, gt, m = [], [], [], []
    for r in _rows(values, low, high):
        x = np.sort(r)
        t = x[::_gap(x.size, num_thresholds)]
        s.append(t)
        ge.append(x.size - np.searchsorted(x, t, side="left"))
        gt.append(x.size - np.searchsorted(x, t, side="right"))
        m.append(x.size)
    return Layers(tuple(s), tuple(ge), tuple(gt), np.array(m), low, high)


def histogram(values, measure: str = "score", bins: int = BINS) -> np.ndarray:
    """(G, bins) counts of each input's values on the fixed edges (values as for `layers_from_samples`)."""
    low, high = measure_range(measure)
    return np.stack([np.bincount(bin_index(r, measure, bins), minlength=bins) for r in _rows(values, low, high)])


def layers_from_histogram(counts, measure: str = "score", num_thresholds: int = NUM_THRESHOLDS) -> Layers:
    """Thresholds at bin lower edges, from (G, bins) or (bins,) counts on `histogram_edges(measure, bins)`:
    the edges of the bins holding every g-th order statistic (g = ceil(m / num_thresholds)), i.e. the
    sample thresholds of `layers_from_samples` snapped down to their bin's edge; tails are exact at edges."""
    counts = np.atleast_2d(np.asarray(counts))
    check(counts.ndim == 2 and np.issubdtype(counts.dtype, np.integer) and np.all(counts >= 0),
          "histogram counts must be nonnegative integers, shape (inputs, bins)")
    edges = histogram_edges(measure, counts.shape[1])
    s, ge, m = [], [], []
    for row in counts:
        total = int(row.sum())
        check(total >= 1, "every histogram needs at least one sample")
        cum = np.cumsum(row)
        g = _gap(total, num_thresholds)
        # bin k holds the 0-based order statistics cum[k] - row[k] .. cum[k] - 1; it holds a g-th one when the first
        # multiple of g from its start lies below cum[k] (O(bins), whatever m and num_thresholds)
        k = np.flatnonzero(-(-(cum - row) // g) * g < cum)
        s.append(edges[k])
        ge.append(total - (cum[k] - row[k]))                           # #{x >= e_k}: bins k and above
        m.append(total)
    return Layers(tuple(s), tuple(ge), tuple(ge), np.array(m), edges[0], edges[-1])


def _terms(layers: Layers, g: int, alpha: float, upper: bool, tv: float = 0.0):
    """Theorem 2 for input g as (base, widths, z): bound = base + sum widths * Phi(z -/+ R/sigma), zero-width
    and zero-mass layers dropped; each tail moved by tv (module doc)."""
    s, m = layers.thresholds[g], layers.m[g]
    if upper:
        widths = np.diff(np.append(s, layers.high))
        q = np.atleast_1d(tail_upper(layers.count_gt[g], m, alpha))     # >= P(h > s_j)
        q = np.minimum(q + tv, 1.0) if tv else q
        base = s[0]
    else:
        widths = np.diff(np.insert(s, 0, layers.low))
        q = np.atleast_1d(tail_lower(layers.count_ge[g], m, alpha))     # <= P(h >= s_j)
        q = np.maximum(q - tv, 0.0) if tv else q
        base = layers.low
    keep = (widths > 0) & (q > 0)
    return base, widths[keep], ndtri(q[keep])


def _radii(radius, sigma) -> tuple[np.ndarray, bool]:
    r = np.asarray(radius, dtype=np.float64)
    check(r.ndim <= 1 and np.all(r >= 0) and np.all(np.isfinite(r)), "radius must be a finite number >= 0 or a 1-D array")
    return np.atleast_1d(r) / _sigma(sigma), r.ndim == 0


def cdf_lower(layers: Layers, radius, sigma: float, alpha: float, tv: float = 0.0) -> np.ndarray:
    """001 Thm 2 lower bound on the expected measure within l2 distance `radius` (scalar: (G,), 1-D: (G, R)); tv: the
    sampler's total-variation distance (module doc)."""
    return _cdf_bound(layers, radius, sigma, alpha, upper=False, tv=tv)


def cdf_upper(layers: Layers, radius, sigma: float, alpha: float, tv: float = 0.0) -> np.ndarray:
    """001 Thm 2 upper bound on the expected measure within l2 distance `radius` (shapes as `cdf_lower`)."""
    return _cdf_bound(layers, radius, sigma, alpha, upper=True, tv=tv)


def _tv(tv) -> float:
    check(isinstance(tv, (int, float)) and 0 <= tv < 1, f"tv must lie in [0, 1), got {tv!r}")
    return float(tv)


def _cdf_bound(layers: Layers, radius, sigma: float, alpha: float, upper: bool, tv: float) -> np.ndarray:
    alpha, tv = check_alpha(alpha), _tv(tv)
    r, scalar = _radii(radius, sigma)
    shift = r if upper else -r                                 # 001 Thm 2: Phi(z + R/sigma) above, Phi(z - R/sigma) below
    out = np.empty((len(layers.m), r.size))
    for g in range(len(layers.m)):
        base, w, z = _terms(layers, g, alpha, upper=upper, tv=tv)
        out[g] = base + ndtr(z[None, :] + shift[:, None]) @ w  # 001 Thm 2, eq. (2)
    return out[:, 0] if scalar else out


def certified_top(layers: Layers, candidate, measure: str, sigma: float, alpha: float, tv: float = 0.0) -> np.ndarray:
    """(G,) the candidate A where the CDF lower bound at radius 0 certifies it as the smoothed soft classifier's top
    class at x (E[score_A] > 1/2, or E[margin_A] > 0), ABSTAIN elsewhere; tv as in `cdf_lower`."""
    # 001 Thm 2 at R = 0 bounds E[h_A(x + delta)] from the q_j of the one-sided DKW event that every radius of the
    # run already stands on (it holds for all thresholds at once), so this costs no extra alpha (ERRATA 001).
    # score: the scores sum to 1, so E[h_A] > 1/2 leaves every other class below 1/2; margin: E[h_A - max_{j != A}
    # h_j] > 0 gives E[h_A] > E[h_j] for every j != A.
    ok = cdf_lower(layers, 0.0, sigma, alpha, tv=tv) > TOP[measure]
    return np.where(ok, np.asarray(candidate, dtype=np.int64), ABSTAIN)


def _baseline_p(sums, m, alpha: float, measure: str, upper: bool, tv: float = 0.0):
    low, high = measure_range(measure)
    bound = (hoeffding_upper if upper else hoeffding_lower)(sums, m, alpha, low, high)
    p = np.atleast_1d((bound - low) / (high - low))
    if _tv(tv):                                                      # module doc: p -/+ tv
        p = np.clip(p + tv if upper else p - tv, 0.0, 1.0)
    return p, low, high


def baseline_lower(sums, m, radius, sigma: float, alpha: float, measure: str = "score", tv: float = 0.0) -> np.ndarray:
    """001 Thm 1 lower bound within distance `radius`, from each input's sum of the measure over m samples
    (Hoeffding lower bound at alpha, as in 001 §5.2). Shapes as `cdf_lower`; tv as there."""
    p, low, high = _baseline_p(sums, m, check_alpha(alpha), measure, upper=False, tv=tv)
    r, scalar = _radii(radius, sigma)
    out = low + (high - low) * ndtr(ndtri(p)[:, None] - r[None, :])     # 001 Thm 1, eq. (1)
    return out[:, 0] if scalar else out


def baseline_upper(sums, m, radius, sigma: float, alpha: float, measure: str = "score", tv: float = 0.0) -> np.ndarray:
    """001 Thm 1 upper bound within distance `radius` (Hoeffding upper bound at alpha)."""
    p, low, high = _baseline_p(sums, m, check_alpha(alpha), measure, upper=True, tv=tv)
    r, scalar = _radii(radius, sigma)
    out = low + (high - low) * ndtr(ndtri(p)[:, None] + r[None, :])     # 001 Thm 1, upper bound
    return out[:, 0] if scalar else out


def _levels(c, low: float, high: float) -> tuple[np.ndarray, bool]:
    c = np.asarray(c, dtype=np.float64)
    check(c.ndim <= 1 and np.all((c > low) & (c < high)), f"thresholds c must lie strictly inside ({low:g}, {high:g})")
    return np.atleast_1d(c), c.ndim == 0


def baseline_radius(sums, m, c, sigma: float, alpha: float, measure: str = "score", tv: float = 0.0) -> np.ndarray:
    """The largest R with the Thm 1 lower bound > c, in closed form: sigma (Phi^-1(p) - Phi^-1((c - a)/(b - a))),
    0 where that is <= 0. c: scalar -> (G,), 1-D -> (G, C); tv as in `cdf_lower`."""
    p, low, high = _baseline_p(sums, m, check_alpha(alpha), measure, upper=False, tv=tv)
    c, scalar = _levels(c, low, high)
    with np.errstate(divide="ignore"):
        r = _sigma(sigma) * (ndtri(p)[:, None] - ndtri((c - low) / (high - low))[None, :])   # Thm 1 solved for R
    out = np.where(r > 0, r, 0.0)
    return out[:, 0] if scalar else out


def cdf_radius(layers: Layers, c, sigma: float, alpha: float, tol: float = TOL, tv: float = 0.0) -> np.ndarray:
    """The largest R (to within `tol`, rounded down) with the Thm 2 lower bound > c; 0 where the bound at R = 0
    is <= c. c: scalar -> (G,), 1-D -> (G, C); tv as in `cdf_lower`."""
    alpha, sigma, tv = check_alpha(alpha), _sigma(sigma), _tv(tv)
    check(isinstance(tol, float) and tol > 0, f"tol must be a float > 0, got {tol!r}")
    c, scalar = _levels(c, layers.low, layers.high)
    zc = ndtri((c - layers.low) / (layers.high - layers.low))
    out = np.zeros((len(layers.m), c.size))
    for g in range(len(layers.m)):
        base, w, z = _terms(layers, g, alpha, upper=False, tv=tv)
        if z.size == 0:
            continue

        def bound(r):                                          # r: (C,) radii
            return base + ndtr(z[None, :] - r[:, None] / sigma) @ w

        ok = bound(np.zeros(c.size)) > c
        # bound(R) <= low + (b - a) Phi(max z - R/sigma), which is c at R = sigma (max z - Phi^-1(q_c))
        lo, hi = np.zeros(c.size), np.where(ok, sigma * np.maximum(z.max() - zc, 0.0), 0.0)
        for _ in range(max(1, math.ceil(math.log2(max(hi.max(), tol) / tol)))):
            mid = 0.5 * (lo + hi)
            up = bound(mid) > c
            lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
        out[g] = np.where(ok, lo, 0.0)
    return out[:, 0] if scalar else out
