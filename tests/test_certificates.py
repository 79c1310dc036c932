"""Every hard-vote certificate: exact values against independent formulas, and soundness on ground truth."""
import math

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import stats

from conftest import Threshold
from smoothcert import Gaussian, Laplace, Smooth, SmoothcertError
from smoothcert import certificates as C
from smoothcert.bounds import clopper_pearson_lower, clopper_pearson_upper

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


# -- soundness: failure rate <= alpha on ground truth ---------------------------------------------------------
def limit(reps, alpha):
    return int(stats.binom.isf(1e-6, reps, alpha))


def _draws(p, n0, n, reps, seed):
    rng = np.random.default_rng(seed)
    return rng.multinomial(n0, p, size=reps), rng.multinomial(n, p, size=reps)


def _true_radius(name, p, noise):
    """The radius the certificate's theorem gives with the exact probabilities: what it must not exceed."""
    a = int(np.argmax(p))
    pa, pb = p[a], max(q for i, q in enumerate(p) if i != a)
    if name in ("cohen", "gaussian-l1"):
        return noise.radius(pa), a
    if name in ("margin", "best", "exact-margin", "teng"):
        return noise.margin_radius(pa, pb), a
    if name == "teng-binary":
        return noise.radius(pa), a
    if name == "lecuyer":
        return noise.lecuyer_radius(pa, pb), a
    raise KeyError(name)


CASES = [  # (p, n0, n): near ties, all-agree, dominant class, spread-out rest
    ([0.52, 0.46, 0.02], 20, 200), ([0.995, 0.005, 0.0], 20, 200), ([0.9, 0.05, 0.05], 10, 100),
    ([0.7, 0.1, 0.1, 0.1], 20, 300), ([1.0, 0.0, 0.0], 10, 50), ([0.6, 0.39, 0.01], 20, 1000),
]


@pytest.mark.parametrize("name,noise", [("cohen", Gaussian(0.5)), ("margin", Gaussian(0.5)), ("best", Gaussian(0.5)),
                                        ("gaussian-l1", Gaussian(0.5)), ("teng", Laplace(0.4)),
                                        ("teng-binary", Laplace(0.4)), ("lecuyer", Laplace(0.4)),
                                        ("best", Laplace(0.4))])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_certificate_fails_at_most_alpha_on_multinomial_ground_truth(name, noise, case):
    p, n0, n = CASES[case]
    alpha, reps = 0.05, 4_000
    c0, c1 = _draws(p, n0, n, reps, seed=case)
    v = C.certify(name, c0, c1, noise, alpha)
    radius, a = _true_radius(name, p, noise)
    fails = np.sum((v.prediction != -1) & ((v.prediction != a) | (v.radius > radius * (1 + 1e-12) + 1e-15)))
    assert fails <= limit(reps, alpha)


@pytest.mark.slow
@pytest.mark.parametrize("case", [0, 2, 3])
def test_exact_margin_certificate_fails_at_most_alpha(case):
    p, n0, n = CASES[case]           # the bound's own coverage is tested at length in test_exact_margin.py
    alpha, reps = 0.1, 400
    c0, c1 = _draws(p, n0, n, reps, seed=10 + case)
    noise = Gaussian(0.5)
    v = C.certify("exact-margin", c0, c1, noise, alpha)
    radius, a = _true_radius("exact-margin", p, noise)
    fails = np.sum((v.prediction != -1) & ((v.prediction != a) | (v.radius > radius * (1 + 1e-12))))
    assert fails <= limit(reps, alpha)


def test_laplace_threshold_classifier_end_to_end_is_sound_and_tight():
    """f(x) = 1[x_0 > 0] under Laplace(lam) noise at x_0 = m: pA = 1 - exp(-m/lam)/2 and the exact l1 robust
    radius is m, which Teng et al.'s binary radius reaches exactly (Thm 3)."""
    lam, m, alpha, reps = 0.5, 0.8, 0.05, 3_000
    smooth = Smooth(Threshold(), Laplace(lam))
    xs = torch.full((reps, 1), m, dtype=torch.float64)
    certs = list(smooth.certify_many(xs, 20, 500, alpha, 20_000, seed=3, certificate="teng-binary"))
    fails = sum(c.prediction != -1 and (c.prediction != 1 or c.radius > m * (1 + 1e-12)) for c in certs)
    assert fails <= limit(reps, alpha)
    pa = 1 - 0.5 * math.exp(-m / lam)
    freq = np.mean([c.counts[1] / 500 for c in certs])
    assert freq == pytest.approx(pa, abs=4 * math.sqrt(pa * (1 - pa) / (500 * reps)))
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
