"""Every hard-vote certificate: exact values against independent formulas, and soundness on ground truth."""
import functools
import math
from dataclasses import dataclass

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import stats

import smoothcert.bounds as bounds
import unsound
from conftest import Threshold
from smoothcert import Gaussian, Laplace, Smooth, SmoothcertError
from smoothcert import certificates as C
from smoothcert.certificates import hard
from smoothcert.bounds import clopper_pearson_lower, clopper_pearson_upper
from soundness import assert_caught, assert_sound, plan

mp.mp.dps = 40


def probit(p):
    return mp.sqrt(2) * mp.erfinv(2 * mp.mpf(p) - 1)


# -- exact values: each radius formula against an independent high-precision implementation --------------------
GRID = [(pa, pb) for pa in (0.3, 0.5, 0.500001, 0.6, 0.75, 0.9, 0.99, 0.999999, 1 - 1e-12)
        for pb in (0.0, 1e-12, 1e-6, 0.01, 0.1, 0.2499, 0.4, 0.5) if pa + pb <= 1 + 1e-15] + \
       [(0.7, 0.3), (0.55, 0.45), (0.9, 0.1)]   # pA + pB = 1


@pytest.mark.parametrize("scale", [0.12, 0.5, 1.0])
def test_radius_formulas_match_independent_high_precision_values(scale):
    g, lap = Gaussian(scale), Laplace(scale)
    for pa, pb in GRID:
        cohen = float(scale * probit(pa)) if pa > 0.5 else 0.0
        binary = float(-scale * mp.log(2 * (1 - mp.mpf(pa)))) if pa > 0.5 else 0.0
        if pa > pb:
            margin = float(scale / 2 * (probit(pa) - probit(pb))) if pb > 0 else math.inf
            lec = float(scale / 2 * mp.log(mp.mpf(pa) / pb)) if pb > 0 else math.inf
            teng = max(lec, float(-scale * mp.log(1 - mp.mpf(pa) + pb)))
        else:
            margin = lec = teng = 0.0
        assert g.radius(pa) == pytest.approx(cohen, abs=1e-9, rel=1e-12)
        assert lap.radius(pa) == pytest.approx(binary, abs=1e-9, rel=1e-12)
        assert g.margin_radius(pa, pb) == pytest.approx(margin, abs=1e-9, rel=1e-12)
        assert lap.margin_radius(pa, pb) == pytest.approx(teng, abs=1e-9, rel=1e-12)
        assert lap.lecuyer_radius(pa, pb) == pytest.approx(lec, abs=1e-9, rel=1e-12)
        for r in (g.radius(pa), lap.radius(pa), g.margin_radius(pa, pb), lap.margin_radius(pa, pb)):
            assert r >= 0


def test_teng_second_term_wins_exactly_when_pb_exceeds_the_errata_threshold():
    lam = 1.0
    for pa in (0.6, 0.8, 0.95):
        t = (1 - pa) ** 2 / pa
        for pb in (0.5 * t, 0.99 * t, 1.01 * t, 2 * t):
            if pb < pa:
                first = lam / 2 * math.log(pa / pb)
                second = -lam * math.log(1 - pa + pb)
                assert (second > first) == (pb > t)


def test_teng_binary_is_thm1_with_pb_equal_one_minus_pa_and_beats_lecuyer():
    lap = Laplace(0.7)
    for pa in np.linspace(0.51, 0.999, 30):
        assert lap.radius(pa) == pytest.approx(lap.margin_radius(pa, 1 - pa), rel=1e-12)
        assert lap.radius(pa) >= lap.lecuyer_radius(pa, 1 - pa) - 1e-12


def test_laplace_is_not_always_larger_than_gaussian_at_matched_variance():
    # ERRATA: at sigma = sqrt(2) lam the Gaussian radius is larger for pA < 0.9536
    sigma = 1.0
    g, lap = Gaussian(sigma), Laplace.matching(sigma)
    assert lap.lam == pytest.approx(sigma / math.sqrt(2))
    assert g.radius(0.9) > lap.radius(0.9)
    assert g.radius(0.96) < lap.radius(0.96)
    cross = float(mp.findroot(lambda p: sigma * probit(p) + lap.lam * mp.log(2 * (1 - p)), (0.9, 0.99),
                              solver="bisect"))
    assert cross == pytest.approx(0.9536, abs=5e-5)


def test_certificates_on_fixed_counts_equal_the_formulas():
    c0 = np.array([[2, 90, 8, 0]])
    c1 = np.array([[30, 9_500, 400, 70]])
    n, alpha, sigma, lam = 10_000, 0.001, 0.5, 0.3
    pa = clopper_pearson_lower(9_500, n, alpha)
    assert C.certify("cohen", c0, c1, Gaussian(sigma), alpha).radius[0] == pytest.approx(sigma * stats.norm.ppf(pa))
    pa2, pb2 = clopper_pearson_lower(9_500, n, alpha / 2), clopper_pearson_upper(400, n, alpha / 2)
    v = C.certify("margin", c0, c1, Gaussian(sigma), alpha)
    assert v.prediction[0] == 1 and v.p_lower[0] == pytest.approx(pa2) and v.p_upper[0] == pytest.approx(pb2)
    assert v.radius[0] == pytest.approx(sigma / 2 * (stats.norm.ppf(pa2) - stats.norm.ppf(pb2)))
    v = C.certify("teng", c0, c1, Laplace(lam), alpha)
    assert v.radius[0] == pytest.approx(max(lam / 2 * math.log(pa2 / pb2), -lam * math.log(1 - pa2 + pb2)))
    assert C.certify("teng-binary", c0, c1, Laplace(lam), alpha).radius[0] == pytest.approx(-lam * math.log(2 * (1 - pa)))
    assert C.certify("lecuyer", c0, c1, Laplace(lam), alpha).radius[0] == pytest.approx(lam / 2 * math.log(pa2 / pb2))
    v = C.certify("gaussian-l1", c0, c1, Gaussian(sigma), alpha)
    assert v.radius[0] == pytest.approx(sigma * stats.norm.ppf(pa))


def test_certificates_abstain_and_never_go_negative():
    c0 = np.array([[50, 50, 0], [0, 100, 0], [40, 60, 0]])
    c1 = np.array([[500, 500, 0], [10, 0, 990], [4_000, 6_000, 0]])   # tie; selection picked a loser; a weak lead
    for name, noise in [("cohen", Gaussian(1)), ("margin", Gaussian(1)), ("best", Gaussian(1)),
                        ("exact-margin", Gaussian(1)), ("teng", Laplace(1)), ("teng-binary", Laplace(1)),
                        ("lecuyer", Laplace(1)), ("gaussian-l1", Gaussian(1)), ("best", Laplace(1))]:
        v = C.certify(name, c0, c1, noise, 0.001)
        assert v.prediction[0] == -1 and v.prediction[1] == -1, name
        assert np.all(v.radius >= 0) and np.all(v.radius[v.prediction == -1] == 0), name


def test_certificates_are_checked_against_their_noise_and_norm():
    with pytest.raises(SmoothcertError, match="for laplace noise"):
        C.get("teng", Gaussian(0.5))
    with pytest.raises(SmoothcertError, match="for gaussian noise"):
        C.get("cohen", Laplace(0.5))
    with pytest.raises(SmoothcertError, match="unknown certificate"):
        C.get("nope", Gaussian(0.5))
    with pytest.raises(SmoothcertError, match="cannot certify the 'l2' norm"):
        C.certify("teng", [[0, 10]], [[1, 99]], Laplace(0.5), 0.01, norm="l2")
    assert C.get(None, Laplace(0.5)).name == "teng" and C.get(None, Gaussian(0.5)).name == "cohen"


def test_best_picks_the_margin_certificate_when_the_rest_is_spread_out():
    k = 50
    c0 = np.zeros((1, k), int)
    c0[0, 0] = 80
    c0[0, 1:21] = 1                 # 20 % of the mass spread thinly over many classes
    c1 = np.zeros((1, k), int)
    c1[0, 0] = 8_000
    c1[0, 1:41] = 50
    g = Gaussian(0.5)
    one, two, best = (C.certify(x, c0, c1, g, 0.001).radius[0] for x in ("cohen", "margin", "best"))
    assert two > one and best == two
    c0b = np.array([[80, 20] + [0] * (k - 2)])
    c1b = np.array([[8_000, 2_000] + [0] * (k - 2)])
    one, two, best = (C.certify(x, c0b, c1b, g, 0.001).radius[0] for x in ("cohen", "margin", "best"))
    assert one > two and best == one


# -- soundness: failure rate <= alpha on multinomial ground truth ------------------------------------------------
# The harness draws the selection and estimation counts from a known multinomial p, certifies, and counts the
# failures: a certified class other than the true top class A, a radius beyond the certificate's own formula at the
# true probabilities, or a reported bound beyond the truth (p_lower > P(A), p_upper < max_{c != A} P(c)). Every
# test is sized by tests/soundness.py; the negative controls run an unsound variant (tests/unsound.py) through the
# same harness and plan.
ALL = [("cohen", Gaussian(0.5)), ("margin", Gaussian(0.5)), ("best", Gaussian(0.5)), ("gaussian-l1", Gaussian(0.5)),
       ("teng", Laplace(0.4)), ("teng-binary", Laplace(0.4)), ("lecuyer", Laplace(0.4)), ("best", Laplace(0.4))]


def _draws(p, n0, n, reps, seed):
    rng = np.random.default_rng(seed)
    return rng.multinomial(n0, p, size=reps), rng.multinomial(n, p, size=reps)


def _own_radius(name, noise, p, counts_selection, v):
    """Per row, the radius the certificate's own formula gives at the true probabilities p (A the true top class)."""
    norm = C.resolve(name, noise)[1]
    a = int(np.argmax(p))
    pa, pb = p[a], np.delete(p, a).max()
    if name in ("cohen", "gaussian-l1", "teng-binary"):
        return noise.radius(pa, norm)
    if name in ("margin", "teng"):
        return noise.margin_radius(pa, pb, norm)
    if name == "lecuyer":
        return noise.lecuyer_radius(pa, pb, norm)
    if name == "best":         # the formula of the certificate it used (the two-sided one reports an upper bound)
        return np.where(np.isfinite(v.p_upper), noise.margin_radius(pa, pb, norm), noise.radius(pa, norm))
    if name == "exact-margin":  # sigma/2 (Phi^-1 P(A) - Phi^-1 max(P(B), P(rest))), B the selection's runner-up
        b = hard.runner_up(counts_selection, np.full(len(counts_selection), a))
        p_b = np.maximum(p[b], np.maximum(1 - pa - p[b], 0.0))
        with np.errstate(divide="ignore"):
            return 0.5 * noise.sigma * (stats.norm.ppf(pa) - stats.norm.ppf(p_b))
    raise KeyError(name)


def _failed(name, noise, p, counts_selection, v):
    """Which certificates (rows of v) are wrong on the ground truth p."""
    p = np.asarray(p, dtype=float)
    a = int(np.argmax(p))
    pa, pb = p[a], np.delete(p, a).max()
    radius = _own_radius(name, noise, p, counts_selection, v)
    with np.errstate(invalid="ignore"):         # nan bounds (not reported) compare false
        wrong = (v.prediction != a) | (v.radius > radius * (1 + 1e-12) + 1e-15) | (v.p_lower > pa * (1 + 1e-12)) \
            | (v.p_upper < pb * (1 - 1e-12))
    return (v.prediction != C.ABSTAIN) & wrong


def multinomial_failures(name, noise, p, n0, n, alpha, plan_, seed):
    c0, c1 = _draws(p, n0, n, plan_.reps, seed)
    return int(np.sum(_failed(name, noise, p, c0, C.certify(name, c0, c1, noise, alpha))))


@pytest.fixture
def cached_exact_margin(monkeypatch):
    """exact_margin_lower is pure and slow: compute it once per count triple (the soundness tests draw the same
    small-n triples over and over)."""
    monkeypatch.setattr(bounds, "exact_margin_lower", _cached_exact_margin_lower)


_cached_exact_margin_lower = functools.lru_cache(maxsize=None)(bounds.exact_margin_lower)

CASES = [  # (p, n0, n): near ties, all-agree, dominant class, spread-out rest
    ([0.52, 0.46, 0.02], 20, 200), ([0.995, 0.005, 0.0], 20, 200), ([0.9, 0.05, 0.05], 10, 100),
    ([0.7, 0.1, 0.1, 0.1], 20, 300), ([1.0, 0.0, 0.0], 10, 50), ([0.6, 0.39, 0.01], 20, 1000),
]


@pytest.mark.parametrize("name,noise", ALL)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_certificate_is_sound_on_multinomial_ground_truth(name, noise, case):
    p, n0, n = CASES[case]
    plan_ = plan(0.05, reps=4_000)
    assert_sound(multinomial_failures(name, noise, p, n0, n, 0.05, plan_, seed=case), plan_)


@pytest.mark.slow
@pytest.mark.parametrize("case", [0, 2, 3])
def test_exact_margin_certificate_is_sound_on_multinomial_ground_truth(case, cached_exact_margin):
    p, n0, n = CASES[case]           # the bound's own coverage is tested at length in test_exact_margin.py
    plan_ = plan(0.1)
    assert_sound(multinomial_failures("exact-margin", Gaussian(0.5), p, n0, n, 0.1, plan_, seed=10 + case), plan_)


# Where each certificate is weakest, with the unsound variants run there and their EXACT failure rates (every count
# vector enumerated, test_stated_exact_rates_of_the_soundness_cases; "independent bounds" by conditioning on the
# maximum of its 650 small classes, offline). A case's plan catches the smallest of its variants' rates.
G, L = Gaussian(0.5), Laplace(0.4)
ONE_SIDED = [("cohen", G), ("gaussian-l1", G), ("teng-binary", L), ("best", G), ("best", L)]
PAIRS = [("margin", G), ("teng", L), ("lecuyer", L)]


@dataclass(frozen=True)
class Case:
    p: tuple
    n0: int
    n: int
    alpha: float
    certificates: tuple         # (name, noise): the sound certificates run here
    controls: tuple             # (variant, its exact failure rate, the certificates it is run on)


def _plan(c: Case):
    """Sized to catch the least unsound of the case's variants (2 alpha if it has none)."""
    return plan(c.alpha, min([rate for _, rate, _ in c.controls] + [2 * c.alpha]))


_AGREE = 0.1 ** (1 / 100) * (1 - 1e-4)      # just below (2 alpha)^(1/n)
_REST = (1 - 0.2606 - 0.0837) / 650
WEAKEST = {
    # two classes, P(A) = 0.5002: the selection is a coin flip and Clopper-Pearson is nearly exact at n = 500.
    # Rates: sound 0.0487, bounds at 2 alpha 0.0969, selection reused 0.0979 (best picks its one-sided branch here).
    "two-class near tie": Case((0.4998, 0.5002), 10, 500, 0.05, tuple(ONE_SIDED + PAIRS),
                               ((unsound.bounds_at_twice_alpha, 0.0969, ONE_SIDED),
                                (unsound.selection_reused, 0.0979, ONE_SIDED))),
    # all n votes agree with probability P(A)^n ~ 2 alpha, and the 2 alpha bound (2 alpha)^(1/n) is above P(A).
    # Rates: sound < 1e-70, bounds at 2 alpha 0.0990 (best 0.0979: a few selections send it to its two-sided
    # branch).
    "all agree": Case((_AGREE, (1 - _AGREE) / 2, (1 - _AGREE) / 2), 10, 100, 0.05, tuple(ONE_SIDED + PAIRS),
                      ((unsound.bounds_at_twice_alpha, 0.0990, ONE_SIDED[:3]),
                       (unsound.bounds_at_twice_alpha, 0.0979, ONE_SIDED[3:]))),
    # A and the runner-up B nearly independent (650 classes share the rest), each bound nearly exact: dropping
    # Bonferroni nearly doubles the failure rate. Rates: sound 0.0359, each bound at alpha 0.0929.
    "independent bounds": Case((0.2606, 0.0837) + (_REST,) * 650, 100, 200, 0.05, tuple(PAIRS + ONE_SIDED),
                               ((unsound.bounds_at_twice_alpha, 0.0929, PAIRS),
                                (unsound.bonferroni_dropped, 0.0929, PAIRS))),
    # A and B nearly tied, a third class: the selection picks B about half the time, and a margin test at level
    # alpha is nearly exact here. Rates (exact-margin): sound 0.0927, selection reused 0.1870.
    "three-class near tie": Case((0.44, 0.439, 0.121), 10, 24, 0.1, (("exact-margin", G),) + tuple(PAIRS + ONE_SIDED),
                                 ((unsound.selection_reused, 0.1870, (("exact-margin", G),)),)),
    # six equal runner-ups: B chosen on the estimation counts is the largest of them, which leaves the smallest rest
    # (the rest, 0.3, is the larger side of max(P(B), P(rest))). Rates: sound 0.0916, runner-up reused 0.2022.
    "equal runner-ups": Case((0.64,) + (0.06,) * 6, 10, 20, 0.1, (("exact-margin", G),),
                             ((unsound.runner_up_reused, 0.2022, (("exact-margin", G),)),)),
    # best choosing its branch on the estimation counts (the larger radius): each branch's bounds hold w.p. 1 - alpha,
    # but the larger of two radii fails when either does. Both failure events hinge on X_A, so they nearly coincide:
    # this case is the worst we found by exact search (4 classes, n <= 60, alpha 0.05 and 0.1), not the 2 alpha of
    # the union bound. Rates: sound 0.0822, best of both 0.1056 (so the plan needs ~10^5 repetitions).
    "best of both": Case((0.81, 0.15, 0.02, 0.02), 20, 40, 0.1, (("best", G), ("best", L)),
                         ((unsound.best_of_both, 0.1056, (("best", G), ("best", L))),)),
}
SOUND = [(case, name, noise) for case, c in WEAKEST.items() for name, noise in c.certificates]
CONTROLS = [(case, variant.__name__, name, noise) for case, c in WEAKEST.items() for variant, _, names in c.controls
            for name, noise in names]


def _id(x):
    return x.name if hasattr(x, "name") and not isinstance(x, str) else str(x)


@pytest.mark.parametrize("case,name,noise", SOUND, ids=_id)
def test_certificate_is_sound_where_it_is_weakest(case, name, noise, cached_exact_margin):
    c = WEAKEST[case]
    assert_sound(multinomial_failures(name, noise, c.p, c.n0, c.n, c.alpha, _plan(c), seed=7), _plan(c))


@pytest.mark.parametrize("case,variant,name,noise", CONTROLS, ids=_id)
def test_sound_harness_catches_the_unsound_variant(case, variant, name, noise, monkeypatch, cached_exact_margin):
    c = WEAKEST[case]
    getattr(unsound, variant)(monkeypatch)
    assert_caught(multinomial_failures(name, noise, c.p, c.n0, c.n, c.alpha, _plan(c), seed=7), _plan(c))


def _outcomes(n, k):
    """Every count vector of k classes summing to n, as rows."""
    if k == 1:
        return np.array([[n]])
    return np.vstack([np.column_stack([np.full(len(rest), i), rest]) for i in range(n + 1)
                      for rest in [_outcomes(n - i, k - 1)]])


def _enumerated_failure_rate(name, noise, p, n0, n, alpha):
    """The harness's exact failure probability: every selection and estimation count vector, with its probability."""
    sel, est = _outcomes(n0, len(p)), _outcomes(n, len(p))
    w_sel, w_est = stats.multinomial.pmf(sel, n0, p), stats.multinomial.pmf(est, n, p)
    # the selection counts matter only through A, B and best's choice of branch (which reads n, not the estimation
    # counts): one run per distinct choice
    a = sel.argmax(axis=1)
    any_n = np.zeros_like(sel)
    any_n[:, 0] = n
    choice = np.column_stack([a, hard.runner_up(sel, a),
                              np.isfinite(C.certify("best", sel, any_n, noise, alpha).p_upper)])
    rate = 0.0
    for key in np.unique(choice, axis=0):
        rows = np.all(choice == key, axis=1)
        rep = np.repeat(sel[rows][:1], len(est), axis=0)
        rate += w_sel[rows].sum() * w_est[_failed(name, noise, np.asarray(p), rep, C.certify(name, rep, est, noise,
                                                                                              alpha))].sum()
    return rate


@pytest.mark.slow
@pytest.mark.parametrize("case", [case for case, c in WEAKEST.items() if len(c.p) <= 4])   # cheap to enumerate
def test_stated_exact_rates_of_the_soundness_cases(case, monkeypatch, cached_exact_margin):
    """The rates the plans are sized with, recomputed by enumeration (each stated rounded down, so the plan's power
    holds); and every sound certificate's exact failure rate is <= alpha."""
    c = WEAKEST[case]
    for name, noise in c.certificates:
        assert _enumerated_failure_rate(name, noise, c.p, c.n0, c.n, c.alpha) <= c.alpha, name
    for variant, rate, names in c.controls:
        with monkeypatch.context() as m:
            variant(m)
            for name, noise in names:
                assert 0 <= _enumerated_failure_rate(name, noise, c.p, c.n0, c.n, c.alpha) - rate < 1e-4, name


def test_laplace_threshold_classifier_end_to_end_is_sound_and_tight():
    """f(x) = 1[x_0 > 0] under Laplace(lam) noise at x_0 = m: pA = 1 - exp(-m/lam)/2 and the exact l1 robust
    radius is m, which Teng et al.'s binary radius reaches exactly (Thm 3)."""
    lam, m, alpha = 0.5, 0.8, 0.05
    plan_ = plan(alpha, reps=3_000)
    smooth = Smooth(Threshold(), Laplace(lam))
    xs = torch.full((plan_.reps, 1), m, dtype=torch.float64)
    certs = list(smooth.certify_many(xs, 20, 500, alpha, 20_000, seed=3, certificate="teng-binary"))
    pa = 1 - 0.5 * math.exp(-m / lam)
    assert_sound(sum(c.prediction != -1 and (c.prediction != 1 or c.radius > m * (1 + 1e-12) or c.p_lower > pa)
                     for c in certs), plan_)
    freq = np.mean([c.counts[1] / 500 for c in certs])
    assert freq == pytest.approx(pa, abs=4 * math.sqrt(pa * (1 - pa) / (500 * plan_.reps)))
    assert Laplace(lam).radius(pa) == pytest.approx(m, rel=1e-12)


def test_laplace_sampling_has_the_laplace_distribution():
    out = Laplace(0.3).sample(torch.empty(200_000, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert stats.kstest(out.numpy(), stats.laplace(scale=0.3).cdf).pvalue > 1e-4
    again = Laplace(0.3).sample(torch.empty(200_000, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_best_handles_near_uniform_selection_votes_over_many_classes():
    c0 = np.ones((1, 100), int)                      # one selection vote per class, n not a multiple of n0
    c1 = np.zeros((1, 100), int)
    c1[0, :5] = 50
    v = C.certify("best", c0, c1, Gaussian(0.5), 0.001)
    assert v.prediction[0] == -1 and v.radius[0] == 0.0


def test_certificates_need_samples_in_both_stages():
    with pytest.raises(SmoothcertError, match="at least one selection"):
        C.certify("cohen", [[0, 0]], [[5, 5]], Gaussian(0.5), 0.01)


def test_single_class_models_are_certified_by_exact_margin_without_error():
    v = C.certify("exact-margin", [[100]], [[1000]], Gaussian(0.5), 0.01)
    assert v.prediction[0] == 0 and v.radius[0] > 0


def test_clopper_pearson_upper_is_accurate_at_tiny_alpha():
    k, n, alpha = 10, 1_000_000, 1e-10
    ub = clopper_pearson_upper(k, n, alpha)
    assert stats.binom.cdf(k, n, ub) == pytest.approx(alpha, rel=1e-6)
