"""Certified confidence abstains (issue 14): a confidence row reports A (predict = A, correct = [A == label]) only
where the run's own CDF band certifies A as the smoothed soft classifier's top class at radius 0 (lower bound on
E[score_A] > 1/2, or on E[margin_A] > 0); elsewhere predict = -1 and correct = 0, in the Python API, the file,
and `recertify`. Threshold's scores at x0 = 0 are sigmoid(+-2 sigma Z): E = 1/2 for both classes exactly (margin
0), so no class is the top one there and any prediction is a failure; at x0 = 2 class 1 is clearly on top."""
import csv

import numpy as np
import pytest
import torch

from conftest import Threshold, rows, without_time
from smoothcert import Gaussian, Smooth
from smoothcert.bounds import cdf as cdf_bounds
from smoothcert.certificates import ABSTAIN
from smoothcert.data import Dataset
from smoothcert.jobs import confidence_dataset, recertify
from soundness import assert_caught, assert_sound, plan

LEVELS = {"score": [0.3, 0.6], "margin": [-0.5, 0.5]}     # the first lies below the tie: a radius despite abstaining
SIGMA = 0.25


def _data():
    """Two inputs on the tie (labels 0 and 1, so A is one of them) and one clearly of class 1."""
    return Dataset(torch.tensor([[0.0], [0.0], [2.0]]), torch.tensor([0, 1, 1]), ("0", "1"), "threshold")


def _run(path, measure):
    confidence_dataset(Smooth(Threshold(), Gaussian(SIGMA)), _data(), [0, 1, 2], str(path), n0=20, n=300,
                       alpha=0.01, thresholds=LEVELS[measure], measure=measure, batch_size=128, seed=0,
                       progress=False)
    return rows(path)


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_the_api_abstains_unless_a_is_certified_as_the_top_class(measure):
    out = list(Smooth(Threshold(), Gaussian(SIGMA)).confidence(_data().x, 20, 300, 0.01, LEVELS[measure], 128,
                                                               measure=measure, seed=0))
    assert [o.prediction for o in out] == [ABSTAIN, ABSTAIN, 1]
    assert [o.abstained for o in out] == [True, True, False]
    assert all(o.candidate in (0, 1) for o in out) and out[2].candidate == 1
    assert out[0].cdf[0] > 0 and out[1].cdf[0] > 0      # E[measure] > c is certified, A as the top class is not


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_a_confidence_file_writes_minus_one_and_zero_where_nothing_is_certified(tmp_path, measure):
    table = _run(tmp_path / "c.tsv", measure)
    assert [r["predict"] for r in table] == ["-1", "-1", "1"]
    assert [r["correct"] for r in table] == ["0", "0", "1"]
    assert float(table[0][f"cdf@{LEVELS[measure][0]:g}"]) > 0


def _as_before_the_fix(path, out):
    """The file as the writer wrote it before issue 14: predict = A (the largest selection score sum) and correct =
    [A == label] on every row."""
    table = rows(path)
    for r in table:
        sums = [float(item.split(":")[1]) for item in r["scores_selection"].split(",")]
        r["predict"] = str(int(np.argmax(sums)))
        r["correct"] = str(int(r["predict"] == r["label"]))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, list(table[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(table)
    return table


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_recertify_applies_the_same_rule_to_a_confidence_file(tmp_path, measure):
    path = tmp_path / "c.tsv"
    _run(path, measure)
    assert recertify(str(path), None, str(tmp_path / "same.tsv")) == 3
    assert without_time(tmp_path / "same.tsv") == without_time(path)
    old = _as_before_the_fix(path, tmp_path / "old.tsv")
    assert sum(r["correct"] == "1" for r in old) == 2               # the tie row whose label is A counted as correct
    recertify(str(tmp_path / "old.tsv"), None, str(tmp_path / "mended.tsv"), thresholds=[0.45, 0.55])
    table = rows(tmp_path / "mended.tsv")
    assert [r["predict"] for r in table] == ["-1", "-1", "1"]
    assert [r["correct"] for r in table] == ["0", "0", "1"]


def _tie_predictions(measure, reps):
    xs = torch.zeros((reps, 1), dtype=torch.float64)
    out = Smooth(Threshold(), Gaussian(0.5)).confidence(xs, 20, 1000, 0.1, LEVELS[measure][1:], 20_000,
                                                        measure=measure, seed=3)
    return sum(not o.abstained for o in out)       # at the tie no class is on top: every prediction is wrong


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_a_top_class_is_certified_at_a_tie_at_most_alpha_of_the_time(measure):
    p = plan(0.1)
    assert_sound(_tie_predictions(measure, p.reps), p)


def test_sound_harness_catches_the_top_class_decision_without_its_dkw_band(monkeypatch):
    """Negative control: the empirical CDF used as if it were the true one certifies a tie about half the time."""
    real = cdf_bounds.dkw_epsilon
    monkeypatch.setattr(cdf_bounds, "dkw_epsilon", lambda m, alpha, two_sided=False: 1e-6 * real(m, alpha, two_sided))
    p = plan(0.1)
    assert_caught(_tie_predictions("score", p.reps), p)
