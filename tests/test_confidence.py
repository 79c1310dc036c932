"""Certified confidence (smoothcert.certificates.confidence, 001) and the DKW band (smoothcert.bounds.cdf): exact values
against independent loops in 40-digit arithmetic, soundness on a classifier whose smoothed expected score is
known in closed form, and negative controls."""
import math
import re

import mpmath
import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from smoothcert.certificates import confidence as cf
from smoothcert import measures
from smoothcert.bounds import cdf_band, dkw_epsilon, tail_lower, tail_upper
from smoothcert.errors import SmoothcertError
from soundness import assert_caught, assert_sound, plan

mpmath.mp.dps = 40


def _mp_ninv(p):
    return mpmath.sqrt(2) * mpmath.erfinv(2 * mpmath.mpf(p) - 1)


# -- DKW ---------------------------------------------------------------------------------------------------

def test_dkw_epsilon_values():
    assert dkw_epsilon(100, 0.05) == pytest.approx(math.sqrt(math.log(20) / 200), rel=1e-15)
    assert dkw_epsilon(100, 0.05, two_sided=True) == pytest.approx(math.sqrt(math.log(40) / 200), rel=1e-15)
    assert dkw_epsilon(100, 0.8) == dkw_epsilon(100, 0.5)      # Massart's one-sided bound needs alpha <= 1/2
    np.testing.assert_allclose(dkw_epsilon(np.array([10, 1000]), 0.01), np.sqrt(math.log(100) / np.array([20, 2000])))
    assert tail_lower([10, 3], 10, 0.1) == pytest.approx([1 - math.sqrt(math.log(10) / 20), 0.0])
    assert tail_upper([0, 10], 10, 0.1) == pytest.approx([math.sqrt(math.log(10) / 20), 1.0])
    lo, up = cdf_band([0.1, 0.2, 0.3, 0.4], [0.25], 0.1, two_sided=True)
    assert lo[0] == pytest.approx(max(0.5 - math.sqrt(math.log(20) / 8), 0)) and up[0] == pytest.approx(1.0)
    with pytest.raises(SmoothcertError):
        dkw_epsilon(0, 0.1)


def _sup_deviation(u):
    """For sorted U(0,1) samples: sup_x (F_m(x) - x) and sup_x (x - F_m(x)), exactly (at the order statistics)."""
    m = u.shape[1]
    i = np.arange(1, m + 1)
    return np.max(i / m - u, axis=1), np.max(u - (i - 1) / m, axis=1)


@pytest.mark.parametrize("m", [20, 300])
def test_dkw_one_sided_band_sound(m):
    """Continuous F is where DKW is tightest: each one-sided band fails with probability <= alpha."""
    p = plan(0.1)
    u = np.sort(np.random.default_rng(m).random((p.reps, m)), axis=1)
    above, below = _sup_deviation(u)
    eps = dkw_epsilon(m, 0.1)
    assert_sound(int(np.sum(above > eps)), p)
    assert_sound(int(np.sum(below > eps)), p)
    assert_sound(int(np.sum(np.maximum(above, below) > dkw_epsilon(m, 0.1, two_sided=True))), p)


def test_dkw_negative_control_one_sided_epsilon_for_a_two_sided_band_is_caught():
    """UNSOUND on purpose: 001's sqrt(ln(1/alpha)/2m) used for a band that must hold on both sides at once
    (ERRATA). It fails with probability about 2 alpha."""
    p = plan(0.1, bad=0.18)
    u = np.sort(np.random.default_rng(0).random((p.reps, 300)), axis=1)
    above, below = _sup_deviation(u)
    assert_caught(int(np.sum(np.maximum(above, below) > dkw_epsilon(300, 0.1))), p)


# -- exact values of the 001 bounds ---------------------------------------------------------------------------

def _ref_terms(x, alpha, a, num):
    """Independent 001 Thm 2 lower-bound terms: thresholds every ceil(m/num)-th sorted sample, tails by
    counting, as a list of (s_j - s_{j-1}, Phi^-1(q_j)) in 40-digit arithmetic."""
    xs = sorted(float(v) for v in x)
    m = len(xs)
    eps = mpmath.sqrt(mpmath.log(1 / mpmath.mpf(alpha)) / (2 * m))
    terms, prev = [], mpmath.mpf(a)
    for s in xs[::-(-m // num)]:
        q = sum(1 for v in xs if v >= s) / mpmath.mpf(m) - eps
        if q > 0:
            terms.append((s - prev, _mp_ninv(q)))
        prev = mpmath.mpf(s)
    return terms


def _ref_lower(terms, radius, sigma, a):
    return mpmath.mpf(a) + mpmath.fsum(w * mpmath.ncdf(z - mpmath.mpf(radius) / sigma) for w, z in terms)


def _ref_upper(thresholds, tail_counts, m, radius, sigma, alpha, b):
    """Independent 001 Thm 2 upper bound for given thresholds and counts of samples above them."""
    eps = mpmath.sqrt(mpmath.log(1 / mpmath.mpf(alpha)) / (2 * m))
    t = [mpmath.mpf(float(s)) for s in thresholds] + [mpmath.mpf(b)]
    total = t[0]
    for j, k in enumerate(tail_counts):
        q = min(k / mpmath.mpf(m) + eps, 1)
        z = _mp_ninv(q) if q < 1 else mpmath.inf
        total += (t[j + 1] - t[j]) * mpmath.ncdf(z + mpmath.mpf(radius) / sigma)
    return total


def _ref_radius(terms, c, sigma, a):
    lo, hi = mpmath.mpf(0), mpmath.mpf(10 * sigma)
    if _ref_lower(terms, 0, sigma, a) <= c:
        return 0.0
    for _ in range(45):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _ref_lower(terms, mid, sigma, a) > c else (lo, mid)
    return float(lo)


def _arrays():
    rng = np.random.default_rng(3)
    return {
        "beta": ("score", rng.beta(8, 2, 240)),
        "bimodal": ("score", np.where(rng.random(240) < 0.7, rng.beta(30, 2, 240), rng.beta(2, 8, 240))),
        "margin": ("margin", np.clip(2 * rng.beta(6, 2, 240) - 1 - 0.2 * rng.random(240), -1, 1)),
        "constant": ("score", np.full(240, 0.55)),
    }


@pytest.mark.parametrize("name", list(_arrays()))
@pytest.mark.parametrize("num", [10_000, 60])
def test_cdf_bounds_and_radius_exact(name, num):
    measure, x = _arrays()[name]
    a, b = measures.MEASURES[measure]
    sigma, alpha = 0.5, 0.05
    layers = cf.layers_from_samples(x, measure, num_thresholds=num)
    radii = np.array([0.0, 0.25, 1.0])
    terms = _ref_terms(x, alpha, a, num)
    got = cf.cdf_lower(layers, radii, sigma, alpha)[0]
    for r, g in zip(radii, got):
        assert g == pytest.approx(float(_ref_lower(terms, r, sigma, a)), abs=1e-12)
    xs = np.sort(x)
    t = xs[::-(-len(x) // num)]
    above = [int(np.sum(xs > s)) for s in t]
    up = cf.cdf_upper(layers, radii, sigma, alpha)[0]
    for r, g in zip(radii, up):
        assert g == pytest.approx(float(_ref_upper(t, above, len(x), r, sigma, alpha, b)), abs=1e-12)
    c = 0.5 * (a + b) + 0.1 * (b - a) if name != "constant" else 0.5
    ref = _ref_radius(terms, c, sigma, a)
    got_r = cf.cdf_radius(layers, c, sigma, alpha)[0]
    assert ref - 2e-9 <= got_r <= ref + 1e-12                 # within tol, rounded down
    assert got_r > 0


def test_authors_code_convention_when_there_are_no_ties():
    """001's code: thresholds = sorted[::gap], tail of the i-th = (T - i)/T. Without ties and with m a
    multiple of gap it is exactly our bound; we count ties exactly instead (never the position fraction)."""
    x = np.random.default_rng(5).beta(5, 2, 300)
    thresholds = np.sort(x)[::3]
    T, eps, sigma = len(thresholds), math.sqrt(math.log(1 / 0.01) / 600), 0.25
    for disp in (0.0, 0.5, 1.5):
        exp_bar, prev = 0.0, 0.0
        for i, s in enumerate(thresholds):
            prob = max((T - i) / T - eps, 0)
            exp_bar += (s - prev) * stats.norm.cdf(stats.norm.ppf(prob, scale=sigma), loc=disp, scale=sigma)
            prev = s
        assert cf.cdf_lower(cf.layers_from_samples(x, num_thresholds=100), disp, sigma, 0.01)[0] == \
            pytest.approx(exp_bar, abs=1e-12)


def test_baseline_exact_values():
    x = np.random.default_rng(2).beta(4, 2, 500)
    sigma, alpha = 0.25, 0.01
    e = mpmath.mpf(float(x.mean())) - mpmath.sqrt(mpmath.log(1 / mpmath.mpf(alpha)) / 1000)
    for r in (0.0, 0.1, 0.7):
        ref = mpmath.ncdf(_mp_ninv(e) - mpmath.mpf(r) / sigma)
        assert cf.baseline_lower(x.sum(), 500, r, sigma, alpha)[0] == pytest.approx(float(ref), abs=1e-12)
    for c in (0.3, 0.5):
        ref = sigma * (_mp_ninv(e) - _mp_ninv(c))
        assert cf.baseline_radius(x.sum(), 500, c, sigma, alpha)[0] == pytest.approx(float(ref), abs=1e-12)
    m = 2 * x - 1                                                # on [-1, 1]: p = (e - a)/(b - a)
    e = mpmath.mpf(float(m.mean())) - 2 * mpmath.sqrt(mpmath.log(1 / mpmath.mpf(alpha)) / 1000)
    ref = -1 + 2 * mpmath.ncdf(_mp_ninv((e + 1) / 2) - mpmath.mpf(0.3) / sigma)
    assert cf.baseline_lower(m.sum(), 500, 0.3, sigma, alpha, "margin")[0] == pytest.approx(float(ref), abs=1e-12)
    assert cf.baseline_radius(m.sum(), 500, 0.9, sigma, alpha, "margin")[0] == 0.0


def test_constant_score_gives_a_finite_radius_about_ten_times_the_baseline():
    """ERRATA 001: every sample 0.55, m = 10^5, alpha = 0.001, c = 1/2."""
    m, alpha, sigma = 100_000, 0.001, 0.25
    x = np.full(m, 0.55)
    eps = math.sqrt(math.log(1000) / (2 * m))
    expected = sigma * (stats.norm.ppf(1 - eps) - stats.norm.ppf(0.5 / 0.55))
    r = cf.cdf_radius(cf.layers_from_samples(x), 0.5, sigma, alpha)[0]
    r_hist = cf.cdf_radius(cf.layers_from_histogram(cf.histogram(x)), 0.5, sigma, alpha)[0]
    base = cf.baseline_radius(x.sum(), m, 0.5, sigma, alpha)[0]
    assert expected - 2e-9 <= r <= expected and np.isfinite(r)
    assert r_hist <= r and r - r_hist < 1e-3                    # 0.55 is not a bin edge: snapped down
    assert 9 < r / base < 12


# -- histograms -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("measure", ["score", "margin"])
def test_histogram_lower_bound_equals_samples_snapped_to_bin_edges(measure):
    a, b = measures.MEASURES[measure]
    x = a + (b - a) * np.random.default_rng(1).beta(9, 2, 3000)
    edges = cf.histogram_edges(measure, 256)
    snapped = edges[cf.bin_index(x, measure, 256)]
    assert np.all(snapped <= x) and np.all(x < edges[cf.bin_index(x, measure, 256) + 1])
    hist = cf.layers_from_histogram(cf.histogram(x, measure, 256), measure)
    ref = cf.layers_from_samples(snapped, measure)
    for r in (0.0, 0.3):
        assert cf.cdf_lower(hist, r, 0.5, 0.01)[0] == pytest.approx(cf.cdf_lower(ref, r, 0.5, 0.01)[0], abs=1e-12)
    # the upper bound counts every sample at its bin's upper edge
    counts = cf.histogram(x, measure, 256)[0]
    nonempty = np.flatnonzero(counts)
    above = [int(counts[k:].sum()) for k in nonempty]
    assert cf.cdf_upper(hist, 0.2, 0.5, 0.01)[0] == pytest.approx(
        float(_ref_upper(edges[nonempty], above, len(x), 0.2, 0.5, 0.01, b)), abs=1e-12)
    # with every threshold, the histogram never certifies more than the samples, and loses little
    c = a + 0.7 * (b - a)
    r_s = cf.cdf_radius(cf.layers_from_samples(x, measure), c, 0.5, 0.01)[0]
    r_h = cf.cdf_radius(hist, c, 0.5, 0.01)[0]
    assert r_h <= r_s + 1e-9 and r_s - r_h < 0.02


def test_histogram_thresholds_are_the_sample_thresholds_snapped_down():
    x = np.random.default_rng(4).beta(3, 1, 5000)
    edges = cf.histogram_edges("score", 4096)
    hist = cf.layers_from_histogram(cf.histogram(x), num_thresholds=100)
    samples = cf.layers_from_samples(x, num_thresholds=100)
    np.testing.assert_array_equal(hist.thresholds[0], np.unique(edges[cf.bin_index(samples.thresholds[0])]))


def test_torch_bin_index_matches_numpy():
    import torch
    x = np.concatenate([np.random.default_rng(0).random(1000), cf.histogram_edges("score", 64)])
    np.testing.assert_array_equal(cf.bin_index(torch.as_tensor(x), "score", 64).numpy(), cf.bin_index(x, "score", 64))


def test_more_thresholds_never_lower_the_bound():
    x = np.random.default_rng(8).beta(2, 2, 2000)
    bounds = [cf.cdf_lower(cf.layers_from_samples(x, num_thresholds=t), 0.4, 0.5, 0.01)[0] for t in (10, 100, 2000)]
    assert bounds[0] <= bounds[1] <= bounds[2]


@pytest.mark.parametrize("call", [
    lambda: cf.layers_from_samples(np.array([0.2, 1.2])),
    lambda: cf.layers_from_samples(np.array([0.2, np.nan])),
    lambda: cf.layers_from_samples(np.array([0.2]), "probability"),
    lambda: cf.cdf_radius(cf.layers_from_samples(np.array([0.2, 0.3])), 1.0, 0.5, 0.1),
    lambda: cf.cdf_radius(cf.layers_from_samples(np.array([0.2, 0.3])), 0.5, -1.0, 0.1),
    lambda: cf.cdf_lower(cf.layers_from_samples(np.array([0.2, 0.3])), -0.1, 0.5, 0.1),
    lambda: cf.layers_from_histogram(np.array([[1.5, 2.0]])),
    lambda: cf.baseline_radius(3.0, 2, 0.5, 0.5, 0.1),
])
def test_bad_input_raises_smoothcert_error(call):
    with pytest.raises(SmoothcertError):
        call()


# -- soundness on a classifier with a closed-form smoothed score ----------------------------------------------

class Sigmoid:
    """Two classes, score of class 1 = expit(k u.x) for a unit vector u; at distance t along u, under
    N(0, sigma^2 I) noise the score is expit(k (t + sigma Z)), Z ~ N(0, 1). Every function of u.x only, so the
    expected score at a shift of norm R is smallest along -u: E(t - R), a one-dimensional integral. Its score
    distribution is its own worst case in 001 Thm 2 (a monotone staircase along u), so the CDF bound is tight
    here up to the DKW band."""

    def __init__(self, k, sigma):
        self.k, self.sigma = k, sigma

    def expected(self, t):
        f = lambda z: special.expit(self.k * (t + self.sigma * z)) * stats.norm.pdf(z)    # noqa: E731
        return integrate.quad(f, -12, 12, epsabs=1e-13, epsrel=1e-12, limit=200)[0]

    def true_radius(self, t, level):
        """The largest R with E(t - R) >= level (the exact certified radius for threshold `level`)."""
        return t - optimize.brentq(lambda u: self.expected(u) - level, -20, 20, xtol=1e-14)

    def scores(self, t, shape, seed):
        return special.expit(self.k * (t + self.sigma * np.random.default_rng(seed).standard_normal(shape)))


CASES = [  # k, sigma, t, m, threshold on the score
    (6.0, 0.5, 0.3, 500, 0.55),
    (20.0, 0.25, 0.2, 300, 0.6),
]


def _radii(case, measure, seed, control=None):
    k, sigma, t, m, c = case
    model = Sigmoid(k, sigma)
    p = plan(0.1)
    x = model.scores(t, (p.reps, m), seed)
    level = c if measure == "score" else 2 * c - 1                # margin of a 2-class softmax: 2 h - 1
    values = x if measure == "score" else 2 * x - 1
    layers = cf.layers_from_samples(values, measure)
    if control is not None:
        return control(layers, values, level, sigma), model.true_radius(t, c), p
    cdf = cf.cdf_radius(layers, level, sigma, 0.1)
    base = cf.baseline_radius(values.sum(1), m, level, sigma, 0.1, measure)
    return (cdf, base), model.true_radius(t, c), p


@pytest.mark.parametrize("measure", ["score", "margin"])
@pytest.mark.parametrize("case", CASES)
def test_confidence_radii_sound(case, measure):
    (cdf, base), true, p = _radii(case, measure, seed=1)
    assert true > 0
    assert_sound(int(np.sum(cdf > true)), p)
    assert_sound(int(np.sum(base > true)), p)
    assert np.mean(cdf) > np.mean(base)                           # and the CDF certificate is the better one


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_confidence_bounds_at_a_radius_sound(measure):
    k, sigma, t, m, c = CASES[0]
    model = Sigmoid(k, sigma)
    p = plan(0.1)
    x = model.scores(t, (p.reps, m), seed=2)
    values, scale = (x, lambda e: e) if measure == "score" else (2 * x - 1, lambda e: 2 * e - 1)
    layers = cf.layers_from_samples(values, measure)
    for r in (0.0, 0.2):
        worst, best = scale(model.expected(t - r)), scale(model.expected(t + r))
        assert_sound(int(np.sum(cf.cdf_lower(layers, r, sigma, 0.1) > worst)), p)
        assert_sound(int(np.sum(cf.cdf_upper(layers, r, sigma, 0.1) < best)), p)
        assert_sound(int(np.sum(cf.baseline_lower(values.sum(1), m, r, sigma, 0.1, measure) > worst)), p)
        assert_sound(int(np.sum(cf.baseline_upper(values.sum(1), m, r, sigma, 0.1, measure) < best)), p)


def test_confidence_negative_control_no_band_is_caught(monkeypatch):
    """UNSOUND on purpose: Theorem 2 on the empirical CDF itself (no DKW band)."""
    monkeypatch.setattr("smoothcert.bounds.cdf.dkw_epsilon", lambda m, alpha, two_sided=False: 1e-12)
    cdf, true, p = _radii(CASES[0], "score", seed=3, control=lambda layers, v, c, s: cf.cdf_radius(layers, c, s, 0.1))
    assert_caught(int(np.sum(cdf > true)), p)


def test_confidence_negative_control_point_estimate_baseline_is_caught():
    """UNSOUND on purpose: Theorem 1 with the sample mean in place of a confidence bound."""
    def control(layers, values, level, sigma):
        p = (values.mean(1) - 0.0) / 1.0
        return np.maximum(sigma * (stats.norm.ppf(p) - stats.norm.ppf(level)), 0)
    k, sigma, t, m, c = (20.0, 0.25, 0.2, 300, 0.6)
    radius, true, p = _radii((k, sigma, t, m, c), "score", seed=4, control=control)
    assert_caught(int(np.sum(radius > true)), p)


# -- the thresholds of a run or a re-certification: one check for both ------------------------------------------

def test_check_thresholds_accepts_levels_inside_the_measures_range():
    assert cf.check_thresholds(["0.5", 0.8]) == [0.5, 0.8]
    assert cf.check_thresholds([-0.5, 0.0, 0.5], "margin") == [-0.5, 0.0, 0.5]
    assert cf.check_num_thresholds(3) == 3 and cf.check_num_thresholds(np.int64(2)) == 2


@pytest.mark.parametrize("levels,measure,message", [
    ([], "score", "at least one threshold"),
    ([0.5, 0.5], "score", "thresholds repeat: 0.5,0.5"),
    ([0.5, 0.50000001], "score", "thresholds repeat"),            # one column name, cdf@0.5, for both
    ([0.0], "score", "strictly inside (0, 1)"),
    ([float("nan")], "score", "strictly inside (0, 1)"),
    ([-0.5], "score", "strictly inside (0, 1) for the score measure"),
    ([1.0], "margin", "strictly inside (-1, 1) for the margin measure"),
    (["x"], "score", "thresholds must be numbers"),
    ([0.5], "probability", "unknown measure"),
])
def test_check_thresholds_refuses(levels, measure, message):
    with pytest.raises(SmoothcertError, match=re.escape(message)):
        cf.check_thresholds(levels, measure)


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "2", None])
def test_check_num_thresholds_refuses(value):
    with pytest.raises(SmoothcertError, match="num_thresholds must be an integer >= 1"):
        cf.check_num_thresholds(value)
