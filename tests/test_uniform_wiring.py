"""Uniform noise wired through smoothcert (issue 16 item 4): the certificate table's entries (yang, yang-margin, the
default, best and single-stage, each noise's one-sided certificate), the API, and the command line (certify in every
mode, recertify, train, analyze's labels, plan), with the refusals in one line.

The certificates' exact values and soundness on a ground truth are tests/test_uniform.py's (which now goes through
this table); here: the wiring reaches the same functions, and `best` keeps level alpha on the ground truth too."""
import math

import numpy as np
import pytest
import torch

from conftest import certify_args, one_line_error, rows, without_time
from smoothcert import Smooth, Uniform
from smoothcert import certificates as C
from smoothcert.analysis import load_results
from smoothcert.cli import main
from smoothcert.noises import Gaussian, Laplace
from smoothcert import planning
from soundness import assert_sound, plan
from test_uniform import CLEAR, NEAR_TIE, _near_tie_plan, threshold_failures


# -- the certificate table --------------------------------------------------------------------------------------
def test_the_table_names_uniform_certificates_and_its_default():
    u = Uniform(0.5)
    assert C.get(None, u).name == "yang-margin" and C.DEFAULT["uniform"] == "yang-margin"
    assert C.CERTIFICATES["yang"].fn is C.one_sided and C.CERTIFICATES["yang-margin"].fn is C.margin
    for name in ("yang", "yang-margin", "best", "single-stage"):
        spec, norm = C.resolve(name, u)
        assert norm == "l1" and "uniform" in spec.noises
    for name in ("cohen", "teng", "teng-binary", "margin", "exact-margin", "lecuyer", "soft-bernstein"):
        with pytest.raises(C.SmoothcertError, match=f"^certificate {name!r} is for .* noise, not uniform$"):
            C.get(name, u)
    for noise in (Gaussian(0.25), Laplace(0.2)):
        for name in ("yang", "yang-margin"):
            with pytest.raises(C.SmoothcertError, match=f"is for uniform noise, not {noise.name}$"):
                C.get(name, noise)


def test_one_sided_table_names_each_noise_clopper_pearson_certificate():
    """The one table early stopping and planning read: every noise of the registry has its one-sided certificate."""
    from smoothcert.noises import NOISES
    assert set(C.ONE_SIDED) == set(NOISES) == set(C.DEFAULT)
    for noise, name in C.ONE_SIDED.items():
        assert C.CERTIFICATES[name].fn is C.one_sided and noise in C.CERTIFICATES[name].noises


def test_yang_and_yang_margin_give_the_uniform_radii_of_the_bounds():
    """Through certificates.certify: 2 lam (pA_lower - 1/2) and lam (pA_lower - pB_upper), the bounds at alpha
    (one-sided) or alpha/2 each (two-sided, Bonferroni), from the fresh counts."""
    from smoothcert.bounds import clopper_pearson_lower, clopper_pearson_upper
    u, alpha = Uniform(0.75), 0.01
    sel, est = np.array([[1, 18, 1]]), np.array([[30, 900, 70]])
    v = C.certify("yang", sel, est, u, alpha)
    p_a = clopper_pearson_lower(900, 1000, alpha)
    assert v.prediction[0] == 1 and v.radius[0] == pytest.approx(2 * 0.75 * (p_a - 0.5), rel=1e-13)
    w = C.certify("yang-margin", sel, est, u, alpha)
    p_a2, p_b2 = clopper_pearson_lower(900, 1000, alpha / 2), clopper_pearson_upper(70, 1000, alpha / 2)
    assert w.radius[0] == pytest.approx(0.75 * (p_a2 - p_b2), rel=1e-13) and w.radius[0] > v.radius[0]
    b = C.certify("best", sel, est, u, alpha)
    assert b.radius[0] == w.radius[0]                    # the selection counts predict the margin's radius larger
    s = C.certify("single-stage", np.zeros_like(est), est, u, alpha)
    assert s.radius[0] == v.radius[0]


@pytest.mark.parametrize("case", [NEAR_TIE, CLEAR], ids=["near-tie", "clear"])
def test_best_is_sound_under_uniform_noise_on_the_threshold_classifier(case):
    p = _near_tie_plan() if case == NEAR_TIE else plan(case[3])
    assert_sound(threshold_failures(*case, p, certificate="best", seed=5), p)


def test_api_defaults_to_yang_margin_and_early_stopping_certifies_with_yang():
    from conftest import Threshold
    smoothed = Smooth(Threshold(), Uniform(0.5))
    x = torch.tensor([[0.3]], dtype=torch.float64)       # pA = 0.8: exact l1 radius 0.3
    c, = smoothed.certify_many(x, 100, 5000, 0.001, 5000, seed=1)
    assert (c.certificate, c.norm, c.prediction) == ("yang-margin", "l1", 1) and 0.25 < c.radius <= 0.3
    t, = smoothed.certify_target(x, 100, 0.2, 20_000, 0.001, 5000, seed=1)
    assert t.certificate == "yang" and t.prediction == 1 and 0.2 <= t.radius <= 0.3 and t.samples < 20_000
    i, = smoothed.certify_input_n(x, 100, 20_000, 0.001, 5000, seed=1, certificate="yang")
    assert i.certificate == "yang" and 0 < i.radius <= 0.3


def test_planning_predicts_the_yang_radius():
    """Planning's exact E[radius] under uniform noise: the one-sided certificate's table of 2 lam (L_k - 1/2)."""
    from scipy import stats
    from smoothcert.bounds import clopper_pearson_lower
    u, n, alpha, p = Uniform(0.4), 200, 0.01, 0.9
    k = np.arange(n + 1)
    low = clopper_pearson_lower(k, n, alpha)
    expected = stats.binom.pmf(k, n, p) @ np.where(low >= 0.5, 2 * 0.4 * (low - 0.5), 0.0)
    assert planning.expected_radius(p, n, alpha, u) == pytest.approx(expected, rel=1e-10)


# -- the command line -------------------------------------------------------------------------------------------
def _uniform(args, lam="0.4"):
    i = args.index("--sigma")
    return args[:i] + ["--noise", "uniform", "--lam", lam] + args[i + 2:]


def test_cli_certify_under_uniform_noise_and_recertify_equals_certify(tmp_path, model_pt2, npz_data):
    base = tmp_path / "base.tsv"
    assert main(_uniform(certify_args(model_pt2, npz_data, base))) == 0
    table = rows(base)
    assert {(r["noise"], r["scale"], r["certificate"], r["norm"]) for r in table} == {("uniform", "0.4",
                                                                                      "yang-margin", "l1")}
    assert all(0 <= float(r["radius"]) <= 0.4 for r in table) and any(float(r["radius"]) > 0 for r in table)
    for name in ("yang", "best"):
        direct, again = tmp_path / f"{name}.tsv", tmp_path / f"re-{name}.tsv"
        assert main(_uniform(certify_args(model_pt2, npz_data, direct, "--certificate", name))) == 0
        assert main(["recertify", str(base), "--certificate", name, "--out", str(again)]) == 0
        assert without_time(again) == without_time(direct), name
    assert load_results(str(base)).name == "yang-margin λ=0.4 l1"
    resumed = tmp_path / "base.tsv"                                   # same settings: resumed, nothing new
    assert main(_uniform(certify_args(model_pt2, npz_data, resumed))) == 0
    assert without_time(resumed) == [{k: v for k, v in r.items() if k != "time"} for r in table]


def test_cli_early_stopping_and_input_n_under_uniform_noise(tmp_path, model_pt2, npz_data):
    target, input_n = tmp_path / "t.tsv", tmp_path / "i.tsv"
    common = [a for a in certify_args(model_pt2, npz_data, target) if a not in ("--n", "300")]
    assert main(_uniform(common + ["--n-max", "2000", "--target-radius", "0.1"])) == 0
    assert {r["certificate"] for r in rows(target)} == {"yang"}
    common = [a for a in certify_args(model_pt2, npz_data, input_n) if a not in ("--n", "300")]
    assert main(_uniform(common + ["--n-max", "2000", "--max-loss", "0.05"])) == 0
    assert {r["certificate"] for r in rows(input_n)} == {"yang-margin"}


def test_cli_plan_under_uniform_noise(tmp_path, model_pt2, npz_data, capsys):
    assert main(["plan", "--p-a", "0.9", "--noise", "uniform", "--lam", "0.4", "--n", "100,1000"]) == 0
    out = capsys.readouterr().out
    assert "uniform(lam=0.4)" in out and f"radius at n = inf: {2 * 0.4 * 0.4:.4f}" in out
    run = tmp_path / "yang.tsv"
    assert main(_uniform(certify_args(model_pt2, npz_data, run, "--certificate", "yang"))) == 0
    capsys.readouterr()
    assert main(["plan", "--results", str(run), "--n", "100,300"]) == 0
    assert "uniform(lam=0.4)" in capsys.readouterr().out


def test_cli_plan_refuses_a_two_sided_uniform_run(tmp_path, model_pt2, npz_data, capsys):
    run = tmp_path / "margin.tsv"
    assert main(_uniform(certify_args(model_pt2, npz_data, run))) == 0
    capsys.readouterr()
    line = one_line_error(capsys, main(["plan", "--results", str(run)]))
    assert "certificate 'yang-margin' is not the one-sided" in line and "yang," in line


def test_cli_train_under_uniform_noise_is_reproducible(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    data = tmp_path / "d8.npz"
    np.savez(data, x=(rng.random((30, 1, 8, 8)) * 0.3 + y[:, None, None, None] * 0.3).astype(np.float32), y=y)
    outs = [tmp_path / f"m{i}.pt" for i in range(2)]
    for out in outs:
        assert main(["train", "--arch", "digits-cnn", "--data", f"npz:{data}", "--noise", "uniform",
                     "--lam", str(0.25 * math.sqrt(3)), "--epochs", "2", "--seed", "3", "--out", str(out)]) == 0
    assert "noisy accuracy" in capsys.readouterr().out
    a, b = (torch.load(out, weights_only=True) for out in outs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change,message", [
    (["--noise", "uniform"], "uniform noise needs --lam"),
    (["--noise", "uniform", "--lam", "0.4", "--sigma", "0.25"], "uniform noise takes --lam, not --sigma"),
    (["--noise", "uniform", "--lam", "0.4", "--norm", "l2"], "uniform noise cannot certify the 'l2' norm"),
    (["--noise", "uniform", "--lam", "0.4", "--certificate", "cohen"], "certificate 'cohen' is for gaussian noise"),
    (["--noise", "uniform", "--lam", "-1"], "lam must be a finite number > 0"),
    (["--sigma", "0.25", "--certificate", "yang-margin"], "certificate 'yang-margin' is for uniform noise"),
])
def test_cli_bad_uniform_combinations_are_one_line(tmp_path, model_pt2, npz_data, capsys, change, message):
    args = certify_args(model_pt2, npz_data, tmp_path / "bad.tsv")
    i = args.index("--sigma")
    line = one_line_error(capsys, main(args[:i] + args[i + 2:] + change))
    assert message in line
    assert not (tmp_path / "bad.tsv").exists()
