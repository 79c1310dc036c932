"""Uniform noise U[-lam, lam]^d for l1 (Yang et al. 2020; Lee et al. 2019): exact radii against independent
computations, soundness through the engine (the certificate table's yang and yang-margin) on a ground truth with a
known l1 radius (with negative controls), the sampler's law, and refusals.

Exact values come from two computations that do not use the radius formulas:
  * the threshold classifier f(x) = 1[x_1 > 0], whose smoothed probability at x_1 = m is P(m + U > 0)
    (scipy.stats.uniform) and whose smoothed classifier changes exactly at x_1 = 0, so its l1 robust radius is m;
  * the worst case over EVERY (randomised) classifier, solved as a linear program (scipy.optimize.linprog) on a grid
    of cells: with the cube and the shifted cube made of whole cells, each density is constant on a cell, so a
    classifier is, as far as both probabilities go, a fraction a_c of each cell.
"""
import math

import numpy as np
import pytest
import torch
from scipy import optimize, sparse, stats

from conftest import Threshold, tiny_cnn
from smoothcert import Smooth, SmoothcertError
from smoothcert import certificates as C
from smoothcert.certificates import ABSTAIN, Verdict
from smoothcert.noises import NOISES, Laplace, Uniform, make_noise
from smoothcert.train import train
from soundness import assert_caught, assert_sound, plan
from test_soundness import cohen_failure_rate
from unsound import bounds_at_twice_alpha


# -- exact values: the threshold classifier ---------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.1, 0.25 * math.sqrt(3), 2.0])
def test_radius_is_the_exact_l1_radius_of_the_threshold_classifier(lam):
    """At x_1 = m the smoothed classifier predicts 1 with pA = P(m + U > 0); it predicts 1 exactly where x_1 > 0
    (pA > 1/2), so its l1 robust radius is m: the radius of pA is m, and a step past it crosses 1/2."""
    noise = Uniform(lam)
    for m in np.linspace(0, lam, 41)[1:]:
        p_a = stats.uniform(loc=m - lam, scale=2 * lam).sf(0.0)
        assert noise.radius(p_a) == pytest.approx(m, rel=1e-12, abs=1e-15)
        past = m + 1e-9 * lam                                       # x moved by a bit more than the radius
        assert stats.uniform(loc=m - past - lam, scale=2 * lam).sf(0.0) < 0.5


def test_radius_values_and_shape():
    u = Uniform(2.0)
    assert u.radius(0.75) == 1.0 and u.radius(1.0) == 2.0          # at most lam
    assert u.radius(0.5) == 0.0 and u.radius(0.2) == 0.0 and u.radius(float("nan")) == 0.0
    np.testing.assert_array_equal(u.radius(np.array([[0.1, 0.5], [0.625, 1.0]])), [[0.0, 0.0], [0.5, 2.0]])
    assert u.margin_radius(0.8, 0.1) == pytest.approx(1.4) and u.margin_radius(0.4, 0.4) == 0.0
    assert u.margin_radius(0.3, 0.5) == 0.0                        # never negative
    p = np.linspace(0.5, 1.0, 11)
    np.testing.assert_allclose(u.margin_radius(p, 1 - p), u.radius(p), rtol=1e-15)   # pB = 1 - pA: the same


# -- exact values: the worst case over every classifier, a linear program on a grid -----------------------------
def _cells(n_cells, shift):
    """Masses of the cells (side 2 lam / n_cells) of the box covering the cube [0, n)^d and its shift by `shift`
    cells (shift >= 0 per axis): under the noise at x (p) and at x + delta (q)."""
    axes = [np.arange(n_cells + k) for k in shift]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(shift))
    mass = 1.0 / n_cells ** len(shift)
    p = np.where((grid < n_cells).all(axis=1), mass, 0.0)
    q = np.where(((grid >= shift) & (grid < n_cells + np.array(shift))).all(axis=1), mass, 0.0)
    return p, q


def worst_top(p_a, n_cells, shift):
    """min P_{x+delta}(A) over every classifier with P_x(A) >= p_a."""
    p, q = _cells(n_cells, shift)
    res = optimize.linprog(q, A_ub=-p[None], b_ub=[-p_a], bounds=(0, 1), method="highs")
    assert res.status == 0
    return res.fun


def worst_margin(p_a, p_b, n_cells, shift):
    """min P_{x+delta}(A) - P_{x+delta}(B) over every classifier with P_x(A) >= p_a, P_x(B) <= p_b."""
    p, q = _cells(n_cells, shift)
    eye, zero = sparse.identity(len(p), format="csr"), np.zeros_like(p)
    a_ub = sparse.vstack([sparse.csr_matrix([np.concatenate([-p, zero]), np.concatenate([zero, p])]),
                          sparse.hstack([eye, eye])])
    res = optimize.linprog(np.concatenate([q, -q]), A_ub=a_ub, b_ub=np.concatenate([[-p_a, p_b], np.ones(len(p))]),
                           bounds=(0, 1), method="highs")
    assert res.status == 0
    return res.fun


def _shifts(d, most):
    return [k for k in np.ndindex(*(most + 1,) * d) if 0 < sum(k) <= most]


@pytest.mark.parametrize("d,n_cells,steps", [(1, 10, 3), (2, 10, 1), (2, 10, 2), (2, 10, 3), (3, 6, 2)])
def test_radius_is_the_worst_case_over_every_classifier(d, n_cells, steps):
    """lam = 1, cells of side h = 2 / n_cells, pA chosen so that radius(pA) = steps * h. Every shift of l1 norm
    <= the radius keeps the worst-case P(A) >= 1/2 (sound); one cell further along an axis drops it below (tight).
    The LP's optimum is also the Neyman-Pearson value max(0, pA - (1 - prod(1 - |delta_i| / 2 lam)))."""
    h = 2.0 / n_cells
    p_a = 0.5 + steps * h / 2
    noise = Uniform(1.0)
    assert noise.radius(p_a) == pytest.approx(steps * h, rel=1e-12)
    for k in _shifts(d, steps + 1):
        worst = worst_top(p_a, n_cells, k)
        assert worst == pytest.approx(max(0.0, p_a - (1 - np.prod(1 - np.array(k) / n_cells))), abs=1e-9)
        if sum(k) * h <= noise.radius(p_a) + 1e-12:
            assert worst >= 0.5 - 1e-9, (k, worst)
    assert worst_top(p_a, n_cells, (steps + 1,) + (0,) * (d - 1)) < 0.5 - 0.5 * h / 2


@pytest.mark.parametrize("p_a,p_b", [(0.6, 0.2), (0.5, 0.1), (0.75, 0.15)])
def test_margin_radius_is_the_worst_case_over_every_classifier(p_a, p_b):
    """lam = 1, d = 2, cells of side 0.2: lam (pA - pB) is a whole number of cells here. Within it P(A) stays >=
    P(B) for every classifier; one cell further along an axis it does not. (0.5, 0.1): the one-sided radius is 0."""
    n_cells, h = 10, 0.2
    noise = Uniform(1.0)
    r = noise.margin_radius(p_a, p_b)
    steps = round(r / h)
    assert r == pytest.approx(steps * h, rel=1e-12) and r > noise.radius(p_a)
    for k in _shifts(2, steps + 1):
        if sum(k) * h <= r + 1e-12:
            assert worst_margin(p_a, p_b, n_cells, k) >= -1e-9, k
    assert worst_margin(p_a, p_b, n_cells, (steps + 1, 0)) < -h / 2


# -- soundness through the engine (Smooth.certify_many) on the threshold classifier ----------------------------
def threshold_failures(p_a, n0, n, alpha, p, certificate="yang", lam=0.5, seed=0):
    """CERTIFY the threshold classifier p.reps times, each on its own streams, at x_1 = m where P(class 1) = p_a
    under U[-lam, lam] (m = 2 lam (p_a - 1/2), its exact l1 robust radius), and count the wrong certificates: a
    class other than 1, a radius beyond m, or a reported bound beyond the truth."""
    m = 2 * lam * (p_a - 0.5)
    xs = torch.full((p.reps, 1), m, dtype=torch.float64)
    fails = 0
    for c in Smooth(Threshold(), Uniform(lam)).certify_many(xs, n0, n, alpha, 20_000, seed=seed,
                                                            certificate=certificate):
        if c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > m * (1 + 1e-12) or c.p_lower > p_a
                                        or c.p_upper < 1 - p_a):
            fails += 1
    return fails


NEAR_TIE = (0.5002, 10, 500, 0.05)       # selection ~ a coin flip, each bound nearly exact
CLEAR = (0.9, 10, 100, 0.05)


def _near_tie_plan():
    """The one-sided certificate fails exactly when Cohen's does on the same counts (its radius is increasing in the
    bound and equals m at pA): the plan catches the bounds at 2 alpha at their exact rate (0.0969; sound 0.0487)."""
    return plan(NEAR_TIE[3], cohen_failure_rate(*NEAR_TIE[:3], 2 * NEAR_TIE[3]))


@pytest.mark.parametrize("certificate", ["yang", "yang-margin"])
@pytest.mark.parametrize("case", [NEAR_TIE, CLEAR], ids=["near-tie", "clear"])
def test_uniform_certificates_are_sound_on_the_threshold_classifier(case, certificate):
    p = _near_tie_plan() if case == NEAR_TIE else plan(case[3])
    assert_sound(threshold_failures(*case, p, certificate=certificate, seed=3), p)


def test_sound_harness_catches_the_bounds_at_twice_alpha(monkeypatch):
    p = _near_tie_plan()
    bounds_at_twice_alpha(monkeypatch)
    assert_caught(threshold_failures(*NEAR_TIE, p, seed=3), p)


@pytest.mark.parametrize("certificate", ["yang", "yang-margin"])
def test_sound_harness_catches_a_radius_twice_too_large(monkeypatch, certificate):
    """The cube's side 2 lam taken for lam: 4 lam (pA - 1/2), or 2 lam (pA - pB)."""
    radius, margin = Uniform.radius, Uniform.margin_radius
    monkeypatch.setattr(Uniform, "radius", lambda self, p_a, norm="l1": 2 * radius(self, p_a, norm))
    monkeypatch.setattr(Uniform, "margin_radius", lambda self, p_a, p_b, norm="l1": 2 * margin(self, p_a, p_b, norm))
    p = plan(CLEAR[3])
    assert_caught(threshold_failures(*CLEAR, p, certificate=certificate, seed=3), p)


def _point_estimate(counts_selection, counts, noise, alpha, norm):
    """UNSOUND on purpose: the radius of the point estimate of pA instead of its lower bound."""
    c = np.argmax(counts_selection, axis=1)
    p = counts[np.arange(len(c)), c] / counts.sum(axis=1)
    ok = p > 0.5
    return Verdict(np.where(ok, c, ABSTAIN), np.where(ok, noise.radius(p, norm), 0.0), p, p * np.nan)


def test_sound_harness_catches_the_point_estimate(monkeypatch):
    monkeypatch.setitem(C.CERTIFICATES, "point", C.Spec("point", _point_estimate, ("uniform",), {"uniform": "l1"},
                                                         "unsound"))
    p = plan(CLEAR[3])
    assert_caught(threshold_failures(*CLEAR, p, certificate="point", seed=3), p)


@pytest.mark.slow
@pytest.mark.parametrize("p_a", [0.51, 0.75, 0.95, 0.999])
def test_uniform_is_sound_on_the_threshold_classifier_many_repetitions(p_a):
    alpha = 0.05
    p = plan(alpha, reps=40_000)
    fails = threshold_failures(p_a, 20, 200, alpha, p, lam=1.5, seed=11)
    assert_sound(fails, p)
    if p_a == 0.95:                        # Clopper-Pearson fails often enough here that a bound never failing shows
        assert fails > 0.2 * alpha * p.reps


def test_engine_certifies_under_uniform_noise_reproducibly():
    smoothed = Smooth(Threshold(), Uniform(0.5))
    x = torch.tensor([0.3], dtype=torch.float64)          # pA = 0.8, exact l1 radius 0.3
    a, b = (smoothed.certify(x, 100, 20_000, 0.001, 5000, seed=7, certificate="yang") for _ in range(2))
    assert (a.prediction, a.radius, a.certificate, a.norm) == (b.prediction, b.radius, "yang", "l1")
    assert a.prediction == 1 and 0.28 < a.radius <= 0.3
    with pytest.raises(SmoothcertError, match=r"^uniform noise cannot certify the 'l2' norm \(it certifies: l1\)$"):
        smoothed.certify(x, 100, 1000, 0.001, 1000, seed=7, norm="l2")


# -- sampling -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_draws_uniform_on_the_cube(dtype):
    lam = 0.7
    x = Uniform(lam).sample(torch.empty(200_000, dtype=dtype), torch.Generator().manual_seed(1))
    assert x.dtype == dtype and x.shape == (200_000,)
    v = x.double().numpy()
    assert v.min() >= -lam and v.max() <= lam
    assert stats.kstest(v, "uniform", args=(-lam, 2 * lam)).pvalue > 1e-3
    assert stats.kstest(v, "uniform", args=(-1.02 * lam, 2.04 * lam)).pvalue < 1e-6   # the test has power


def test_sample_is_reproducible_and_matching_has_the_gaussian_variance():
    u = Uniform.matching(0.25)
    assert u.lam == pytest.approx(0.25 * math.sqrt(3), rel=1e-15)
    a = u.sample(torch.empty(400, 100), torch.Generator().manual_seed(3))
    b = u.sample(torch.empty(400, 100), torch.Generator().manual_seed(3))
    c = u.sample(torch.empty(400, 100), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.std()) == pytest.approx(0.25, rel=0.01)
    assert float(a.std()) == pytest.approx(float(Laplace.matching(0.25).sample(torch.empty(400, 100),
                                                                               torch.Generator().manual_seed(3)).std()),
                                           rel=0.02)


def test_training_under_uniform_noise_needs_no_change(npz_data):
    data = np.load(npz_data)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    models = [train(tiny_cnn(), x, y, Uniform(0.3), epochs=2, batch_size=4, seed=5) for _ in range(2)]
    assert all(torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters()))


# -- refusals ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), True, "0.5", None])
def test_uniform_refuses_a_bad_lam(bad):
    with pytest.raises(SmoothcertError, match=r"^lam must be a finite number > 0, got"):
        Uniform(bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_matching_refuses_a_bad_sigma(bad):
    with pytest.raises(SmoothcertError, match=r"^sigma must be a finite number > 0"):
        Uniform.matching(bad)


def test_uniform_noise_refuses_l2_in_one_line():
    for call in (lambda u: u.radius(0.9, norm="l2"), lambda u: u.margin_radius(0.9, 0.05, norm="l2"),
                 lambda u: u.radius(0.9, norm="linf")):
        with pytest.raises(SmoothcertError, match=r"^uniform noise cannot certify the 'l(2|inf)' norm \(it certifies: "
                                                  r"l1\)$"):
            call(Uniform(0.5))


def test_make_noise_builds_uniform_from_lam_only():
    assert make_noise("uniform", lam=0.5) == Uniform(0.5) and NOISES["uniform"](0.5) == Uniform(0.5)
    assert Uniform(0.5).scale == 0.5 and Uniform(0.5).describe() == "uniform(lam=0.5)"
    for kwargs, message in (({"sigma": 0.25}, r"^uniform noise takes --lam, not --sigma \(U\[-lam, lam\]"),
                            ({"sigma": 0.25, "lam": 0.5}, r"^uniform noise takes --lam, not --sigma"),
                            ({}, r"^uniform noise needs --lam \(U\[-lam, lam\]")):
        with pytest.raises(SmoothcertError, match=message) as info:
            make_noise("uniform", **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(SmoothcertError, match="--lam goes with --noise laplace or uniform"):
        make_noise("gaussian", sigma=0.25, lam=0.5)
