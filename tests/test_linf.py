"""The l-inf reading of l2 certificates (issue 16 item 5; noises/norms.py): r_inf = r_2 / sqrt(D) for inputs of D
coordinates, stored as the norm cell 'linf:d=D' so that recertify recomputes it.

Exact values: every certificate's l-inf radius is its l2 radius divided by sqrt(D) (exactly, where sqrt(D) is a
power of two). Soundness on a ground truth whose l-inf radius is known exactly: f(x) = 1[sum_i x_i > 0] on D
coordinates; at x = (t, ..., t) its smoothed classifier predicts 1 with pA = Phi(sqrt(D) t / sigma), and the nearest
point of the boundary sum = 0 in l-inf is (0, ..., 0), at distance t = r_2 / sqrt(D): the reading is tight there,
so any overstatement shows. Negative controls: the l2 radius reported as the l-inf one, and bounds at 2 alpha.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from conftest import certify_args, one_line_error, rows, without_time
from smoothcert import Gaussian, Laplace, Smooth, SmoothcertError, Uniform
from smoothcert import certificates as C
from smoothcert.analysis import load_results, plot_figure
from smoothcert.certificates import ABSTAIN
from smoothcert.certificates import soft as S
from smoothcert.cli import main
from smoothcert.noises import norms
from smoothcert import planning
from soundness import assert_caught, assert_sound, plan
from test_soundness import cohen_failure_rate
from unsound import bounds_at_twice_alpha


# -- exact values -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [1, 64, 784, 3072])
def test_linf_radius_is_the_l2_radius_over_sqrt_d(dims):
    g = Gaussian(0.37)
    p = np.array([0.2, 0.5, 0.51, 0.9, 0.999, 1.0])
    r2, rinf = g.radius(p, "l2"), g.radius(p, f"linf:d={dims}")
    np.testing.assert_array_equal(rinf, r2 / math.sqrt(dims))
    finite = np.isfinite(r2)
    np.testing.assert_allclose(rinf[finite] * math.sqrt(dims), r2[finite], rtol=1e-15)
    m2, minf = g.margin_radius(0.8, [0.05, 0.1, 0.8], "l2"), g.margin_radius(0.8, [0.05, 0.1, 0.8], f"linf:d={dims}")
    np.testing.assert_array_equal(minf, m2 / math.sqrt(dims))
    if math.isqrt(dims) ** 2 == dims and (math.isqrt(dims) & (math.isqrt(dims) - 1)) == 0:   # sqrt(D) a power of 2
        assert np.array_equal(rinf * math.sqrt(dims), r2) and np.array_equal(minf * math.sqrt(dims), m2)


def test_linf_radius_matches_scipy_on_the_formula():
    """sigma Phi^-1(pA) / sqrt(D) from scipy.stats.norm, independent of the code's ndtri."""
    assert Gaussian(0.5).radius(0.95, "linf:d=784") == pytest.approx(0.5 * stats.norm.ppf(0.95) / 28, rel=1e-14)


@pytest.mark.parametrize("name", ["cohen", "margin", "exact-margin", "best", "gaussian-l1", "single-stage"])
def test_every_hard_certificate_reads_linf_as_l2_over_sqrt_d(name):
    noise, alpha, dims = Gaussian(0.25), 0.01, 64
    sel = np.array([[2, 15, 3], [10, 10, 0], [0, 20, 0]])
    est = np.array([[40, 900, 60], [520, 480, 0], [0, 1000, 0]])
    if name == "single-stage":
        sel = np.zeros_like(sel)
    l2 = C.certify(name, sel, est, noise, alpha, "l2" if name != "gaussian-l1" else "l1")
    linf = C.certify(name, sel, est, noise, alpha, f"linf:d={dims}")
    np.testing.assert_array_equal(linf.prediction, l2.prediction)
    np.testing.assert_array_equal(linf.radius, l2.radius / 8)
    assert (linf.radius > 0).any()


@pytest.mark.parametrize("name", ["soft-hoeffding", "soft-bernstein", "soft-lipschitz"])
def test_soft_certificates_read_linf_as_l2_over_sqrt_d(name):
    sel = np.array([[1.0, 8.5, 0.5]])
    sums, squares = np.array([[40.0, 900.0, 60.0]]), np.array([[30.0, 850.0, 40.0]])
    fn = S.CERTIFICATES[name]
    l2 = fn(sel, sums, squares, 1000, Gaussian(0.25), 0.01, "l2")
    linf = fn(sel, sums, squares, 1000, Gaussian(0.25), 0.01, "linf:d=16")
    assert linf.radius[0] == l2.radius[0] / 4 and l2.radius[0] > 0


def test_norm_cells_parse_and_refuse_in_one_line():
    assert norms.parse("linf:d=784") == ("linf", 784) and norms.parse("linf") == ("linf", None)
    assert norms.parse("l2") == ("l2", None) and norms.with_dims("linf", 64) == "linf:d=64"
    assert norms.with_dims("l2", 64) == "l2" and norms.with_dims("linf:d=64", 64) == "linf:d=64"
    assert norms.label("linf:d=784") == "ℓ∞ radius (d = 784)" and norms.label("l1") == "ℓ1 radius"
    for bad in ("linf:d=0", "linf:d=x", "linf:784", "linf:d=-3", "linf:d=1.5", "linf:d=²"):
        with pytest.raises(SmoothcertError, match=r"^norm .*: the l-inf reading is written 'linf:d=D'"):
            norms.parse(bad)
    with pytest.raises(SmoothcertError, match=r"^norm 'linf:d=64' is for inputs of 64 coordinates, but these have 16$"):
        norms.with_dims("linf:d=64", 16)
    with pytest.raises(SmoothcertError, match=r"^gaussian noise cannot certify the 'linf' norm without the input "
                                              r"dimension D"):
        Gaussian(0.25).radius(0.9, "linf")


@pytest.mark.parametrize("noise", [Laplace(0.2), Uniform(0.4)])
def test_linf_is_refused_for_laplace_and_uniform_in_one_line(noise):
    for norm in ("linf", "linf:d=64"):
        with pytest.raises(SmoothcertError, match=rf"^{noise.name} noise cannot certify the 'linf' norm \(it certifies: "
                                                  r"l1\)$"):
            C.resolve(None, noise, norm, 64)


# -- soundness on a ground truth with a known l-inf radius --------------------------------------------------------
class SumThreshold(nn.Module):
    """f(x) = 1[sum_i x_i > 0] over all coordinates of an input."""

    def forward(self, x):
        s = x.reshape(x.shape[0], -1).sum(dim=1, keepdim=True)
        return torch.cat([-s, s], dim=1)


DIMS, SIGMA = 16, 0.5
NEAR_TIE = (0.5002, 10, 500, 0.05)
CLEAR = (0.9, 10, 100, 0.05)


def linf_failures(p_a, n0, n, alpha, p, certificate="cohen", seed=0):
    """CERTIFY f at x = (t, ..., t), pA = Phi(sqrt(D) t / sigma), p.reps times on their own streams, in l-inf; count
    a class other than 1 or a radius beyond t, the exact l-inf radius."""
    t = SIGMA * stats.norm.ppf(p_a) / math.sqrt(DIMS)
    xs = torch.full((p.reps, DIMS), t, dtype=torch.float64)
    fails = 0
    for c in Smooth(SumThreshold(), Gaussian(SIGMA)).certify_many(xs, n0, n, alpha, 20_000, seed=seed,
                                                                   certificate=certificate, norm="linf"):
        assert c.norm == f"linf:d={DIMS}"
        if c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > t * (1 + 1e-12)):
            fails += 1
    return fails


def _near_tie_plan():
    return plan(NEAR_TIE[3], cohen_failure_rate(*NEAR_TIE[:3], 2 * NEAR_TIE[3]))


@pytest.mark.parametrize("certificate", ["cohen", "margin"])
@pytest.mark.parametrize("case", [NEAR_TIE, CLEAR], ids=["near-tie", "clear"])
def test_linf_reading_is_sound_on_the_sum_threshold(case, certificate):
    p = _near_tie_plan() if case == NEAR_TIE else plan(case[3])
    assert_sound(linf_failures(*case, p, certificate=certificate, seed=2), p)


def test_harness_catches_the_l2_radius_reported_as_linf(monkeypatch):
    monkeypatch.setattr(norms, "read", lambda radius, norm: radius)
    p = plan(CLEAR[3])
    assert_caught(linf_failures(*CLEAR, p, seed=2), p)


def test_harness_catches_the_bounds_at_twice_alpha(monkeypatch):
    p = _near_tie_plan()
    bounds_at_twice_alpha(monkeypatch)
    assert_caught(linf_failures(*NEAR_TIE, p, seed=2), p)


# -- the API ------------------------------------------------------------------------------------------------------
def test_api_fills_the_dimension_in_and_refuses_another():
    smoothed = Smooth(SumThreshold(), Gaussian(SIGMA))
    x = torch.full((4, 4), 0.05, dtype=torch.float64)
    a = smoothed.certify(x, 50, 2000, 0.01, 2000, seed=1, norm="linf")
    b = smoothed.certify(x, 50, 2000, 0.01, 2000, seed=1)
    assert (a.norm, b.norm) == ("linf:d=16", "l2") and a.radius == b.radius / 4 and a.radius > 0
    with pytest.raises(SmoothcertError, match="is for inputs of 64 coordinates, but these have 16"):
        smoothed.certify(x, 50, 2000, 0.01, 2000, seed=1, norm="linf:d=64")
    t, = smoothed.certify_target(x[None], 50, 0.02, 5000, 0.01, 2000, seed=1, norm="linf")   # exact l-inf radius 0.05
    assert t.norm == "linf:d=16" and t.prediction == 1 and 0.02 <= t.radius <= 0.05


# -- the command line, recertify, analyze, plan ------------------------------------------------------------------
def test_cli_certify_linf_stores_d_and_recertify_recomputes_it(tmp_path, model_pt2, npz_data, capsys):
    l2, linf = tmp_path / "l2.tsv", tmp_path / "linf.tsv"          # npz_data: inputs (1, 4, 4), D = 16
    assert main(certify_args(model_pt2, npz_data, l2)) == 0
    assert main(certify_args(model_pt2, npz_data, linf, "--norm", "linf")) == 0
    a, b = rows(l2), rows(linf)
    assert {r["norm"] for r in b} == {"linf:d=16"}
    assert [float(r["radius"]) for r in b] == [float(r["radius"]) / 4 for r in a]
    assert any(float(r["radius"]) > 0 for r in b)
    drop = ("time", "norm", "radius")
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
        [{k: v for k, v in r.items() if k not in drop} for r in b]
    # recertify keeps the row's reading (its stored D), and --norm l2 / --norm linf switch between the two
    direct, again = tmp_path / "m.tsv", tmp_path / "re-m.tsv"
    assert main(certify_args(model_pt2, npz_data, direct, "--norm", "linf", "--certificate", "margin")) == 0
    assert main(["recertify", str(linf), "--certificate", "margin", "--out", str(again)]) == 0
    assert without_time(again) == without_time(direct)
    assert main(["recertify", str(linf), "--certificate", "cohen", "--norm", "l2", "--out", str(tmp_path / "b.tsv")]) == 0
    assert without_time(tmp_path / "b.tsv") == without_time(l2)
    assert main(["recertify", str(linf), "--certificate", "cohen", "--norm", "linf", "--out",
                 str(tmp_path / "c.tsv")]) == 0
    assert without_time(tmp_path / "c.tsv") == without_time(linf)
    capsys.readouterr()
    # analyze labels the norm
    res = load_results(str(linf))
    assert res.norm == "linf:d=16" and res.name == "cohen σ=0.25 linf:d=16"
    assert plot_figure([res]).axes[0].get_xlabel() == "ℓ∞ radius (d = 16)"
    with pytest.raises(SmoothcertError, match="cannot overlay l2 and linf:d=16 radii"):
        plot_figure([load_results(str(l2)), res])
    # planning predicts in the run's norm
    run2, runinf = planning.load_run(str(l2)), planning.load_run(str(linf))
    assert runinf.norm == "linf:d=16"
    assert planning.predict(runinf, [100, 300]).acr == pytest.approx(planning.predict(run2, [100, 300]).acr / 4,
                                                                     rel=1e-12)


def test_cli_recertify_refuses_linf_without_a_stored_dimension(tmp_path, model_pt2, npz_data, capsys):
    l2 = tmp_path / "l2.tsv"
    assert main(certify_args(model_pt2, npz_data, l2)) == 0
    capsys.readouterr()
    line = one_line_error(capsys, main(["recertify", str(l2), "--certificate", "cohen", "--norm", "linf", "--out",
                                        str(tmp_path / "o.tsv")]))
    assert f"{l2} line 2: the l-inf reading needs the inputs' dimension D" in line and "'l2'" in line
    assert not (tmp_path / "o.tsv").exists()
    for cell, message in (("linf:d=abc", "the l-inf reading is written 'linf:d=D'"),
                          ("linf", "an l-inf norm cell must carry the inputs' dimension")):
        bad = tmp_path / f"bad{len(cell)}.tsv"
        text = l2.read_text().split("\n")
        text[3] = text[3].replace("\tl2\t", f"\t{cell}\t")
        bad.write_text("\n".join(text))
        line = one_line_error(capsys, main(["recertify", str(bad), "--certificate", "cohen", "--out",
                                            str(tmp_path / "o.tsv")]))
        assert f"{bad} line 4: " in line and message in line
        assert not (tmp_path / "o.tsv").exists()


def test_cli_early_stopping_and_resume_with_linf(tmp_path, model_pt2, npz_data, capsys):
    out = tmp_path / "t.tsv"
    args = [a for a in certify_args(model_pt2, npz_data, out, "--norm", "linf") if a not in ("--n", "300")]
    assert main(args + ["--n-max", "2000", "--target-radius", "0.02"]) == 0
    table = rows(out)
    assert {r["norm"] for r in table} == {"linf:d=16"}
    assert any(float(r["radius"]) >= 0.02 for r in table)             # certified at the l-inf target
    for r in table:                                                     # each radius: sigma Phi^-1(pA_lower) / sqrt(16)
        expected = 0.25 * stats.norm.ppf(float(r["pA_lower"])) / 4 if r["predict"] != "-1" else 0.0
        assert float(r["radius"]) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    fixed = tmp_path / "f.tsv"
    assert main(certify_args(model_pt2, npz_data, fixed, "--norm", "linf")) == 0
    capsys.readouterr()
    line = one_line_error(capsys, main(certify_args(model_pt2, npz_data, fixed)))     # resumed in l2: refused
    assert "norm" in line


@pytest.mark.parametrize("noise", [["--noise", "laplace", "--lam", "0.2"], ["--noise", "uniform", "--lam", "0.4"]])
def test_cli_refuses_linf_for_laplace_and_uniform(tmp_path, model_pt2, npz_data, capsys, noise):
    args = certify_args(model_pt2, npz_data, tmp_path / "bad.tsv", "--norm", "linf")
    i = args.index("--sigma")
    line = one_line_error(capsys, main(args[:i] + noise + args[i + 2:]))
    assert f"{noise[1]} noise cannot certify the 'linf' norm (it certifies: l1)" in line
    assert not (tmp_path / "bad.tsv").exists()
