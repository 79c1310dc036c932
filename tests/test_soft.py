"""Soft prediction certificates (smoothcert.certificates.soft): exact values against independent formulas, soundness on a
classifier whose smoothed scores are known in closed form and on multi-class score distributions with known
means, and negative controls."""
import math

import mpmath
import numpy as np
import pytest
from scipy import integrate, special, stats

from smoothcert import Gaussian, Laplace
from smoothcert.certificates import soft
from smoothcert.bounds import Betting
from smoothcert.certificates import ABSTAIN, Verdict
from smoothcert.errors import SmoothcertError
from soundness import assert_caught, assert_sound, plan

mpmath.mp.dps = 40


pytestmark = pytest.mark.usefixtures("one_thread")   # small tensor ops: see conftest.one_thread


def _mp_ninv(p):
    return mpmath.sqrt(2) * mpmath.erfinv(2 * mpmath.mpf(p) - 1)


def _scores(rng, beta, size):
    """Softmax-like score vectors: Dirichlet(beta) rows (nonnegative, summing to 1)."""
    return rng.dirichlet(beta, size=size)


def _stats(x):
    return x.sum(-2), (x * x).sum(-2)


# -- exact values ------------------------------------------------------------------------------------------

def _ref(x_sel, x, alpha, sigma, bound, mode):
    """Independent: A from the selection sums; per-class bounds from the raw samples in 40-digit arithmetic."""
    n = x.shape[0]
    c_a = int(np.argmax(x_sel.sum(0)))
    level = mpmath.mpf(alpha) / (1 if mode == "one-sided" else 2)

    def one(col, sign):
        xs = [mpmath.mpf(float(v)) for v in col]
        mean = mpmath.fsum(xs) / n
        if bound == "hoeffding":
            w = mpmath.sqrt(mpmath.log(1 / level) / (2 * n))
        else:
            var = mpmath.fsum((v - mean) ** 2 for v in xs) / (n - 1)
            ln = mpmath.log(2 / level)
            w = mpmath.sqrt(2 * var * ln / n) + 7 * ln / (3 * (n - 1))
        return min(max(mean + sign * w, 0), 1)

    p_a = one(x[:, c_a], -1)
    if mode == "one-sided":
        return c_a, p_a, None, (sigma * _mp_ninv(p_a) if p_a > 0.5 else 0)
    p_b = min(max(one(x[:, c], +1) for c in range(x.shape[1]) if c != c_a), 1 - p_a)
    return c_a, p_a, p_b, (sigma / 2 * (_mp_ninv(p_a) - _mp_ninv(p_b)) if p_a > p_b else 0)


@pytest.mark.parametrize("bound", ["hoeffding", "bernstein"])
@pytest.mark.parametrize("mode", ["margin", "one-sided"])
def test_soft_certificates_exact(bound, mode):
    rng = np.random.default_rng(1)
    betas = [(8, 1, 1, 0.5), (1, 1, 6, 2), (2, 2, 1.8, 1), (30, 0.2, 0.2, 0.2)]
    x_sel = np.stack([_scores(rng, b, 20) for b in betas])
    x = np.stack([_scores(rng, b, 150) for b in betas])
    sigma, alpha = 0.5, 0.01
    fn = soft.soft_hoeffding if bound == "hoeffding" else soft.soft_bernstein
    v = fn(x_sel.sum(1), *_stats(x), 150, Gaussian(sigma), alpha, mode=mode)
    for g in range(len(betas)):
        c_a, p_a, p_b, radius = _ref(x_sel[g], x[g], alpha, sigma, bound, mode)
        assert v.p_lower[g] == pytest.approx(float(p_a), abs=1e-10)
        if mode == "margin":
            assert v.p_upper[g] == pytest.approx(float(p_b), abs=1e-10)
        assert v.radius[g] == pytest.approx(float(radius), abs=1e-9)
        assert v.prediction[g] == (c_a if radius > 0 else ABSTAIN)
    assert np.sum(v.prediction != ABSTAIN) >= 2 and np.sum(v.prediction == ABSTAIN) >= 1


def test_lipschitz_radius_and_its_comparison_with_r2():
    rng = np.random.default_rng(2)
    betas = [(8, 1, 1), (20, 1, 3), (3, 2, 1)]
    x_sel = np.stack([_scores(rng, b, 20) for b in betas])
    x = np.stack([_scores(rng, b, 500) for b in betas])
    sigma = 0.25
    v1 = soft.soft_lipschitz(x_sel.sum(1), *_stats(x), 500, Gaussian(sigma), 0.001)
    v2 = soft.soft_bernstein(x_sel.sum(1), *_stats(x), 500, Gaussian(sigma), 0.001)
    for g in range(3):
        _, p_a, p_b, _ = _ref(x_sel[g], x[g], 0.001, sigma, "bernstein", "margin")
        m = max(p_a - p_b, 0)
        assert v1.radius[g] == pytest.approx(float(m * sigma * mpmath.sqrt(mpmath.pi / 2)), abs=1e-12)
    certified = v1.radius > 0
    assert certified.any() and np.all(v2.radius[certified] >= v1.radius[certified])          # R2 >= R1


def test_lipschitz_constant_is_the_exact_one_for_a_margin_of_range_two():
    """The smoothing of g = sign(x_0) (values in [-1, 1]) is 2 Phi(x_0 / sigma) - 1, whose slope at 0 is
    sqrt(2/pi)/sigma, in 40 digits: no smaller constant is valid for E_A - E_c, and soft_lipschitz uses this one
    (its docstring proves no larger slope is possible). R1 / R2 tends to 1 at a tie and stays below it."""
    for sigma in (0.25, 0.5, 1.0):
        slope = mpmath.diff(lambda t: 2 * mpmath.ncdf(t / sigma) - 1, 0)
        assert soft.LIPSCHITZ_MARGIN / sigma == pytest.approx(float(slope), rel=1e-14)
        assert float(slope) == pytest.approx(math.sqrt(2 / math.pi) / sigma, rel=1e-14)
    p_a, p_b = np.array([0.5 + 1e-6, 0.6, 0.9]), np.array([0.5 - 1e-6, 0.3, 0.05])
    r1 = (p_a - p_b) * 0.5 * math.sqrt(math.pi / 2)
    r2 = Gaussian(0.5).margin_radius(p_a, p_b)
    assert r1[0] == pytest.approx(r2[0], rel=1e-9) and np.all(r1[1:] < r2[1:])


def test_from_bounds_caps_the_runner_up_and_abstains():
    v = soft.from_bounds(np.array([2, 0, 1]), [0.7, 0.45, 0.6], [0.4, 0.5, 0.05], Gaussian(1.0))
    np.testing.assert_allclose(v.p_upper, [0.3, 0.5, 0.05])
    np.testing.assert_array_equal(v.prediction, [2, ABSTAIN, 1])
    assert v.radius[0] == pytest.approx(0.5 * (stats.norm.ppf(0.7) - stats.norm.ppf(0.3)))
    assert v.radius[1] == 0.0
    v = soft.from_bounds(np.array([1, 1]), [0.8, 0.5], np.nan, Gaussian(0.5), mode="one-sided")
    np.testing.assert_allclose(v.radius, [0.5 * stats.norm.ppf(0.8), 0.0])
    np.testing.assert_array_equal(v.prediction, [1, ABSTAIN])


def test_soft_betting_reads_the_accumulators():
    rng = np.random.default_rng(3)
    x_sel, x = _scores(rng, (9, 1, 1), (2, 20)), _scores(rng, (9, 1, 1), (2, 300))
    c_a = soft.choose(x_sel.sum(1))
    a, other = Betting(2, 300, 0.005), Betting(2, 300, 0.005)
    for s in range(0, 300, 100):
        batch = x[:, s:s + 100]
        a.update(batch[np.arange(2), :, c_a])
        masked = batch.copy()
        masked[np.arange(2), :, c_a] = -1
        other.update(masked.max(-1))
    v = soft.soft_betting(x_sel.sum(1), a, other, Gaussian(0.25), 0.01)
    np.testing.assert_allclose(v.p_lower, a.lower(0.005))
    np.testing.assert_allclose(v.p_upper, np.minimum(other.upper(0.005), 1 - a.lower(0.005)))
    np.testing.assert_allclose(v.radius, Gaussian(0.25).margin_radius(v.p_lower, v.p_upper))
    per_class = Betting(2 * 3, 300, 0.005)                      # row g * K + c: class c of input g
    per_class.update(x.transpose(0, 2, 1).reshape(6, 300))
    w = soft.soft_betting(x_sel.sum(1), a, per_class, Gaussian(0.25), 0.01)
    up = per_class.upper(0.005).reshape(2, 3)
    up[np.arange(2), c_a] = -np.inf
    np.testing.assert_allclose(w.p_upper, np.minimum(up.max(1), 1 - a.lower(0.005)))


@pytest.mark.parametrize("call", [
    lambda: soft.soft_hoeffding(np.ones((1, 3)), np.ones((1, 3)), np.ones((1, 3)), 3, Laplace(0.5), 0.1),
    lambda: soft.soft_hoeffding(np.ones((1, 3)), np.ones((1, 2)), np.ones((1, 2)), 3, Gaussian(0.5), 0.1),
    lambda: soft.soft_bernstein(np.ones((1, 3)), np.ones((1, 3)), np.ones((1, 3)), 3, Gaussian(0.5), 0.1, mode="x"),
    lambda: soft.soft_bernstein(np.ones((1, 3)), np.full((1, 3), 5.0), np.ones((1, 3)), 3, Gaussian(0.5), 0.1),
    lambda: soft.soft_hoeffding(np.ones((1, 3)), np.ones((1, 3)), np.ones((1, 3)), 3, Gaussian(0.5), 1.5),
])
def test_bad_input_raises_smoothcert_error(call):
    with pytest.raises(SmoothcertError):
        call()


# -- soundness: two classes with a closed-form smoothed score --------------------------------------------------

class Sigmoid:
    """Scores (1 - h, h), h = expit(k u.x), u a unit vector. At distance t > 0 along u the smoothed classifier
    predicts class 1, and since E[h(x + delta)] depends on u.x only and equals 1/2 exactly on u.x = 0 (expit is
    odd about 1/2 and the noise symmetric), the exact l2 radius of the soft prediction is t. A sample's score is
    expit(k (t + sigma Z)). Steep (k sigma >> 1): Salman et al.'s Lemma 2 is nearly tight."""

    def __init__(self, k, sigma):
        self.k, self.sigma = k, sigma

    def expected(self, t):
        f = lambda z: special.expit(self.k * (t + self.sigma * z)) * stats.norm.pdf(z)      # noqa: E731
        return integrate.quad(f, -12, 12, epsabs=1e-13, epsrel=1e-12, limit=200)[0]

    def scores(self, t, shape, rng):
        h = special.expit(self.k * (t + self.sigma * rng.standard_normal(shape)))
        return np.stack([1 - h, h], axis=-1)


def _run(certificate, t, seed, k=100.0, sigma=0.5, n0=20, n=200, alpha=0.1):
    model = Sigmoid(k, sigma)
    p = plan(alpha)
    rng = np.random.default_rng(seed)
    x_sel, x = model.scores(t, (p.reps, n0), rng), model.scores(t, (p.reps, n), rng)
    v = certificate(x_sel.sum(1), x, n, Gaussian(sigma), alpha)
    fails = int(np.sum((v.prediction != ABSTAIN) & ((v.prediction != 1) | (v.radius > t))))
    return fails, v, p


def _from_sums(fn, **kw):
    return lambda sel, x, n, noise, alpha: fn(sel, *_stats(x), n, noise, alpha, **kw)


def _betting(sel, x, n, noise, alpha, mode="margin"):
    c_a = soft.choose(sel)
    level = alpha if mode == "one-sided" else alpha / 2
    a, other = Betting(len(sel), n, level, grid=256), Betting(len(sel), n, level, grid=256)
    rows = np.arange(len(sel))
    for s in range(0, n, 50):
        batch = x[:, s:s + 50]
        a.update(batch[rows, :, c_a])
        masked = batch.copy()
        masked[rows, :, c_a] = -1
        other.update(masked.max(-1))
    return soft.soft_betting(sel, a, other, noise, alpha, mode=mode)


def _betting_per_class(sel, x, n, noise, alpha):
    G, K = sel.shape
    level = alpha / 2
    a, other = Betting(G, n, level, grid=256, sides="lower"), Betting(G * K, n, level, grid=256, sides="upper")
    c_a = soft.choose(sel)
    for s in range(0, n, 50):
        batch = x[:, s:s + 50]
        a.update(batch[np.arange(G), :, c_a])
        other.update(batch.transpose(0, 2, 1).reshape(G * K, -1))
    return soft.soft_betting(sel, a, other, noise, alpha)


CERTIFICATES = {
    "hoeffding": _from_sums(soft.soft_hoeffding),
    "bernstein": _from_sums(soft.soft_bernstein),
    "bernstein-one-sided": _from_sums(soft.soft_bernstein, mode="one-sided"),
    "lipschitz": _from_sums(soft.soft_lipschitz),
    "betting": _betting,
}


@pytest.mark.parametrize("name", list(CERTIFICATES))
@pytest.mark.parametrize("t", [0.25, 0.6])
def test_soft_certificates_sound(name, t):
    fails, v, p = _run(CERTIFICATES[name], t, seed=int(t * 100))
    assert_sound(fails, p)
    assert np.mean(v.prediction == 1) > 0.3                      # it certifies something


def _plug_in(sel, x, n, noise, alpha):
    """UNSOUND on purpose: the sample means in place of confidence bounds."""
    c_a = soft.choose(sel)
    means = x.mean(1)
    rows = np.arange(len(c_a))
    other = means.copy()
    other[rows, c_a] = -1
    return soft.from_bounds(c_a, means[rows, c_a], other.max(1), noise)


def _lipschitz_one_component(sel, x, n, noise, alpha):
    """UNSOUND on purpose: the margin treated as ONE [0, 1]-valued expected score with the tight constant
    1/(sigma sqrt(2 pi)), i.e. R = M sigma sqrt(2 pi) (twice R1)."""
    v = soft.soft_bernstein(sel, *_stats(x), n, noise, alpha)
    radius = np.where(v.radius > 0, (v.p_lower - v.p_upper) * noise.sigma * math.sqrt(2 * math.pi), 0.0)
    return Verdict(v.prediction, radius, v.p_lower, v.p_upper)


@pytest.mark.parametrize("control,t", [(_plug_in, 0.15), (_lipschitz_one_component, 0.15)])
def test_soft_negative_controls_are_caught(control, t):
    fails, _, p = _run(control, t, seed=7, n=1000)
    assert_caught(fails, p)


# -- soundness of the bounds with many classes -------------------------------------------------------------

BETA = np.array([5.0, 2.6, 2.4, 0.5])            # expected scores BETA / BETA.sum(): A = 0, runner-up 1


def _multiclass_failures(certificate, seed, n0=10, n=2000, alpha=0.1):
    """A certificate is wrong if it certifies a class other than A, or p_lower > E_A, or p_upper below the
    largest other expected score (its radius then rests on a false premise)."""
    mean = BETA / BETA.sum()
    p = plan(alpha)
    rng = np.random.default_rng(seed)
    x_sel, x = _scores(rng, BETA, (p.reps, n0)), _scores(rng, BETA, (p.reps, n))
    v = certificate(x_sel.sum(1), x, n, Gaussian(0.5), alpha)
    wrong = (v.prediction != 0) | (v.p_lower > mean[0]) | (v.p_upper < mean[1:].max())
    return int(np.sum((v.prediction != ABSTAIN) & wrong)), p


@pytest.mark.parametrize("name", ["hoeffding", "bernstein", "betting", "betting-per-class"])
def test_soft_bounds_sound_with_many_classes(name):
    certificate = _betting_per_class if name == "betting-per-class" else CERTIFICATES[name]
    fails, p = _multiclass_failures(certificate, seed=11, n=2000 if not name.startswith("betting") else 200)
    assert_sound(fails, p)


def test_negative_control_runner_up_from_the_selection_samples_only_is_caught():
    """UNSOUND on purpose: bound only the runner-up B picked on the selection samples. Classes 1 and 2 have
    expected scores 0.248 and 0.229; with 10 selection samples B is class 2 often, and its tight upper bound
    then falls below class 1's expected score."""
    def runner_up_only(sel, x, n, noise, alpha):
        v = soft.soft_bernstein(sel, *_stats(x), n, noise, alpha)
        rows = np.arange(len(sel))
        masked = sel.copy()
        masked[rows, soft.choose(sel)] = -np.inf
        b = masked.argmax(1)
        s, q = _stats(x)
        up = soft.bernstein_upper(s[rows, b], q[rows, b], n, alpha / 2)
        return soft.from_bounds(soft.choose(sel), v.p_lower, up, noise)
    fails, p = _multiclass_failures(runner_up_only, seed=12)
    assert_caught(fails, p)
