"""Sample efficiency through the engine (issue 8): several n in one pass, input-specific n, early stopping at a
target radius, and the single-stage option; their soundness on a classifier whose answer is known exactly."""
import numpy as np
import pytest
import torch
from scipy import stats

from conftest import Threshold, certify_args, rows, without_time
from smoothcert import Gaussian, Smooth
from smoothcert.bounds import sequential
from smoothcert.bounds.binomial import clopper_pearson_lower
from smoothcert.certificates import ABSTAIN
from smoothcert.cli import main
from soundness import assert_caught, assert_sound, plan


def adaptive_args(model, data, out, *extra):
    """certify_args without its fixed --n."""
    args = certify_args(model, data, out, *extra)
    i = args.index("--n")
    return args[:i] + args[i + 2:]


# -- several n in one pass ------------------------------------------------------------------------------------
def test_nested_certificates_equal_separate_runs_at_each_n():
    smooth = Smooth(Threshold(), Gaussian(0.5))
    xs = torch.linspace(-0.3, 0.6, 25).view(25, 1).double()
    ns = [7, 100, 150, 1000]
    nested = list(smooth.certify_nested(xs, 20, ns, 0.01, 64, seed=4))
    for level, n in enumerate(ns):
        alone = list(smooth.certify_many(xs, 20, n, 0.01, 64, seed=4))
        for a, b in zip(nested, alone):
            assert np.array_equal(a[level].counts, b.counts) and np.array_equal(a[level].counts_selection,
                                                                                b.counts_selection)
            assert a[level].radius == b.radius and a[level].prediction == b.prediction


def test_nested_cli_files_equal_separate_runs_byte_for_byte(tmp_path, model_pt2, npz_data):
    assert main(certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--n", "100,300")) == 0
    for n in (100, 300):
        one = tmp_path / f"one_{n}.tsv"
        assert main(certify_args(model_pt2, npz_data, one, "--n", str(n))) == 0
        assert without_time(tmp_path / f"r_n{n}.tsv") == without_time(one)


def test_a_nested_run_interrupted_between_files_resumes_without_loss(tmp_path, model_pt2, npz_data):
    full = tmp_path / "full.tsv"
    assert main(certify_args(model_pt2, npz_data, full, "--n", "100,300")) == 0
    part = tmp_path / "part.tsv"
    assert main(certify_args(model_pt2, npz_data, part, "--n", "100,300", "--max", "5")) == 0
    with open(tmp_path / "part_n300.tsv", "a") as f:            # input 5 reached the first file only...
        f.write("5\t2\t1\t0.1")                                 # ...and half a row of the second
    lines = open(tmp_path / "full_n100.tsv").read().splitlines()
    with open(tmp_path / "part_n100.tsv", "a") as f:
        f.write(lines[6] + "\n")
    assert main(certify_args(model_pt2, npz_data, part, "--n", "100,300")) == 0
    for n in (100, 300):
        assert without_time(tmp_path / f"part_n{n}.tsv") == without_time(tmp_path / f"full_n{n}.tsv")


# -- input-specific n ---------------------------------------------------------------------------------------------
def _failures(certs, margin):
    true_class, true_radius = (1 if margin > 0 else 0), abs(margin)
    return sum(c.prediction != ABSTAIN and (c.prediction != true_class or c.radius > true_radius * (1 + 1e-12))
               for c in certs)


@pytest.mark.parametrize("p_a", [0.52, 0.9])
def test_input_specific_n_is_sound(p_a):
    """The selection samples choose n; fresh samples bound pA: wrong claims stay <= alpha (near a tie the
    selection picks either class; at 0.9 it picks n small or large depending on the pilot count)."""
    sigma, alpha = 0.5, 0.05
    p = plan(alpha)
    margin = sigma * stats.norm.ppf(p_a)
    xs = torch.full((p.reps, 1), margin, dtype=torch.float64)
    certs = list(Smooth(Threshold(), Gaussian(sigma)).certify_input_n(xs, 20, 1000, alpha, 5000, max_loss=0.05,
                                                                      seed=1))
    assert len({c.samples for c in certs}) > 1 or p_a < 0.6         # n does vary with the pilot counts
    assert_sound(_failures(certs, margin), p)


def test_input_specific_n_writes_the_samples_it_used_and_recertifies(tmp_path, model_pt2, npz_data):
    out = tmp_path / "r.tsv"
    assert main(adaptive_args(model_pt2, npz_data, out, "--n-max", "2000", "--max-loss", "0.02")) == 0
    table = rows(out)
    assert all(int(r["samples"]) <= 2000 and r["n"] == "2000" and r["mode"].startswith("input-n") for r in table)
    assert all(sum(int(kv.split(":")[1]) for kv in r["counts"].split(",")) == int(r["samples"]) for r in table)
    again = tmp_path / "again.tsv"
    assert main(["recertify", str(out), "--certificate", "cohen", "--out", str(again)]) == 0
    assert [r["radius"] for r in rows(again)] == [r["radius"] for r in table]


# -- early stopping at a target radius ----------------------------------------------------------------------------
def _target_failures(p_a, r0, sigma, alpha, reps, seed, n_max=3000, futility="upper"):
    """Run certify_target on the threshold classifier at pA; count wrong claims (a radius beyond the true one,
    in particular 'certified at r0' when the true radius is below r0). Returns (failures, certified, samples)."""
    margin = sigma * stats.norm.ppf(p_a)
    xs = torch.full((reps, 1), margin, dtype=torch.float64)
    certs = list(Smooth(Threshold(), Gaussian(sigma)).certify_target(xs, 20, r0, n_max, alpha, 20_000, seed=seed,
                                                                     futility=futility))
    certified = sum(c.radius >= r0 for c in certs)
    return _failures(certs, margin), certified, np.mean([c.samples for c in certs])


@pytest.mark.parametrize("gap", [0.02, 0.002])
def test_early_stopping_just_below_the_target_is_sound(gap):
    """The hardest case: the true radius sits just below r0, so every 'certified at r0' is wrong."""
    sigma, r0, alpha = 0.5, 0.5, 0.05
    p_a = stats.norm.cdf(r0 / sigma) - gap
    p = plan(alpha)
    fails, certified, _ = _target_failures(p_a, r0, sigma, alpha, p.reps, seed=2)
    assert_sound(fails, p)
    assert certified <= fails                       # each certification at r0 here is a failure, counted above


def test_early_stopping_saves_samples_where_the_answer_is_clear():
    sigma, r0, alpha = 0.5, 0.25, 0.01
    fails, certified, mean = _target_failures(0.999, r0, sigma, alpha, 200, seed=3, n_max=100_000)
    assert certified == 200 and mean <= 300 and fails == 0
    _, certified, mean = _target_failures(0.55, r0, sigma, alpha, 200, seed=4, n_max=100_000)
    assert certified == 0 and mean <= 300                                   # hopeless: futility stops it early


def test_sound_harness_catches_a_fixed_n_bound_rechecked_after_every_round(monkeypatch):
    """Negative control: Clopper-Pearson at the full alpha at every look (no split over the looks)."""
    monkeypatch.setattr(sequential.UnionBound, "lower", lambda self, k, t: clopper_pearson_lower(k, t, self.alpha))
    sigma, r0, alpha = 0.5, 0.5, 0.05
    p = plan(alpha)
    fails, _, _ = _target_failures(stats.norm.cdf(r0 / sigma) - 0.002, r0, sigma, alpha, p.reps, seed=2,
                                   futility="none")
    assert_caught(fails, p)


def test_target_cli_radius_marks_the_decision_and_recertify_refuses_it(tmp_path, model_pt2, npz_data, capsys):
    out = tmp_path / "r.tsv"
    assert main(adaptive_args(model_pt2, npz_data, out, "--n-max", "5000", "--target-radius", "0.2")) == 0
    table = rows(out)
    assert all(r["mode"].startswith("target:r0=0.2") and 1 <= int(r["samples"]) <= 5000 for r in table)
    full = tmp_path / "full.tsv"
    assert main(adaptive_args(model_pt2, npz_data, full, "--n-max", "5000", "--target-radius", "0.2", "--max",
                              "4")) == 0
    assert main(adaptive_args(model_pt2, npz_data, full, "--n-max", "5000", "--target-radius", "0.2")) == 0
    assert without_time(full) == without_time(out)                     # resumed = uninterrupted
    capsys.readouterr()
    assert main(["recertify", str(out), "--certificate", "margin", "--out", str(tmp_path / "x.tsv")]) == 2
    assert "early stopping" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--n-max", "100"], "--max-loss"), (["--max-loss", "0.1"], "needs --n-max"),
    (["--n-max", "100", "--max-loss", "0.1", "--target-radius", "0.2"], "one of"),
    (["--n", "100,100"], "repeats"), (["--n0", "0"], "n0"), (["--n", "100", "--n-max", "100"], "--n goes with"),
    (["--n-max", "100", "--target-radius", "0.2", "--certificate", "margin"], "one-sided"),
])
def test_bad_mode_settings_give_one_line(tmp_path, model_pt2, npz_data, capsys, extra, message):
    make = certify_args if "--n" in extra else adaptive_args
    assert main(make(model_pt2, npz_data, tmp_path / "r.tsv", *extra)) == 2
    assert message in capsys.readouterr().err


# -- the single-stage option --------------------------------------------------------------------------------------
def test_single_stage_fails_near_ties_about_twice_alpha_but_label_claims_stay_sound():
    """002's Alg. 1 picks the class on the samples that bound it: near a tie either class's count can come out
    largest and be certified, so wrong claims reach ~2 alpha. The claims about the label (here class 1, the true
    top class, fixed before sampling) stay within alpha. Measured here and documented in the README."""
    sigma, alpha = 1.0, 0.05
    p = plan(alpha)
    margin = sigma * stats.norm.ppf(0.5 + 1e-4)
    xs = torch.full((p.reps, 1), margin, dtype=torch.float64)
    certs = list(Smooth(Threshold(), Gaussian(sigma)).certify_many(xs, 0, 100, alpha, 20_000, seed=7,
                                                                    certificate="single-stage"))
    wrong = _failures(certs, margin)
    label_claims = sum(c.prediction == 1 and c.radius > margin * (1 + 1e-12) for c in certs)
    assert_sound(label_claims, p)
    assert_caught(wrong, p)                         # the predicted class's claims fail at ~2 alpha


def test_the_python_api_refuses_a_certificate_that_early_stopping_would_ignore(tmp_path):
    from smoothcert.data import Dataset
    from smoothcert.errors import SmoothcertError
    from smoothcert.jobs import certify_dataset
    data = Dataset(torch.full((2, 1), 0.3), torch.tensor([1, 1]), (), "threshold")
    with pytest.raises(SmoothcertError, match="not margin"):
        certify_dataset(Smooth(Threshold(), Gaussian(1.0)), data, [0, 1], str(tmp_path / "r.tsv"), n0=10, n=100,
                        alpha=0.01, batch_size=100, certificate="margin", n_max=1000, target_radius=0.1,
                        progress=False)
    assert not (tmp_path / "r.tsv").exists()
