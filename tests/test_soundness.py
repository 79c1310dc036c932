"""Soundness through the whole engine: on the threshold classifier, whose smoothed probabilities and robust radius
are known exactly, CERTIFY overstates the radius (or certifies a wrong class) with probability at most alpha and
PREDICT returns a wrong class with probability at most alpha / 2 (two classes). Every test is sized by
tests/soundness.py, and next to each sound case runs its realistic unsound variant (a negative control), through the
same harness and plan, which must be caught.

Two classes make every failure probability a binomial sum: `cohen_failure_rate` and `predict_failure_rate` compute
them exactly (with scipy's beta and binomial distributions, independently of smoothcert) and size the plans.
"""
import numpy as np
import pytest
import torch
from scipy import stats

from conftest import Threshold
from smoothcert import Gaussian, Laplace, Smooth
from smoothcert import certificates as C
from smoothcert.certificates import ABSTAIN, Verdict
from soundness import assert_caught, assert_sound, plan
from unsound import bounds_at_twice_alpha, predict_at_twice_alpha, selection_reused


# -- exact failure rates on two classes (class 1 is the top class, P(class 1) = p_a) --------------------------
def _cp_lower(k, n, alpha):
    """Clopper-Pearson lower bound, as the alpha-quantile of Beta(k, n - k + 1) (0 at k = 0)."""
    k = np.asarray(k)
    return np.where(k > 0, stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)


def cohen_failure_rate(p_a, n0, n, alpha, reuse=False):
    """P(Cohen's certificate fails) on two classes: it certifies class 1 with a lower bound above p_a, or certifies
    class 0 at all (a bound >= 1/2 > 1 - p_a). The selection picks class 1 iff it wins more than half of the n0
    votes (ties go to class 0); with reuse=True the estimation counts pick the class instead."""
    k = np.arange(n + 1)                                      # votes for class 1 among the n
    w = stats.binom.pmf(k, n, p_a)
    fail_1, fail_0 = _cp_lower(k, n, alpha) > p_a, _cp_lower(n - k, n, alpha) >= 0.5
    if reuse:
        return float(w[(k > n - k) & fail_1].sum() + w[(k <= n - k) & fail_0].sum())
    picks_1 = stats.binom.sf(n0 // 2, n0, p_a)
    return float(picks_1 * w[fail_1].sum() + (1 - picks_1) * w[fail_0].sum())


def predict_failure_rate(p_a, n, alpha):
    """P(PREDICT returns class 0) on two classes: class 0 has more votes and the two-sided binomial test of the top two
    counts, min(1, 2 P(Bin(n, 1/2) >= x)), rejects at alpha."""
    x = np.arange(n + 1)                                      # votes for class 0
    pvalue = np.minimum(1.0, 2 * stats.binom.sf(x - 1, n, 0.5))
    return float(stats.binom.pmf(x, n, 1 - p_a)[(2 * x > n) & (pvalue <= alpha)].sum())


# -- the harness --------------------------------------------------------------------------------------------
def threshold_failures(p_a, n0, n, alpha, p, certificate="cohen", noise=None, seed=0):
    """CERTIFY the threshold classifier p.reps times, each on its own streams, at the x where P(class 1) = p_a, and
    count the wrong certificates: a certified class other than 1, a radius beyond the exact robust radius (the
    distance to the boundary, reached by both noises' radius formulas), or a reported bound beyond the truth."""
    noise = noise or Gaussian(0.5)
    m = noise.sigma * stats.norm.ppf(p_a) if noise.name == "gaussian" else -noise.lam * np.log(2 * (1 - p_a))
    xs = torch.full((p.reps, 1), float(m), dtype=torch.float64)
    fails = 0
    for c in Smooth(Threshold(), noise).certify_many(xs, n0, n, alpha, 20_000, seed=seed, certificate=certificate):
        if c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > m * (1 + 1e-12) or c.p_lower > p_a
                                        or c.p_upper < 1 - p_a):
            fails += 1
    return fails


# -- CERTIFY (Cohen) --------------------------------------------------------------------------------------------
# (p_a, n0, n, alpha)
NEAR_TIE = (0.5002, 10, 500, 0.05)                     # selection ~ a coin flip; each bound nearly exact here
ALL_AGREE = (0.1 ** (1 / 100) * (1 - 1e-4), 10, 100, 0.05)   # just below (2 alpha)^(1/n): all n votes agree w.p. ~2 alpha


def _rate_at_twice_alpha(p_a, n0, n, alpha):
    return cohen_failure_rate(p_a, n0, n, 2 * alpha)


def _rate_reused(p_a, n0, n, alpha):
    return cohen_failure_rate(p_a, n0, n, alpha, reuse=True)


# The unsound variants, each on the case that exposes it, with its exact failure rate. At NEAR_TIE: sound 0.0487,
# bounds at 2 alpha 0.0969, selection reused 0.0979; at ALL_AGREE: sound < 1e-70, bounds at 2 alpha 0.0990.
CONTROLS = {"bounds at 2 alpha, near tie": (NEAR_TIE, bounds_at_twice_alpha, _rate_at_twice_alpha),
            "bounds at 2 alpha, all agree": (ALL_AGREE, bounds_at_twice_alpha, _rate_at_twice_alpha),
            "selection reused, near tie": (NEAR_TIE, selection_reused, _rate_reused)}
# case -> repetitions: None takes the smallest plan that also catches the case's controls at their exact rates;
# the cases with a number kept their size when they moved to plan(), which only tightened their limits
COHEN_CASES = {NEAR_TIE: None, ALL_AGREE: None, (0.9, 10, 100, 0.05): 4000, (0.99, 10, 1000, 0.01): None,
               (0.6, 10, 1000, 0.05): 4000}


def _cohen_plan(case, reps=None):
    rates = [rate(*case) for c, _, rate in CONTROLS.values() if c == case]
    return plan(case[3], min(rates, default=2 * case[3]), reps)


@pytest.mark.parametrize("case", COHEN_CASES, ids=lambda c: f"pA={c[0]:.4g}-n={c[2]}-alpha={c[3]}")
def test_cohen_is_sound_on_the_threshold_classifier(case):
    p = _cohen_plan(case, COHEN_CASES[case])
    assert_sound(threshold_failures(*case, p), p)


@pytest.mark.parametrize("control", CONTROLS)
def test_sound_harness_catches_unsound_cohen_variants(control, monkeypatch):
    case, unsound, _ = CONTROLS[control]
    p = _cohen_plan(case, COHEN_CASES[case])
    unsound(monkeypatch)
    assert_caught(threshold_failures(*case, p), p)


@pytest.mark.slow
@pytest.mark.parametrize("p_a", [0.51, 0.75, 0.95, 0.999])
def test_cohen_is_sound_on_the_threshold_classifier_many_repetitions(p_a):
    alpha = 0.05
    p = plan(alpha, reps=40_000)
    fails = threshold_failures(p_a, 20, 200, alpha, p, noise=Gaussian(0.25), seed=11)
    assert_sound(fails, p)
    # Clopper-Pearson is conservative but not absurdly so: at pA = 0.95 with n = 200 it fails often enough
    # that a bound which never fails (e.g. one that always abstains) would be caught.
    if p_a == 0.95:
        assert fails > 0.2 * alpha * p.reps


def _point_estimate(counts_selection, counts, noise, alpha, norm="l2"):
    """UNSOUND on purpose: the radius of the point estimate of pA."""
    c = np.argmax(counts_selection, axis=1)
    p = counts[np.arange(len(c)), c] / counts.sum(axis=1)
    ok = p > 0.5
    return Verdict(np.where(ok, c, ABSTAIN), np.where(ok, noise.radius(np.minimum(p, 1 - 1e-12)), 0.0), p, p * np.nan)


def test_sound_harness_catches_the_point_estimate(monkeypatch):
    monkeypatch.setitem(C.CERTIFICATES, "point", C.Spec("point", _point_estimate, ("gaussian",), {"gaussian": "l2"},
                                                         "unsound"))
    p = plan(0.05, reps=2000)
    assert_caught(threshold_failures(0.9, 10, 100, 0.05, p, certificate="point"), p)


# -- CERTIFY under Laplace noise (teng-binary: Teng et al.'s radius is the exact l1 radius of the threshold) --------
def test_teng_binary_is_sound_on_the_laplace_threshold_classifier_near_a_tie():
    p = _cohen_plan(NEAR_TIE)          # the same counts as Cohen's at NEAR_TIE, so the same exact rates
    assert_sound(threshold_failures(*NEAR_TIE, p, certificate="teng-binary", noise=Laplace(0.5), seed=5), p)


def test_sound_harness_catches_teng_binary_at_twice_alpha(monkeypatch):
    p = _cohen_plan(NEAR_TIE)
    bounds_at_twice_alpha(monkeypatch)
    assert_caught(threshold_failures(*NEAR_TIE, p, certificate="teng-binary", noise=Laplace(0.5), seed=5), p)


# -- PREDICT ------------------------------------------------------------------------------------------------------
# With two classes PREDICT errs only when the losing class has more votes and one tail of the symmetric two-sided
# test is <= alpha / 2, so its error rate is at most alpha / 2 (Cohen et al. 2019, Thm 2 states alpha): the plan
# holds it to alpha / 2, which is what makes a test at 2 alpha (error rate up to alpha) catchable.
# (p_a, n, alpha) -> repetitions, as for COHEN_CASES. Exact rates at the near tie: sound 0.0485 (alpha / 2 = 0.05),
# testing at 2 alpha 0.0965.
PREDICT_NEAR_TIE = (0.5001, 500, 0.1)
PREDICT_CASES = {PREDICT_NEAR_TIE: None, (0.55, 1000, 0.05): 3000, (0.6, 200, 0.05): 3000}


def _predict_plan(case, reps=None):
    p_a, n, alpha = case
    return plan(alpha / 2, predict_failure_rate(p_a, n, 2 * alpha) if case == PREDICT_NEAR_TIE else alpha, reps)


def predict_failures(p_a, n, alpha, p, seed=4):
    xs = torch.full((p.reps, 1), stats.norm.ppf(p_a), dtype=torch.float64)        # sigma = 1
    return sum(r.prediction == 0 for r in Smooth(Threshold(), Gaussian(1.0)).predict_many(xs, n, alpha, 20_000,
                                                                                            seed=seed))


@pytest.mark.parametrize("case", PREDICT_CASES, ids=lambda c: f"pA={c[0]}-n={c[1]}")
def test_predict_is_sound_on_the_threshold_classifier(case):
    p = _predict_plan(case, PREDICT_CASES[case])
    assert_sound(predict_failures(*case, p), p)


def test_sound_harness_catches_predict_testing_at_twice_alpha(monkeypatch):
    p = _predict_plan(PREDICT_NEAR_TIE)
    predict_at_twice_alpha(monkeypatch)
    assert_caught(predict_failures(*PREDICT_NEAR_TIE, p), p)
