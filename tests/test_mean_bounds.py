"""Bounds on bounded means (smoothcert.bounds.mean): exact values against independent formulas, the betting
accumulator against a slow per-sample reference, soundness on distributions with known means, and negative
controls that the same harness catches."""
import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from smoothcert.bounds import Betting, bernstein_lower, bernstein_upper, hoeffding_lower, hoeffding_upper
from smoothcert.bounds.mean import centred_grid, probit_grid
from smoothcert.errors import SmoothcertError
from soundness import assert_caught, assert_sound, plan

mpmath.mp.dps = 40


pytestmark = pytest.mark.usefixtures("one_thread")   # small tensor ops: see conftest.one_thread


# -- exact values ------------------------------------------------------------------------------------------

def _mp_stats(x):
    """Mean and unbiased variance of the raw samples, in 40-digit arithmetic (no sums of squares)."""
    xs = [mpmath.mpf(float(v)) for v in x]
    n = len(xs)
    mean = mpmath.fsum(xs) / n
    var = mpmath.fsum((v - mean) ** 2 for v in xs) / (n - 1) if n > 1 else None
    return n, mean, var


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-1.0, 1.0), (2.0, 5.0)])
@pytest.mark.parametrize("n", [2, 7, 100, 2000])
def test_hoeffding_and_bernstein_exact_values(low, high, n):
    rng = np.random.default_rng(n)
    x = low + (high - low) * rng.beta(0.7, 2.0, size=n)
    alpha = 0.013
    s, q = x.sum(), (x * x).sum()
    n_, mean, var = _mp_stats(x)
    w = mpmath.mpf(high - low)
    h = w * mpmath.sqrt(mpmath.log(1 / mpmath.mpf(alpha)) / (2 * n))
    ln2 = mpmath.log(2 / mpmath.mpf(alpha))
    eb = mpmath.sqrt(2 * var * ln2 / n) + 7 * w * ln2 / (3 * (n - 1))      # Maurer & Pontil 2009, Thm 4
    assert hoeffding_lower(s, n, alpha, low, high) == pytest.approx(float(max(mean - h, low)), abs=1e-12)
    assert hoeffding_upper(s, n, alpha, low, high) == pytest.approx(float(min(mean + h, high)), abs=1e-12)
    assert bernstein_lower(s, q, n, alpha, low, high) == pytest.approx(float(max(mean - eb, low)), abs=1e-10)
    assert bernstein_upper(s, q, n, alpha, low, high) == pytest.approx(float(min(mean + eb, high)), abs=1e-10)


def test_bounds_vectorise_over_inputs_and_classes():
    rng = np.random.default_rng(0)
    x = rng.random((3, 50, 4))                 # inputs x samples x classes
    s, q, n = x.sum(1), (x * x).sum(1), np.array([50, 50, 50])[:, None]
    lo = bernstein_lower(s, q, n, 0.05)
    assert lo.shape == (3, 4)
    for i in range(3):
        for k in range(4):
            assert lo[i, k] == bernstein_lower(s[i, k], q[i, k], 50, 0.05)
            assert hoeffding_upper(s, n, 0.05)[i, k] == hoeffding_upper(s[i, k], 50, 0.05)


def test_bernstein_trivial_with_one_sample_and_clipped_to_range():
    assert bernstein_lower(0.7, 0.49, 1, 0.05) == 0.0 and bernstein_upper(0.7, 0.49, 1, 0.05) == 1.0
    assert bernstein_lower(10.0, 10.0, 10, 0.05) < 1.0          # all ones: strictly below 1, never above
    assert bernstein_upper(0.0, 0.0, 10, 0.05) > 0.0


@pytest.mark.parametrize("call", [
    lambda: hoeffding_lower(0.5, 1, 0.0),
    lambda: hoeffding_lower(0.5, 0, 0.05),
    lambda: hoeffding_lower(3.0, 2, 0.05),                      # a mean above the range
    lambda: bernstein_lower(1.0, 5.0, 2, 0.05),                 # squares inconsistent with [0, 1]
    lambda: hoeffding_lower(np.nan, 2, 0.05),
    lambda: hoeffding_lower(0.5, 1, 0.05, low=1.0, high=0.0),
])
def test_bad_input_raises_smoothcert_error(call):
    with pytest.raises(SmoothcertError):
        call()


# -- soundness ---------------------------------------------------------------------------------------------

def _bimodal(rng, size):
    """Half near 0.1, half near 0.85: mean 0.5 * 0.1 + 0.5 * 0.85 exactly."""
    left = rng.random(size) < 0.5
    return np.where(left, 0.2 * rng.beta(2, 2, size), 0.7 + 0.3 * rng.beta(2, 2, size))


DISTRIBUTIONS = {
    "beta": (lambda rng, size: rng.beta(2, 5, size), 2 / 7),
    "bernoulli": (lambda rng, size: (rng.random(size) < 0.03).astype(float), 0.03),
    "bimodal": (_bimodal, 0.5 * 0.1 + 0.5 * 0.85),
}


def _failures(bound, dist, n, alpha, seed=0):
    draw, mu = DISTRIBUTIONS[dist]
    p = plan(alpha)
    x = draw(np.random.default_rng(seed), (p.reps, n))
    return bound(x, alpha, mu), p


def _lower_fails(fn):
    return lambda x, alpha, mu: int(np.sum(fn(x, alpha) > mu))


def _upper_fails(fn):
    return lambda x, alpha, mu: int(np.sum(fn(x, alpha) < mu))


SOUND = {
    "hoeffding_lower": _lower_fails(lambda x, a: hoeffding_lower(x.sum(1), x.shape[1], a)),
    "hoeffding_upper": _upper_fails(lambda x, a: hoeffding_upper(x.sum(1), x.shape[1], a)),
    "bernstein_lower": _lower_fails(lambda x, a: bernstein_lower(x.sum(1), (x * x).sum(1), x.shape[1], a)),
    "bernstein_upper": _upper_fails(lambda x, a: bernstein_upper(x.sum(1), (x * x).sum(1), x.shape[1], a)),
}


@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
@pytest.mark.parametrize("name", list(SOUND))
@pytest.mark.parametrize("n", [20, 300])
def test_mean_bounds_sound(name, dist, n):
    fails, p = _failures(SOUND[name], dist, n, 0.1, seed=n)
    assert_sound(fails, p)


def _normal_upper(x, alpha):
    """UNSOUND on purpose: the normal-approximation bound mean + z s / sqrt(n)."""
    return x.mean(1) + stats.norm.isf(alpha) * x.std(1, ddof=1) / math.sqrt(x.shape[1])


def _bernstein_no_range_term(x, alpha):
    """UNSOUND on purpose: empirical Bernstein without its 7 (b - a) ln / 3(n - 1) term."""
    n = x.shape[1]
    return x.mean(1) + np.sqrt(2 * x.var(1, ddof=1) * math.log(2 / alpha) / n)


def _hoeffding_unit_width_on_margins(x, alpha):
    """UNSOUND on purpose: Hoeffding with the [0, 1] width applied to values in [-1, 1] (margins)."""
    return hoeffding_upper(x.sum(1), x.shape[1], alpha, -1.0, 1.0) - math.sqrt(math.log(1 / alpha) / (2 * x.shape[1]))


@pytest.mark.parametrize("control", [_normal_upper, _bernstein_no_range_term])
def test_negative_controls_on_skewed_scores_are_caught(control):
    """Scores of a rarely-chosen class (Bernoulli(0.03), n = 20): all zero with probability 0.54."""
    fails, p = _failures(_upper_fails(control), "bernoulli", 20, 0.1)
    assert_caught(fails, p)


def test_negative_control_forgotten_range_is_caught():
    p = plan(0.1)
    x = np.where(np.random.default_rng(3).random((p.reps, 50)) < 0.5, -1.0, 1.0)     # margins, mean 0
    assert_caught(int(np.sum(_hoeffding_unit_width_on_margins(x, 0.1) < 0.0)), p)


# -- betting -----------------------------------------------------------------------------------------------

def _reference_log_capital(x, batches, n, alpha, grid, c=0.5):
    """Slow, per sample: the running maximum over batch ends of log K+(m) and log K-(m) at each m of the grid,
    with each batch's bet computed from the earlier samples by plain loops."""
    best_p = [0.0] * len(grid)
    best_m = [0.0] * len(grid)
    cur_p = [0.0] * len(grid)
    cur_m = [0.0] * len(grid)
    seen = []
    for batch in np.split(np.asarray(x), np.cumsum(batches)[:-1]):
        t = len(seen)
        mean = sum(seen) / t if t else 0.0
        var = (0.25 + sum((v - mean) ** 2 for v in seen)) / (t + 1)
        lam = math.sqrt(2 * math.log(1 / alpha) / (n * var))
        for j, m in enumerate(grid):
            lp = min(lam, c / m) if m > 0 else lam
            lm = min(lam, c / (1 - m)) if m < 1 else lam
            for v in batch:
                cur_p[j] += math.log(1 + lp * (v - m))
                cur_m[j] += math.log(1 - lm * (v - m))
            best_p[j] = max(best_p[j], cur_p[j])
            best_m[j] = max(best_m[j], cur_m[j])
        seen.extend(batch.tolist())
    return np.array(best_p), np.array(best_m)


@pytest.mark.parametrize("owner_layout", ["rows", "interleaved", "one batch in blocks"])
def test_betting_matches_per_sample_reference(owner_layout):
    rng = np.random.default_rng(7)
    n, alpha, grid = 24, 0.1, probit_grid(41)
    x = rng.beta(2, 3, size=(3, n))
    bt = Betting(3, n, alpha, grid=grid, block=8)
    if owner_layout == "one batch in blocks":                   # one update, bets refreshed every 8 values
        order = rng.permutation(3 * n)
        values, owner = x.reshape(-1)[order], np.repeat(np.arange(3), n)[order]
        x = np.stack([values[owner == r] for r in range(3)])     # each row's values in arrival order
        bt.update(values, owner)
    for s in range(0, n, 8) if owner_layout != "one batch in blocks" else []:   # three batches of 8 per row
        if owner_layout == "rows":
            bt.update(x[:, s:s + 8])
        else:                                                    # the engine's layout: owners mixed in a batch
            order = rng.permutation(24)
            bt.update(x[:, s:s + 8].reshape(-1)[order], np.repeat(np.arange(3), 8)[order])
    for r in range(3):
        ref_p, ref_m = _reference_log_capital(x[r], [8, 8, 8], n, alpha, grid)
        np.testing.assert_allclose(bt.best_plus[r].numpy(), ref_p, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bt.best_minus[r].numpy(), ref_m, rtol=1e-10, atol=1e-12)
        for a in (0.1, 0.3):
            rejected = ref_p >= math.log(1 / a)
            k = int(np.cumprod(rejected).sum())
            assert bt.lower(a)[r] == (grid[k - 1] if k else 0.0)
            rejected = (ref_m >= math.log(1 / a))[::-1]
            k = int(np.cumprod(rejected).sum())
            assert bt.upper(a)[r] == (grid[len(grid) - k] if k else 1.0)


def test_betting_block_schedule_matches_reference():
    """One update of 600 values: 16 blocks of 4, then 16 blocks per doubling (boundaries computed here as
    ceil(64 * 2^(k/16))), with the bets refreshed and the running maximum taken at every boundary."""
    x = np.random.default_rng(3).beta(3, 2, size=600)
    grid = probit_grid(11)
    bt = Betting(1, 600, 0.05, grid=grid, block=4)
    bt.update(x[None, :])
    bounds = [4 * k for k in range(16)] + [math.ceil(64 * 2 ** (k / 16)) for k in range(200)]
    bounds = sorted(set(b for b in bounds if b < 600)) + [600]
    ref_p, ref_m = _reference_log_capital(x, np.diff(bounds), 600, 0.05, grid)
    np.testing.assert_allclose(bt.best_plus[0].numpy(), ref_p, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(bt.best_minus[0].numpy(), ref_m, rtol=1e-10, atol=1e-10)
    one = Betting(1, 600, 0.05, grid=grid, block=4, sides="lower")
    one.update(x[None, :])
    assert one.lower(0.05)[0] == bt.lower(0.05)[0]
    with pytest.raises(SmoothcertError):
        one.upper(0.05)


def test_betting_grid_point_is_below_the_continuous_bound_and_within_one_step():
    """The exact lower bound L* = sup{m : max_t K+_t(m) >= 1/alpha} (bisection on the reference capital):
    the grid answer is <= L* and the next grid point is > L* (it loses at most one step)."""
    rng = np.random.default_rng(11)
    n, alpha, grid = 40, 0.05, probit_grid(64)
    x = rng.beta(5, 2, size=n)
    bt = Betting(1, n, alpha, grid=grid)
    for s in range(0, n, 10):
        bt.update(x[None, s:s + 10])

    def rejected(m):
        return _reference_log_capital(x, [10] * 4, n, alpha, [m])[0][0] >= math.log(1 / alpha)

    lo, hi = 0.0, float(x.mean())
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejected(mid) else (lo, mid)
    got = bt.lower(alpha)[0]
    assert got <= lo
    assert grid[np.searchsorted(grid, got, side="right")] > lo


def test_betting_per_row_grids_and_range():
    rng = np.random.default_rng(1)
    x = -1 + 2 * rng.beta(6, 2, size=(2, 400))                   # margins in [-1, 1], mean 0.5
    guesses = np.array([0.74, 0.76])                               # on the [0, 1] scale
    bt = Betting(2, 400, 0.05, grid=centred_grid(guesses), low=-1.0, high=1.0)
    shared = Betting(2, 400, 0.05, grid=1024, low=-1.0, high=1.0)
    for s in range(0, 400, 100):
        bt.update(x[:, s:s + 100])
        shared.update(x[:, s:s + 100])
    assert np.all(bt.lower(0.05) < x.mean(1)) and np.all(bt.upper(0.05) > x.mean(1))
    assert np.all(np.abs(bt.lower(0.05) - shared.lower(0.05)) < 0.02)


def test_betting_tighter_than_bernstein_at_small_n():
    rng = np.random.default_rng(2)
    x = rng.beta(20, 2, size=(50, 100))
    bt = Betting(50, 100, 0.01)
    for s in range(0, 100, 10):
        bt.update(x[:, s:s + 10])
    eb = bernstein_lower(x.sum(1), (x * x).sum(1), 100, 0.01)
    assert np.mean(bt.lower(0.01) > eb) > 0.9


def test_betting_rejects_bad_values():
    bt = Betting(2, 10, 0.05)
    with pytest.raises(SmoothcertError):
        bt.update(np.array([[0.5, 1.5], [0.1, 0.2]]))
    with pytest.raises(SmoothcertError):
        bt.update(np.array([0.5]), np.array([2]))
    with pytest.raises(SmoothcertError):
        Betting(2, 10, 0.05, grid=np.array([0.5, 0.2]))


def _betting_failures(dist, n, batch, alpha, seed, control=None):
    draw, mu = DISTRIBUTIONS[dist]
    p = plan(alpha)
    x = draw(np.random.default_rng(seed), (p.reps, n))
    bt = Betting(p.reps, n, alpha, grid=256)
    for s in range(0, n, batch):
        if control is not None:
            control(bt, x[:, s:s + batch], mu)
        bt.update(x[:, s:s + batch])
    return int(np.sum(bt.lower(alpha) > mu)), int(np.sum(bt.upper(alpha) < mu)), p


@pytest.mark.parametrize("dist,n,batch", [("beta", 60, 15), ("bernoulli", 60, 15), ("bimodal", 60, 15),
                                          ("bernoulli", 400, 50)])
def test_betting_sound(dist, n, batch):
    low_fails, up_fails, p = _betting_failures(dist, n, batch, 0.1, seed=n)
    assert_sound(low_fails, p)
    assert_sound(up_fails, p)


def test_betting_sound_on_grids_centred_by_independent_selection_samples():
    draw, mu = DISTRIBUTIONS["bimodal"]
    p = plan(0.1)
    rng = np.random.default_rng(4)
    guess = draw(rng, (p.reps, 10)).mean(1)                      # a "selection stage" of 10 samples
    x = draw(rng, (p.reps, 200))
    bt = Betting(p.reps, 200, 0.1, grid=centred_grid(guess, points=256, coarse=32))
    for s in range(0, 200, 40):
        bt.update(x[:, s:s + 40])
    assert_sound(int(np.sum(bt.lower(0.1) > mu)), p)
    assert_sound(int(np.sum(bt.upper(0.1) < mu)), p)


def test_betting_negative_control_peeking_is_caught():
    """UNSOUND on purpose: a bettor that looks at each batch first and skips the bets it would lose (bets that
    are not predictable). Its capital at the true mean only grows."""
    draw, mu = DISTRIBUTIONS["beta"]
    p = plan(0.1)
    x = torch.as_tensor(draw(np.random.default_rng(9), (p.reps, 60)))
    bt = Betting(p.reps, 60, 0.1, grid=256)
    grid = bt.grid[0]
    log_k = torch.zeros((p.reps, len(grid)), dtype=torch.float64)
    best = torch.zeros_like(log_k)
    for s in range(0, 60, 2):
        lam = torch.minimum(bt.bets()[:, None], 0.5 / grid)             # the same predictable bets ...
        gain = torch.log1p(lam[:, None, :] * (x[:, s:s + 2, None] - grid)).sum(1)
        log_k += gain.clamp(min=0)                                       # ... taken only where they win
        best = torch.maximum(best, log_k)
        bt.update(x[:, s:s + 2])
    k = np.cumprod((best >= math.log(10)).numpy(), axis=1).sum(1)
    lower = np.where(k > 0, grid.numpy()[np.maximum(k - 1, 0)], 0.0)
    assert_caught(int(np.sum(lower > mu)), p)
