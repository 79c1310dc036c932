"""Certificates under float-sound noise absorb the sampler's total-variation distance tv (issue 16, item A3).

Float-sound noise (smoothcert.noises.sound) samples a law within tv of the rounded normal whose Gaussian smoothing
the certificates are about, so each must give no more than the exact-law computation with its probabilities moved
by tv: every certificate that reads sigma itself (exact-margin, soft-lipschitz, certified confidence: CDF and
baseline) and every decision to certify. The real tv is about 4e-10, too small to see in a radius; `WIDE` is a real
SoundGaussian whose tv covers 4e15 coordinates (about 0.01), so that each shift shows, checked against an
independent formula.
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr, ndtri
from scipy.stats import beta as beta_dist

from smoothcert import Gaussian, Smooth
from smoothcert.bounds import exact_margin_lower
from smoothcert.certificates import certify
from smoothcert.certificates import confidence as conf
from smoothcert.certificates import soft
from smoothcert.noises import tv_of
from smoothcert.noises.sound import SoundGaussian

SIGMA = 0.25
WIDE = SoundGaussian(SIGMA, 16, max_dims=4 * 10 ** 15)
PLAIN = Gaussian(SIGMA)


def test_the_wide_noise_has_a_visible_tv_and_the_default_a_tiny_one():
    assert 0.005 < WIDE.tv < 0.05
    assert 0 < SoundGaussian(SIGMA, 255).tv < 1e-9 and tv_of(PLAIN) == 0.0


@pytest.mark.parametrize("counts", [(900, 60, 40), (700, 250, 50), (560, 400, 40), (990, 10, 0)])
def test_exact_margin_absorbs_tv(counts):
    alpha = 0.001
    plain = exact_margin_lower(*counts, alpha, "probit")
    moved = exact_margin_lower(*counts, alpha, "probit", tv=WIDE.tv)
    n = sum(counts)
    # the observed frequencies lie in the confidence set, so the bound is at most their margin, moved by tv
    plug_in = ndtri(counts[0] / n - WIDE.tv) - ndtri(max(counts[1], counts[2]) / n + WIDE.tv)
    assert moved <= plug_in and moved < plain
    assert exact_margin_lower(*counts, alpha, "probit", tv=0.0) == plain
    sel, est = np.array([[20, 3, 1]]), np.array([counts])
    v_sound, v_plain = certify("exact-margin", sel, est, WIDE, alpha), certify("exact-margin", sel, est, PLAIN, alpha)
    assert v_sound.radius[0] == (0.5 * SIGMA * moved if moved > 0 else 0.0)
    assert v_sound.radius[0] <= max(0.0, v_plain.radius[0] - 0.5 * SIGMA * (ndtri(0.5 + WIDE.tv) - ndtri(0.5)))


def test_exact_margin_with_tv_is_a_lower_bound_for_every_law_within_tv():
    """Monte Carlo over a law q at distance tv of p (mass tv moved from A to B): the tv bound computed on samples of q
    stays below p's margin at level alpha, where the plain bound (a negative control) does not."""
    rng = np.random.default_rng(3)
    tv, alpha, n = 0.05, 0.05, 400
    p = np.array([0.70, 0.22, 0.08])
    q = p + np.array([tv, -tv, 0.0])                       # what the sampler draws
    truth = ndtri(p[0]) - ndtri(max(p[1], p[2]))
    draws = rng.multinomial(n, q, size=60)
    sound = np.mean([exact_margin_lower(*map(int, d), alpha, "probit", tv=tv) > truth for d in draws])
    plain = np.mean([exact_margin_lower(*map(int, d), alpha, "probit") > truth for d in draws])
    assert sound <= alpha and plain > 5 * alpha


@pytest.mark.parametrize("name", ["cohen", "margin", "best"])
def test_the_decision_to_certify_absorbs_tv(name):
    """pA_lower just above 1/2 (or just above pB_upper) but within tv: the plain certificate certifies (radius > 0 or
    prediction), the float-sound one abstains."""
    sel, est = np.array([[60, 40, 0]]), np.array([[5_200, 4_800, 0]])
    plain, sound = certify(name, sel, est, PLAIN, 0.001), certify(name, sel, est, WIDE, 0.001)
    assert plain.prediction[0] == 0 and sound.prediction[0] == -1 and sound.radius[0] == 0.0


@pytest.mark.parametrize("name", ["cohen", "margin", "best", "exact-margin"])
def test_hard_certificates_are_never_larger_than_the_exact_law_minus_the_tv_slack(name):
    rng = np.random.default_rng(0)
    for _ in range(8):
        a = int(rng.integers(700, 1000))
        b = int(rng.integers(0, 1000 - a + 1))
        est, sel = np.array([[a, b, 1000 - a - b]]), np.array([[80, 15, 5]])
        sound, plain = certify(name, sel, est, WIDE, 0.001), certify(name, sel, est, PLAIN, 0.001)
        assert sound.radius[0] <= plain.radius[0]
        cohen = SIGMA * ndtri(beta_dist.ppf(0.001, a, 1000 - a + 1) - WIDE.tv)          # Clopper-Pearson, minus tv
        p_a, p_b = beta_dist.ppf(0.0005, a, 1000 - a + 1), min(beta_dist.isf(0.0005, max(b, 1000 - a - b) + 1,
                                                                                   1000 - max(b, 1000 - a - b)), 1)
        margin = 0.5 * SIGMA * (ndtri(p_a - WIDE.tv) - ndtri(min(p_b, 1 - p_a) + WIDE.tv))
        if name in ("cohen", "margin"):
            assert sound.radius[0] == pytest.approx(max(0.0, cohen if name == "cohen" else margin), rel=1e-9)
        elif name == "best":
            assert sound.radius[0] == pytest.approx(max(0.0, cohen), rel=1e-9) or \
                sound.radius[0] == pytest.approx(max(0.0, margin), rel=1e-9)


def _soft_stats(top=0.8, n=2_000):
    sums = np.array([[top * n, (1 - top) * n * 0.7, (1 - top) * n * 0.3]])
    return sums / n * 100, sums, sums * 0.9, n


def test_soft_lipschitz_absorbs_tv():
    sel, sums, squares, n = _soft_stats()
    plain = soft.soft_lipschitz(sel, sums, squares, n, PLAIN, 0.001)
    sound = soft.soft_lipschitz(sel, sums, squares, n, WIDE, 0.001)
    margin = (plain.p_lower[0] - WIDE.tv) - (plain.p_upper[0] + WIDE.tv)      # E_A - tv against max E_c + tv
    assert sound.radius[0] == pytest.approx(margin * SIGMA * math.sqrt(math.pi / 2), rel=1e-12)
    assert sound.radius[0] == pytest.approx(plain.radius[0] - 2 * WIDE.tv * SIGMA * math.sqrt(math.pi / 2), rel=1e-9)
    for name in ("soft-hoeffding", "soft-bernstein"):         # through the noise's margin_radius: never larger
        assert soft.CERTIFICATES[name](sel, sums, squares, n, WIDE, 0.001).radius[0] < \
            soft.CERTIFICATES[name](sel, sums, squares, n, PLAIN, 0.001).radius[0]


def test_soft_certificates_abstain_within_tv_of_a_tie():
    sel, sums, squares, n = _soft_stats(top=0.5, n=100_000)
    sums = np.array([[51_000.0, 49_000.0, 0.0]])
    for name in ("soft-hoeffding", "soft-lipschitz"):
        assert soft.CERTIFICATES[name](sel, sums, sums * 0.9, n, PLAIN, 0.001).prediction[0] == 0
        assert soft.CERTIFICATES[name](sel, sums, sums * 0.9, n, WIDE, 0.001).prediction[0] == -1


def _layers(measure="score"):
    rng = np.random.default_rng(5)
    low, high = conf.measure_range(measure)
    values = low + (high - low) * rng.beta(8, 2, size=(3, 4_000))
    return conf.layers_from_histogram(conf.histogram(values, measure), measure), values.sum(axis=1), 4_000


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_confidence_cdf_absorbs_tv(measure):
    layers, _, _ = _layers(measure)
    low, high = conf.measure_range(measure)
    tv, alpha = WIDE.tv, 0.001
    for g in range(3):
        base, w, z = conf._terms(layers, g, alpha, upper=False)
        q = ndtr(z)
        for r in (0.0, 0.2):       # independent formula: low + sum w Phi(Phi^-1(q - tv) - R/sigma)
            expect = base + float(np.sum(w * ndtr(ndtri(np.maximum(q - tv, 0.0)) - r / SIGMA)))
            assert conf.cdf_lower(layers, r, SIGMA, alpha, tv=tv)[g] == pytest.approx(expect, abs=1e-12)
    at_zero = conf.cdf_lower(layers, 0.0, SIGMA, alpha, tv=tv)
    plain = conf.cdf_lower(layers, 0.0, SIGMA, alpha)
    # each layer's tail moves by tv (clipped at 0): the bound by at most (b - a) tv, and it moves
    assert np.all(at_zero < plain) and np.all(at_zero >= plain - (high - low) * tv - 1e-12)
    assert np.all(conf.cdf_upper(layers, 0.0, SIGMA, alpha, tv=tv) >= conf.cdf_upper(layers, 0.0, SIGMA, alpha))
    c = np.array([low + 0.5 * (high - low), low + 0.7 * (high - low)])
    sound, exact = conf.cdf_radius(layers, c, SIGMA, alpha, tv=tv), conf.cdf_radius(layers, c, SIGMA, alpha)
    assert np.all(sound <= exact) and np.all(sound < exact - 1e-3)
    assert np.all(np.diag(conf.cdf_lower(layers, sound[:, 0], SIGMA, alpha, tv=tv)) > c[0])   # the radius holds


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_confidence_baseline_absorbs_tv(measure):
    _, sums, m = _layers(measure)
    low, high = conf.measure_range(measure)
    tv, alpha = WIDE.tv, 0.001
    e = sums / m - (high - low) * math.sqrt(math.log(1 / alpha) / (2 * m))     # Hoeffding lower bound
    p = (e - low) / (high - low) - tv
    assert conf.baseline_lower(sums, m, 0.1, SIGMA, alpha, measure, tv=tv) == pytest.approx(
        low + (high - low) * ndtr(ndtri(p) - 0.1 / SIGMA), abs=1e-12)
    assert np.all(conf.baseline_lower(sums, m, 0.0, SIGMA, alpha, measure, tv=tv)
                  <= conf.baseline_lower(sums, m, 0.0, SIGMA, alpha, measure) - (high - low) * tv + 1e-12)
    c = low + 0.6 * (high - low)
    assert conf.baseline_radius(sums, m, c, SIGMA, alpha, measure, tv=tv) == pytest.approx(
        SIGMA * (ndtri(p) - ndtri(0.6)), abs=1e-12)
    assert np.all(conf.baseline_upper(sums, m, 0.0, SIGMA, alpha, measure, tv=tv)
                  >= conf.baseline_upper(sums, m, 0.0, SIGMA, alpha, measure) + (high - low) * tv - 1e-12)


def test_certified_confidence_of_a_run_absorbs_the_noise_tv():
    """Smooth.confidence under float-sound noise: its radii are those of the stored histogram at the noise's tv,
    below the exact-law ones."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([3.0, 0.0, 0.0]))       # class 0's score about 0.9: positive radii
    xs = torch.randint(0, 17, (2, 1, 4, 4)) / 16.0
    got = list(Smooth(model, WIDE).confidence(xs, 20, 500, 0.01, [0.5, 0.7], batch_size=250, seed=0))
    for r in got:
        layers = conf.layers_from_histogram(r.histogram[None], "score")
        assert np.all(r.cdf > 0) and np.all(r.baseline > 0)
        assert np.array_equal(r.cdf, conf.cdf_radius(layers, np.array([0.5, 0.7]), SIGMA, 0.01, tv=WIDE.tv)[0])
        assert np.all(r.cdf < conf.cdf_radius(layers, np.array([0.5, 0.7]), SIGMA, 0.01)[0])
        assert np.array_equal(r.baseline, conf.baseline_radius(np.array([r.measure_sum]), 500, np.array([0.5, 0.7]),
                                                               SIGMA, 0.01, tv=WIDE.tv)[0])
