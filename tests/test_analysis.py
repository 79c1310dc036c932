"""Tests for smoothcert.analysis and `smoothcert analyze`: loading certify and predict TSVs (ours and Cohen et
al.'s), certified accuracy, ACR, intervals (exact values and soundness), tables, plots, summarize and exports."""
import json
import os
import pydoc
import sys
from dataclasses import replace

import matplotlib.image
import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import binom

import smoothcert
import smoothcert.analysis
from conftest import Threshold
from smoothcert import Gaussian, Smooth
from smoothcert.analysis import (Results, Summary, abstain_rate, average_certified_radius, certified_accuracy,
                                 certified_accuracy_interval, export_csv, export_dataframe, export_json,
                                 format_table, load_results, plot_certified_accuracy, plot_figure, radius_grid,
                                 summarize, summary_table)
from smoothcert.bounds import clopper_pearson_lower, clopper_pearson_upper
from smoothcert.cli import main
from smoothcert.errors import SmoothcertError
from soundness import assert_caught, assert_sound, plan

COHEN_HEADER = ["idx", "label", "predict", "radius", "correct", "time"]
EXTRA_HEADER = ["noise", "scale", "certificate", "norm", "alpha", "n0", "n", "seed", "pA_lower", "num_classes",
                "counts_selection", "counts"]
# idx label predict radius correct: two abstains, one wrong prediction with a positive radius,
# one correct prediction with radius 0, two rows exactly at r = 0.25.
TABLE = [(0, 1, 1, 0.5, 1), (1, 2, 2, 0.25, 1), (2, 3, -1, 0.0, 0), (3, 4, 5, 0.8, 0),
         (4, 0, 0, 0.0, 1), (5, 6, -1, 0.0, 0), (6, 7, 7, 1.2, 1), (7, 8, 8, 0.25, 1)]


def write_cohen(path, table=TABLE):
    lines = ["\t".join(COHEN_HEADER)]
    lines += [f"{i}\t{y}\t{p}\t{r}\t{c}\t0:00:01.234567" for i, y, p, r, c in table]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_smoothcert(path, table=TABLE, alpha=0.001, scale=0.25, norm="l2", noise="gaussian", certificate="cohen"):
    lines = ["\t".join(COHEN_HEADER + EXTRA_HEADER)]
    for i, y, p, r, c in table:
        extra = [noise, str(scale), certificate, norm, str(alpha), "100", "1000", "0", "0.61", "10",
                 "0,90,0,0,0,0,0,0,10,0", "1,880,0,0,0,0,0,0,119,0"]
        lines.append("\t".join([str(i), str(y), str(p), str(r), str(c), "0:00:00.5"] + extra))
    path.write_text("\n".join(lines) + "\n")
    return path


def renumber(table):
    """The table repeated rows with fresh, distinct idx values."""
    return [(i, y, p, r, c) for i, (_, y, p, r, c) in enumerate(table)]


@pytest.fixture
def cohen(tmp_path):
    return load_results(write_cohen(tmp_path / "cohen_run.tsv"))


@pytest.fixture
def ours(tmp_path):
    return load_results(write_smoothcert(tmp_path / "ours.tsv"))


def test_load_cohen_file(cohen, tmp_path):
    assert cohen.name == "cohen_run" and cohen.alpha is None and cohen.n == 8
    assert cohen.path == str(tmp_path / "cohen_run.tsv")
    np.testing.assert_array_equal(cohen.predict, [1, 2, -1, 5, 0, -1, 7, 8])
    np.testing.assert_allclose(cohen.radius, [0.5, 0.25, 0, 0.8, 0, 0, 1.2, 0.25])
    with pytest.raises(ValueError):
        cohen.radius[0] = 3.0        # arrays are read-only


def test_load_smoothcert_file(ours):
    assert ours.name == "cohen σ=0.25 l2" and ours.alpha == pytest.approx(0.001)
    np.testing.assert_array_equal(ours.correct, [1, 1, 0, 0, 1, 0, 1, 1])


def test_certified_accuracy_hand_computed(cohen, ours):
    radii = [0.0, 0.25, 0.5, 1.0, 1.2, 1.5]
    expected = [5 / 8, 4 / 8, 2 / 8, 1 / 8, 1 / 8, 0.0]   # the wrong row at 0.8 never counts
    for res in (cohen, ours):
        np.testing.assert_allclose(certified_accuracy(res, radii), expected)
    assert certified_accuracy(cohen, 0.25) == pytest.approx(0.5)          # rows exactly at r count (>=)
    assert certified_accuracy(cohen, 0.25 + 1e-9) == pytest.approx(0.25)
    assert average_certified_radius(cohen) == pytest.approx((0.5 + 0.25 + 1.2 + 0.25) / 8)
    assert abstain_rate(cohen) == pytest.approx(0.25)


def test_interval_without_alpha_is_plain_clopper_pearson(cohen):
    cohen = replace(cohen, rounded=False)               # as if its radii were exact (not rounded to 3 digits)
    lo, hi = certified_accuracy_interval(cohen, 0.25, confidence=0.95)
    assert lo == pytest.approx(clopper_pearson_lower(4, 8, 0.025))
    assert hi == pytest.approx(clopper_pearson_upper(4, 8, 0.025))
    assert 0 <= lo < 0.5 < hi <= 1


def test_interval_with_alpha_lowers_only_the_lower_end(cohen, ours):
    cohen = replace(cohen, rounded=False)
    for r in (0.0, 0.25, 0.5, 1.5):
        lo_c, hi_c = certified_accuracy_interval(cohen, r)
        lo, hi = certified_accuracy_interval(ours, r)
        point = certified_accuracy(ours, r)
        assert 0 <= lo <= point <= hi <= 1
        assert hi == pytest.approx(hi_c)
        assert lo < lo_c or lo_c == 0


def test_interval_alpha_correction_subtracts_binomial_quantile(tmp_path):
    res = load_results(write_smoothcert(tmp_path / "big.tsv", renumber(TABLE * 50), alpha=0.05))  # N=400, k=200
    q = binom.ppf(1 - 0.0125, 400, 0.05)
    assert q > 0
    lo, hi = certified_accuracy_interval(res, 0.25, confidence=0.95)
    assert lo == pytest.approx(clopper_pearson_lower(200 - int(q), 400, 0.0125))
    assert hi == pytest.approx(clopper_pearson_upper(200, 400, 0.025))
    assert lo < clopper_pearson_lower(200, 400, 0.025) < 0.5 < hi


def test_interval_narrows_with_more_rows(tmp_path):
    small = load_results(write_smoothcert(tmp_path / "small.tsv", TABLE))
    large = load_results(write_smoothcert(tmp_path / "large.tsv", renumber(TABLE * 20)))
    for r in (0.0, 0.25, 0.5):
        (a, b), (c, d) = certified_accuracy_interval(small, r), certified_accuracy_interval(large, r)
        assert d - c < b - a
        assert c <= certified_accuracy(large, r) <= d


def test_interval_extremes_stay_in_unit_interval(tmp_path):
    all_right = load_results(write_smoothcert(tmp_path / "a.tsv", [(i, 0, 0, 1.0, 1) for i in range(5)]))
    assert certified_accuracy_interval(all_right, 0.5)[1] == 1.0
    assert certified_accuracy_interval(all_right, 2.0) == (0.0, pytest.approx(clopper_pearson_upper(0, 5, 0.025)))
    with pytest.raises(SmoothcertError):
        certified_accuracy_interval(all_right, 0.5, confidence=1.5)


def test_summary_table(cohen, ours):
    text = summary_table([cohen, ours], [0.25, 0.5, 1.0])
    lines = text.splitlines()
    assert "acc@0" in lines[0] and "r=0.25" in lines[0] and "r=0.5" in lines[0] and "r=1" in lines[0]
    assert "ACR" in lines[0] and "CI@r=0.25" in lines[0]
    for name, res in (("cohen_run", cohen), ("cohen σ=0.25", ours)):
        row = next(line for line in lines if line.startswith(name + " "))
        lo, hi = certified_accuracy_interval(res, 0.25)
        for piece in (" 8 ", "62.5", "50.0", "25.0", "12.5", "0.275", f"[{lo * 100:.1f}, {hi * 100:.1f}]"):
            assert piece in row, (piece, row)
    assert len({len(line) for line in lines[:4]}) == 1     # fixed width
    with pytest.raises(SmoothcertError):
        summary_table([], [0.5])


def test_plot_writes_png(tmp_path, cohen, ours):
    out = tmp_path / "curves.png"
    assert plot_certified_accuracy([cohen, ours], out, title="test") == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (480, 720)                   # 6x4 inches at 120 dpi
    assert image[..., :3].std() > 0.01                     # not blank
    assert sorted(os.listdir(tmp_path)) == ["cohen_run.tsv", "curves.png", "ours.tsv"]   # no temp file left
    plot_certified_accuracy([cohen], out, max_radius=0.5)  # overwrite in place
    assert matplotlib.image.imread(out).shape[:2] == (480, 720)


def test_plot_errors_leave_no_file(tmp_path, cohen):
    with pytest.raises(SmoothcertError, match="does not exist"):
        plot_certified_accuracy([cohen], tmp_path / "nope" / "x.png")
    with pytest.raises(SmoothcertError, match="max_radius"):
        plot_certified_accuracy([cohen], tmp_path / "x.png", max_radius=-1)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("text, match", [
    ("", "empty file"),
    ("idx\tlabel\tpredict\tradius\ttime\n0\t1\t1\t1\t0:00:01\n", "missing column.*correct"),
    ("idx\tlabel\tpredict\tradius\tcorrect\n", "no result rows"),
    ("idx\tlabel\tpredict\tradius\tcorrect\n0\t1\t1\t0.5\t1\n1\t1\t1\t0.5\t1\n2\t1\t1\tabc\t1\n",
     r"line 4.*radius.*'abc'"),
    ("idx\tlabel\tpredict\tradius\tcorrect\n0\t1\t1\t-0.5\t1\n", r"line 2.*radius.*>= 0"),
    ("idx\tlabel\tpredict\tradius\tcorrect\n0\t1\t1\tnan\t1\n", r"line 2.*radius.*NaN"),
    ("idx\tlabel\tpredict\tradius\tcorrect\n0\t1\t1\t0.5\t2\n", r"line 2.*correct must be 0 or 1"),
    ("idx\tlabel\tpredict\tradius\tcorrect\n0\tcat\t1\t0.5\t1\n", r"line 2.*label"),
    ("idx\tlabel\tpredict\tradius\tcorrect\n0\t1\t1\t0.5\n", r"line 2.*expected 5 fields"),
    ("idx\tlabel\tpredict\tradius\tcorrect\talpha\n0\t1\t1\t0.5\t1\tx\n", r"line 2.*alpha"),
])
def test_bad_files_raise(tmp_path, text, match):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(SmoothcertError, match=match) as info:
        load_results(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_raises(tmp_path):
    with pytest.raises(SmoothcertError, match="cannot read") as info:
        load_results(tmp_path / "absent.tsv")
    assert "absent.tsv" in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Validation: duplicated inputs and `correct` that contradicts predict/label (issue 6.5)

def cli(capsys, *args):
    """Run `smoothcert analyze ARGS`; return (exit code, stdout, stderr)."""
    code = main(["analyze", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *pieces):
    assert code == 2 and err.count("\n") == 1 and err.startswith("smoothcert analyze: error: "), err
    for piece in pieces:
        assert piece in err, (piece, err)


def test_duplicate_idx_refused_with_both_lines_unless_allowed(tmp_path, capsys):
    table = [(i, 0, 0, 1.0, 1) for i in range(20)] + [(3, 0, 0, 1.0, 1)]       # input 3 twice: line 22 and line 5
    path = write_cohen(tmp_path / "dup.tsv", table)
    with pytest.raises(SmoothcertError, match=r"line 22: input idx 3 appears again \(first at .*line 5\)"):
        load_results(path)
    assert load_results(path, allow_duplicates=True).n == 21
    code, out, err = cli(capsys, path)
    assert_one_line_error(code, err, "dup.tsv, line 22", "line 5", "idx 3")
    assert out == ""
    code, out, err = cli(capsys, path, "--allow-duplicates")
    assert code == 0 and " 21 " in out


@pytest.mark.parametrize("row, why", [((0, 3, 3, 0.5, 0), "predict is 3 and label 3"),
                                      ((0, 3, 4, 0.5, 1), "predict is 4 and label 3"),
                                      ((0, 3, -1, 0.0, 1), "predict is -1 and label 3")])
def test_correct_must_agree_with_predict_and_label(tmp_path, capsys, row, why):
    path = write_cohen(tmp_path / "c.tsv", TABLE + [(99,) + row[1:]])
    with pytest.raises(SmoothcertError, match=r"line 10: correct is \d but " + why):
        load_results(path)
    assert_one_line_error(*cli(capsys, path)[::2], "c.tsv, line 10")


# ---------------------------------------------------------------------------------------------------------------
# Names, labels, alpha, norms (issue 6.8)

def cohen_tree(tmp_path, sigmas=("0.25", "0.50")):
    """Cohen et al.'s layout: noise_S/test/sigma_0.50 for each training noise S."""
    paths = []
    for s in sigmas:
        (tmp_path / f"noise_{s}" / "test").mkdir(parents=True)
        paths.append(write_cohen(tmp_path / f"noise_{s}" / "test" / "sigma_0.50"))
    return paths


def test_names_keep_dots_and_use_settings_then_path(tmp_path):
    assert load_results(write_cohen(tmp_path / "sigma_0.50")).name == "sigma_0.50"
    assert load_results(write_cohen(tmp_path / "sigma_0.50.tsv")).name == "sigma_0.50"
    assert load_results(write_cohen(tmp_path / "run.txt")).name == "run"
    assert load_results(write_smoothcert(tmp_path / "x.tsv", noise="laplace", scale=0.177, norm="l1",
                                         certificate="teng")).name == "teng λ=0.177 l1"
    text = summary_table([load_results(p) for p in cohen_tree(tmp_path)], [0.5])
    assert "sigma_0.50 (noise_0.25)" in text and "sigma_0.50 (noise_0.50)" in text


def test_names_of_the_same_file_twice_are_numbered(tmp_path):
    res = load_results(write_smoothcert(tmp_path / "a.tsv"))
    lines = summary_table([res, res], [0.5]).splitlines()
    assert lines[2].startswith("cohen σ=0.25 l2 #1 ") and lines[3].startswith("cohen σ=0.25 l2 #2 ")


def test_label_overrides_names_one_per_file(tmp_path, capsys):
    a, b = cohen_tree(tmp_path)
    code, out, _ = cli(capsys, a, b, "--label", "train 0.25", "--label", "train 0.50", "--radii", "0.5")
    assert code == 0 and out.splitlines()[2].startswith("train 0.25 ") and out.splitlines()[3].startswith("train 0.50")
    assert_one_line_error(*cli(capsys, a, b, "--label", "only one")[::2], "--label given 1 times for 2 files")


def test_alpha_option_corrects_the_interval_of_files_without_alpha(tmp_path, capsys):
    table = renumber(TABLE * 50)
    plain = replace(load_results(write_cohen(tmp_path / "c.tsv", table), alpha=0.05), rounded=False)
    ours = load_results(write_smoothcert(tmp_path / "o.tsv", table, alpha=0.05))
    assert plain.alpha == 0.05
    assert certified_accuracy_interval(plain, 0.25) == certified_accuracy_interval(ours, 0.25)
    assert load_results(tmp_path / "o.tsv", alpha=0.2).alpha == 0.05              # the file's own column wins
    code, out, _ = cli(capsys, tmp_path / "c.tsv")
    assert "alpha unknown for c" in out
    code, out, _ = cli(capsys, tmp_path / "c.tsv", "--alpha", "0.05")
    lo, hi = certified_accuracy_interval(load_results(tmp_path / "c.tsv", alpha=0.05), 0.25)
    assert f"[{lo * 100:.1f}, {hi * 100:.1f}]" in out and "alpha unknown" not in out
    assert_one_line_error(*cli(capsys, tmp_path / "c.tsv", "--alpha", "1.5")[::2], "alpha must be in (0, 1)")


def test_norms(tmp_path):
    assert load_results(write_cohen(tmp_path / "c.tsv")).norm == "l2"       # Cohen et al.'s: Gaussian, l2
    assert load_results(write_smoothcert(tmp_path / "l1.tsv", norm="l1")).norm == "l1"
    text = (tmp_path / "l1.tsv").read_text().splitlines()
    (tmp_path / "mixed.tsv").write_text("\n".join(text[:3] + [text[3].replace("\tl1\t", "\tl2\t")]) + "\n")
    with pytest.raises(SmoothcertError, match="different norms"):
        load_results(tmp_path / "mixed.tsv")


# ---------------------------------------------------------------------------------------------------------------
# The table: radii, acc@0, interval radius, formats, rounded radii (issue 6.8)

def test_radius_grid_is_inclusive_and_exact():
    assert radius_grid(0.25, 1.5, 0.25) == (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    grid = radius_grid(0, 1, 0.1)
    assert len(grid) == 11 and grid[3] == 0.3 and grid[-1] == 1.0         # not 0.30000000000000004
    for bad in [(1, 0, 0.1), (0, 1, 0), (-1, 1, 0.5), (0, float("nan"), 0.1), (0, 1e6, 1e-3)]:
        with pytest.raises(SmoothcertError):
            radius_grid(*bad)


def test_cli_radii_grid_counts_rows_exactly_at_a_grid_radius(tmp_path, capsys):
    path = write_cohen(tmp_path / "c.tsv", [(0, 1, 1, 0.3, 1), (1, 1, 1, 0.29, 1)])
    code, out, _ = cli(capsys, path, "--radii-grid", "0", "0.3", "0.1")
    assert code == 0 and out.splitlines()[0].split()[2:6] == ["r=0", "r=0.1", "r=0.2", "r=0.3"]
    assert out.splitlines()[2].split()[2:6] == ["100.0", "100.0", "100.0", "50.0"]
    assert_one_line_error(*cli(capsys, path, "--radii", "0.5", "--radii-grid", "0", "1", "0.5")[::2], "not both")
    assert_one_line_error(*cli(capsys, path, "--radii-grid", "1", "0", "0.5")[::2], "START <= STOP")
    assert_one_line_error(*cli(capsys, path, "--radii", "-0.5")[::2], ">= 0")


def test_acc_at_zero_only_when_zero_is_not_a_table_radius(cohen):
    with_zero = summary_table([cohen], [0, 0.5]).splitlines()[0].split()
    assert "acc@0" not in with_zero and with_zero.count("r=0") == 1
    without = summary_table([cohen], [0.5]).splitlines()
    assert without[0].split()[2:4] == ["acc@0", "r=0.5"] and without[2].split()[2:4] == ["62.5", "25.0"]


def test_interval_at_a_chosen_radius(tmp_path, ours, capsys):
    s = Summary.of(ours, [0, 0.25, 0.5], ci_radius=0.5)
    assert s.ci_radius == 0.5 and s.interval == certified_accuracy_interval(ours, 0.5)
    assert Summary.of(ours, [0, 0.25, 0.5]).ci_radius == 0.25                  # default: first positive radius
    assert Summary.of(ours, [0]).ci_radius == 0.0
    code, out, _ = cli(capsys, ours.path, "--ci-radius", "1.2", "--confidence", "0.9")
    lo, hi = certified_accuracy_interval(ours, 1.2, confidence=0.9)
    assert "90% CI@r=1.2" in out and f"[{lo * 100:.1f}, {hi * 100:.1f}]" in out
    assert_one_line_error(*cli(capsys, ours.path, "--confidence", "2")[::2], "confidence")


def two_runs(tmp_path):
    a = write_cohen(tmp_path / "a.tsv", [(0, 1, 1, 0.5, 1), (1, 1, 1, 0.3, 1), (2, 1, 0, 0.9, 0), (3, 1, 1, 2.0, 1)])
    b = write_cohen(tmp_path / "b.tsv", [(0, 1, 1, 0.6, 1), (1, 1, 1, 0.1, 1), (2, 1, 1, 0.9, 1), (3, 1, 0, 0.9, 0)])
    return [load_results(a), load_results(b)]
    # certified accuracy at 0, 0.5, 1, 3:  a 75 50 25 0;  b 75 50 0 0


def test_markdown_bolds_the_best_per_radius_ties_all_and_not_zeros(tmp_path):
    lines = summary_table(two_runs(tmp_path), [0, 0.5, 1, 3], fmt="markdown").splitlines()
    assert lines[0].startswith("| name | N | r=0 | r=0.5 | r=1 | r=3 | ACR |") and lines[1].startswith("|:---|---:|")
    assert lines[2].startswith("| a | 4 | **75.0** | **50.0** | **25.0** | 0.0 | ")
    assert lines[3].startswith("| b | 4 | **75.0** | **50.0** | 0.0 | 0.0 | ")
    assert "**" not in summary_table(two_runs(tmp_path)[:1], [0, 0.5], fmt="markdown")   # one row: nothing to beat
    assert "**" not in summary_table(two_runs(tmp_path), [0, 0.5])                      # text: no markup


def test_latex_table(tmp_path):
    a, b = two_runs(tmp_path)
    text = summary_table([a, Results(**{**vars(b), "name": "σ=0.5 & 50%_x"})], [0.5, 1], fmt="latex")
    lines = text.splitlines()
    assert lines[:4] == [r"\begin{tabular}{lrrrrrrr}", r"\toprule",
                         r"name & N & acc@0 & $r = 0.5$ & $r = 1$ & ACR & abstain & 95\% CI at $r = 0.5$ \\",
                         r"\midrule"]
    assert lines[4].startswith(r"a & 4 & \textbf{75.0} & \textbf{50.0} & \textbf{25.0} & ")
    assert lines[5].startswith(r"$\sigma$=0.5 \& 50\%\_x & 4 & \textbf{75.0} & \textbf{50.0} & 0.0 & ")
    assert lines[6:8] == [r"\bottomrule", r"\end{tabular}"]
    assert all(line.startswith("% ") for line in lines[9:])                     # notes as comments


def test_unknown_format_refused(cohen):
    with pytest.raises(SmoothcertError, match="unknown table format"):
        summary_table([cohen], [0.5], fmt="html")


def test_rounded_radii_note_with_the_possible_overstatement(tmp_path, capsys):
    # 3 significant digits, as Cohen et al. print them: 1.0 may stand for 0.9996, 0.5 for 0.4996
    table = [(0, 1, 1, 1.0, 1), (1, 1, 1, 0.5, 1), (2, 1, 1, 1.01, 1), (3, 1, 1, 0.0123, 1), (4, 1, -1, 0.0, 0)]
    path = write_cohen(tmp_path / "sigma_0.50", table)
    assert load_results(path).rounded
    out = cli(capsys, path, "--radii", "0.25", "1")[1]
    note = [line for line in out.splitlines() if "rounded" in line]
    # at r = 1 only the row printed 1.0 may fall short (1.01 stands for >= 1.005): 1 of 5 rows = 20 points
    assert len(note) == 1 and "sigma_0.50" in note[0] and "up to 20.0 points (sigma_0.50 at r=1)" in note[0]
    assert "not at this table's radii" in cli(capsys, path, "--radii", "0.25", "0.75")[1]
    assert not load_results(write_smoothcert(tmp_path / "ours.tsv", table)).rounded     # alpha column: ours
    assert not load_results(write_cohen(tmp_path / "full.tsv", [(0, 1, 1, 0.123456789, 1)])).rounded
    assert "rounded" not in cli(capsys, tmp_path / "ours.tsv")[1]


def test_interval_of_rounded_radii_counts_each_at_its_least_and_most(tmp_path):
    # printed 1.0 stands for [0.9995, 1.005), 0.998 for [0.9975, 0.9985), 1.01 for [1.005, 1.015)
    table = [(0, 1, 1, 1.0, 1), (1, 1, 1, 0.998, 1), (2, 1, 1, 1.01, 1), (3, 1, -1, 0.0, 0)]
    res = load_results(write_cohen(tmp_path / "c.tsv", table))
    assert res.rounded
    exact = replace(res, rounded=False)
    for r, k_low, k_high in ((1.0, 1, 2), (0.999, 2, 2), (1.004, 1, 2), (0.9996, 1, 2), (0.9995, 2, 2),
                             (0.9986, 2, 2), (0.9984, 2, 3), (0.997, 3, 3)):
        assert certified_accuracy(res, r) == certified_accuracy(exact, r)            # the table: as printed
        lo, hi = certified_accuracy_interval(res, r, 0.9)
        assert lo == pytest.approx(clopper_pearson_lower(k_low, 4, 0.05))
        assert hi == pytest.approx(clopper_pearson_upper(k_high, 4, 0.05))


# ---------------------------------------------------------------------------------------------------------------
# Predict files (issue 7.5)

PREDICT_HEADER = ["idx", "label", "predict", "correct", "time", "noise", "scale", "alpha", "n", "seed", "pvalue",
                  "num_classes", "counts"]


def write_predict(path, rows, alpha=0.001):
    lines = ["\t".join(PREDICT_HEADER)] + [
        "\t".join(map(str, [i, y, p, int(p == y), "0:00:00.1", "gaussian", 0.25, alpha, 1000, 0, 0.001, 10, "1:1000"]))
        for i, (y, p) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_predict_files_give_accuracy_abstain_and_interval(tmp_path, capsys, ours):
    rows = [(1, 1)] * 6 + [(2, -1)] * 3 + [(3, 4)]                  # 6 right, 3 abstain, 1 wrong
    res = load_results(write_predict(tmp_path / "p.tsv", rows))
    assert res.kind == "predict" and res.radius is None and res.name == "predict σ=0.25 n=1000" and res.alpha == 0.001
    s = Summary.of(res)
    assert (s.accuracy, s.abstain_rate, s.acr, s.certified_accuracy) == (0.6, 0.3, None, {})
    assert s.interval == certified_accuracy_interval(res, 0.0)
    with pytest.raises(SmoothcertError, match="predict results have no radii"):
        certified_accuracy(res, 0.5)
    cohen_predict = tmp_path / "N_100"                               # Cohen et al.'s predict files: 5 columns
    cohen_predict.write_text("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0.5\n20\t2\t-1\t0\t0.5\n")
    assert load_results(cohen_predict).name == "N_100"
    code, out, _ = cli(capsys, ours.path, tmp_path / "p.tsv", cohen_predict)
    tables = out.split("\n\n")
    assert code == 0 and "ACR" in tables[0] and "predict σ=0.25" not in tables[0]
    assert tables[1].splitlines()[0].split() == ["name", "N", "accuracy", "abstain", "95%", "CI"]
    lo, hi = s.interval
    assert f"predict σ=0.25 n=1000  10      60.0     30.0  [{lo * 100:.1f}, {hi * 100:.1f}]" in tables[1]
    assert "N_100" in tables[1]


def test_plot_leaves_predict_files_out(tmp_path, capsys, ours):
    p = write_predict(tmp_path / "p.tsv", [(1, 1)])
    code, out, _ = cli(capsys, ours.path, p, "--plot", tmp_path / "x.png")
    assert code == 0 and "predict files left out: predict σ=0.25 n=1000" in out
    assert_one_line_error(*cli(capsys, p, "--plot", tmp_path / "y.png")[::2], "predict files have no radii")
    assert not (tmp_path / "y.png").exists()


# ---------------------------------------------------------------------------------------------------------------
# Plots (issues 6.7, 6.8, 7.3, 7.11)

@pytest.mark.parametrize("ext, magic", [("pdf", b"%PDF"), ("svg", b"<?xml"), ("eps", b"%!PS-Adobe-3.0 EPSF"),
                                        ("ps", b"%!PS-Adobe"), ("PNG", b"\x89PNG")])
def test_plot_format_follows_the_extension(tmp_path, cohen, ext, magic):
    out = tmp_path / f"curves.{ext}"
    plot_certified_accuracy([cohen], out)
    assert out.read_bytes().startswith(magic)
    if ext == "svg":
        assert b"<svg" in out.read_bytes()


def test_plot_unknown_extension_refused(tmp_path, cohen, capsys):
    for name in ("curves.jpg", "curves"):
        with pytest.raises(SmoothcertError, match="unknown plot format"):
            plot_certified_accuracy([cohen], tmp_path / name)
    code, out, err = cli(capsys, cohen.path, "--plot", tmp_path / "c.gif")
    assert_one_line_error(code, err, "unknown plot format 'gif'", ".png, .pdf, .svg, .eps, .ps")
    assert out == "" and sorted(os.listdir(tmp_path)) == ["cohen_run.tsv"]


def test_plot_to_a_directory_or_a_link_to_one_is_refused_and_the_link_kept(tmp_path, cohen, capsys):
    (tmp_path / "dir").mkdir()
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "dir")
    for target in (link, tmp_path / "dir"):
        code, _, err = cli(capsys, cohen.path, "--plot", target)
        assert_one_line_error(code, err, str(target), "directory")
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "dir") and os.listdir(tmp_path / "dir") == []


def test_plot_through_a_link_to_a_file_keeps_the_link(tmp_path, cohen):
    (tmp_path / "real.pdf").write_bytes(b"old")
    link = tmp_path / "link.pdf"
    link.symlink_to(tmp_path / "real.pdf")
    plot_certified_accuracy([cohen], link)
    assert link.is_symlink() and (tmp_path / "real.pdf").read_bytes().startswith(b"%PDF")


def test_plot_that_fails_to_save_leaves_the_old_file(tmp_path, cohen, monkeypatch):
    from matplotlib.figure import Figure
    out = tmp_path / "c.png"
    out.write_bytes(b"old")

    def broken(self, path, **kwargs):
        open(path, "wb").write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(SmoothcertError, match="cannot write plot.*disk full"):
        plot_certified_accuracy([cohen], out)
    assert out.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["c.png", "cohen_run.tsv"]


def test_plot_figure_styles_norm_label_and_max_radius(tmp_path, cohen, ours):
    runs = [load_results(write_smoothcert(tmp_path / f"r{i}.tsv", scale=s)) for i, s in enumerate((0.12, 0.25, 0.5))]
    fig = plot_figure([cohen] + runs, max_radius=0.8, title="CIFAR-10")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4 and ax.get_xlabel() == "ℓ2 radius" and ax.get_xlim() == (0, 0.8)
    assert ax.get_title() == "CIFAR-10"
    assert len({line.get_linestyle() for line in lines}) == 4 and len({line.get_color() for line in lines}) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "cohen_run", "cohen σ=0.12 l2", "cohen σ=0.25 l2", "cohen σ=0.5 l2"]
    l1 = load_results(write_smoothcert(tmp_path / "l1.tsv", norm="l1", noise="laplace", certificate="teng"))
    assert plot_figure([l1]).axes[0].get_xlabel() == "ℓ1 radius"


def test_plot_refuses_l1_and_l2_on_one_axis(tmp_path, capsys, ours):
    l1 = write_smoothcert(tmp_path / "l1.tsv", norm="l1", noise="laplace", certificate="teng")
    with pytest.raises(SmoothcertError, match="cannot overlay l1 and l2"):
        plot_certified_accuracy([ours, load_results(l1)], tmp_path / "x.png")
    code, out, err = cli(capsys, ours.path, l1, "--plot", tmp_path / "x.png")
    assert_one_line_error(code, err, "cannot overlay l1 and l2 radii on one axis")
    assert out == "" and not (tmp_path / "x.png").exists()
    assert cli(capsys, ours.path, l1)[0] == 0                                   # a table of both is fine


def test_cli_plot_options(tmp_path, capsys, cohen):
    out = tmp_path / "fig.svg"
    code, text, _ = cli(capsys, cohen.path, "--plot", out, "--max-radius", "2", "--title", "vary σ")
    assert code == 0 and f"plot written to {out}" in text and out.read_bytes().startswith(b"<?xml")
    assert_one_line_error(*cli(capsys, cohen.path, "--max-radius", "2")[::2], "need --plot")
    assert_one_line_error(*cli(capsys, cohen.path, "--plot", out, "--max-radius", "-1")[::2], "max_radius")


# ---------------------------------------------------------------------------------------------------------------
# summarize and exports (issue 7.5)

@pytest.fixture(scope="module")
def certified():
    """Certificates of the threshold classifier (class 1 iff x > 0) at 8 points; the labels say 1 for the 6 first."""
    xs = torch.tensor([[0.9], [0.6], [0.3], [0.05], [-0.4], [0.7], [-0.8], [0.2]])
    labels = [1, 1, 1, 1, 1, 1, 0, 0]                 # input 4 is misclassified, input 7 too
    certs = list(Smooth(Threshold(), Gaussian(0.5)).certify_many(xs, 20, 200, 0.01, 1000, seed=3))
    return certs, labels


def test_summarize_equals_analyze_on_the_same_rows(tmp_path, certified, capsys):
    certs, labels = certified
    s = summarize(certs, labels, radii=[0, 0.25, 0.5], name="run")
    table = [(c.index, labels[c.index], c.prediction, repr(c.radius), int(c.prediction == labels[c.index]))
             for c in certs]
    path = tmp_path / "run.tsv"
    write_cohen(path, table)
    from_file = load_results(path, alpha=0.01)
    expected = Summary.of(from_file, [0, 0.25, 0.5])
    assert str(s) == str(expected) == format_table([expected])
    assert cli(capsys, path, "--alpha", "0.01", "--radii", "0", "0.25", "0.5")[1].strip() == str(s)
    assert s.certified_accuracy == {r: float(certified_accuracy(from_file, r)) for r in (0, 0.25, 0.5)}
    assert (s.acr, s.abstain_rate, s.interval, s.n) == (expected.acr, expected.abstain_rate, expected.interval, 8)
    assert s.results.alpha == 0.01 and s.results.norm == "l2" and s.kind == "certify"
    hand = np.mean([c.radius * (c.prediction == labels[c.index]) for c in certs])
    assert s.acr == pytest.approx(hand)


@pytest.mark.parametrize("kind", ["list", "numpy", "tensor", "dict"])
def test_summarize_label_containers(certified, kind):
    certs, labels = certified
    box = {"list": labels, "numpy": np.array(labels), "tensor": torch.tensor(labels),
           "dict": {i: y for i, y in enumerate(labels)}}[kind]
    assert summarize(certs, box).certified_accuracy == summarize(certs, labels).certified_accuracy


def test_summarize_errors_and_duplicates(certified):
    certs, labels = certified
    with pytest.raises(SmoothcertError, match="no label for input index 7"):
        summarize(certs, labels[:7])
    with pytest.raises(SmoothcertError, match="no label for input index 7"):
        summarize(certs, {i: y for i, y in enumerate(labels[:7])})
    with pytest.raises(SmoothcertError, match=r"certificate 8 \(index 0\): input idx 0 appears again"):
        summarize(certs + certs[:1], labels)            # e.g. single certify() calls, all with the default index 0
    assert summarize(certs + certs[:1], labels, allow_duplicates=True).n == 9
    with pytest.raises(SmoothcertError, match="has no 'radius'|has no 'index'"):
        summarize([object()], labels)
    with pytest.raises(SmoothcertError, match="at least one"):
        summarize([], labels)


def test_summarize_predictions(certified):
    xs = torch.tensor([[0.9], [0.6], [-0.8], [0.01]])
    preds = list(Smooth(Threshold(), Gaussian(0.5)).predict_many(xs, 200, 0.01, 1000, seed=1))
    s = summarize(preds, [1, 0, 0, 1])
    expected = np.mean([p.prediction == y for p, y in zip(preds, [1, 0, 0, 1])])
    assert s.kind == "predict" and s.accuracy == expected and s.acr is None and "accuracy" in str(s)


def test_exports_csv_json(tmp_path, certified, ours):
    certs, labels = certified
    s = summarize(certs, labels, radii=[0, 0.5])
    assert s.to_csv(tmp_path / "s.csv") == str(tmp_path / "s.csv")
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "name,idx,label,predict,radius,correct" and len(rows) == 9
    first = rows[1].split(",")
    assert first[:4] == ["smoothed", "0", "1", str(certs[0].prediction)] and float(first[4]) == certs[0].radius
    data = json.loads(s.to_json(tmp_path / "s.json"))
    assert json.loads((tmp_path / "s.json").read_text()) == data
    run = data["runs"][0]
    assert run["certified_accuracy"] == list(s.certified_accuracy.values()) and run["radii"] == [0.0, 0.5]
    assert run["acr"] == s.acr and run["interval"] == list(s.interval) and run["rows"]["radius"][0] == certs[0].radius
    both = json.loads(export_json([s, ours]))
    assert [r["name"] for r in both["runs"]] == ["smoothed", "cohen σ=0.25 l2"]
    export_csv([s, ours], tmp_path / "both.csv")
    assert len((tmp_path / "both.csv").read_text().splitlines()) == 1 + 8 + 8
    with pytest.raises(SmoothcertError, match="unknown CSV export format"):
        s.to_csv(tmp_path / "s.tsv")


def test_export_dataframe(certified, ours):
    pd = pytest.importorskip("pandas")
    certs, labels = certified
    df = summarize(certs, labels).to_dataframe()
    assert list(df.columns) == ["name", "idx", "label", "predict", "radius", "correct"] and len(df) == 8
    assert df["radius"].tolist() == [c.radius for c in certs]
    both = export_dataframe([ours, ours])
    assert isinstance(both, pd.DataFrame) and set(both["name"]) == {"cohen σ=0.25 l2 #1", "cohen σ=0.25 l2 #2"}


def test_export_dataframe_without_pandas_is_a_clear_error(monkeypatch, ours):
    monkeypatch.setitem(sys.modules, "pandas", None)                   # as if pandas were not installed
    with pytest.raises(SmoothcertError, match="needs pandas"):
        export_dataframe(ours)


def test_cli_json(tmp_path, capsys, cohen):
    code, out, _ = cli(capsys, cohen.path, "--json", tmp_path / "n.json", "--radii", "0.25")
    run = json.loads((tmp_path / "n.json").read_text())["runs"][0]
    assert code == 0 and run["certified_accuracy"] == [0.5] and run["name"] == "cohen_run"
    (tmp_path / "d.json").mkdir()
    assert_one_line_error(*cli(capsys, cohen.path, "--json", tmp_path / "d.json")[::2], "directory")


def test_package_exports_and_help():
    for name in ("summarize", "Summary", "export_csv", "export_json", "export_dataframe", "load_results"):
        assert name in smoothcert.__all__ and getattr(smoothcert, name) is getattr(smoothcert.analysis, name)
    doc = pydoc.render_doc(smoothcert.analysis)
    assert "A binomial discrete random variable" not in doc and "binom =" not in doc     # not scipy's binom docs
    assert "def summarize" not in doc and "summarize(certificates" in doc


def test_analyze_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["analyze", "--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0
    for option in ("--radii", "--radii-grid", "--ci-radius", "--confidence", "--alpha", "--allow-duplicates",
                   "--label", "--format", "--plot", "--max-radius", "--title", "--json", "default"):
        assert option in text, option


# ---------------------------------------------------------------------------------------------------------------
# The interval: exact values against an independent computation, and soundness with a negative control

def mp_clopper_pearson_lower(k, n, miss):
    """Independent: the p with P(Bin(n, p) >= k) = miss, by bisection on the exact tail in 40 digits."""
    if k == 0:
        return 0.0
    mpmath.mp.dps = 40
    tail = lambda p: mpmath.fsum(mpmath.binomial(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))
    lo, hi = mpmath.mpf(0), mpmath.mpf(1)
    for _ in range(60):                                   # the tail grows with p: bisect to 2^-60
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) < miss else (lo, mid)
    return float((lo + hi) / 2)


def mp_binomial_quantile(q, n, p):
    """Independent: the smallest w with P(Bin(n, p) <= w) >= q, summing the pmf exactly."""
    mpmath.mp.dps = 40
    total = mpmath.mpf(0)
    for w in range(n + 1):
        total += mpmath.binomial(n, w) * mpmath.mpf(p) ** w * (1 - mpmath.mpf(p)) ** (n - w)
        if total >= q:
            return w


def test_interval_exact_values_against_mpmath(tmp_path):
    res = load_results(write_smoothcert(tmp_path / "o.tsv", renumber(TABLE * 25), alpha=0.02))    # N = 200
    for r, confidence in ((0.25, 0.95), (0.5, 0.9), (1.2, 0.99)):
        miss, k = 1 - confidence, int(round(certified_accuracy(res, r) * 200))
        q = mp_binomial_quantile(1 - miss / 4, 200, 0.02)
        lo, _ = certified_accuracy_interval(res, r, confidence)
        assert lo == pytest.approx(mp_clopper_pearson_lower(max(k - q, 0), 200, miss / 4), rel=1e-12, abs=1e-15)


def interval_failures(reps, n, p_true, alpha_cert, confidence, correct_for_alpha, seed=0):
    """How often the interval misses: its lower end above the true certified accuracy p_true, or its upper end
    below the procedure's certification rate. Ground truth: each input is truly robust-correct w.p. p_true (and
    then certified); every other input gets a wrong certificate w.p. alpha_cert, the most a sound certificate may."""
    rng = np.random.default_rng(seed)
    p_cert = p_true + (1 - p_true) * alpha_cert
    fails = 0
    for _ in range(reps):
        certified = rng.random(n) < p_cert
        res = Results(idx=np.arange(n), label=np.ones(n, dtype=np.int64), predict=np.ones(n, dtype=np.int64),
                      radius=np.where(certified, 1.0, 0.0), correct=np.ones(n, dtype=np.int64),
                      alpha=alpha_cert if correct_for_alpha else None, name="sim", path="")
        lo, hi = certified_accuracy_interval(res, 0.5, confidence)
        fails += lo > p_true or hi < p_cert
    return fails


def test_interval_sound():
    # confidence 0.9: the interval may miss w.p. <= 0.1; with alpha = 0.05 wrong certificates, ignoring them
    # (the uncorrected lower end) misses about half the time
    p = plan(0.1)
    assert_sound(interval_failures(p.reps, 400, 0.5, 0.05, 0.9, correct_for_alpha=True), p)
    assert_caught(interval_failures(p.reps, 400, 0.5, 0.05, 0.9, correct_for_alpha=False, seed=1), p)


# ---------------------------------------------------------------------------------------------------------------
# One run per file: rows made with other settings are refused, naming the first line that differs

@pytest.mark.parametrize("column, value", [("noise", "laplace"), ("scale", "0.5"), ("certificate", "teng"),
                                           ("norm", "l1"), ("alpha", "0.01"), ("n0", "50"), ("n", "100")])
def test_rows_of_different_settings_in_one_file_are_refused(tmp_path, capsys, column, value):
    lines = write_smoothcert(tmp_path / "ok.tsv").read_text().splitlines()
    i = (COHEN_HEADER + EXTRA_HEADER).index(column)
    cells = lines[4].split("\t")
    cells[i] = value
    path = tmp_path / "mixed.tsv"
    path.write_text("\n".join(lines[:4] + ["\t".join(cells)] + lines[5:]) + "\n")
    with pytest.raises(SmoothcertError, match=rf"mixed.tsv, line 5: {column} is '{value}' but .* on line 2: rows of "
                                              rf"different {column}s in one file"):
        load_results(path)
    assert_one_line_error(*cli(capsys, path)[::2], "mixed.tsv, line 5", f"different {column}s")


def test_predict_rows_of_different_n_are_refused(tmp_path):
    path = write_predict(tmp_path / "p.tsv", [(1, 1), (2, 2)])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [lines[2].replace("\t1000\t", "\t100\t")]) + "\n")
    with pytest.raises(SmoothcertError, match="p.tsv, line 3: n is '100' but '1000' on line 2"):
        load_results(path)


# ---------------------------------------------------------------------------------------------------------------
# Certified-confidence files: the header's own column names, every cell checked with its line

def write_confidence(path, cdf=("cdf@0.5", "cdf@0.8"), baseline=("baseline@0.5", "baseline@0.8"),
                     alpha=("0.001", "0.001"), scale=("0.25", "0.25")):
    from smoothcert.files import CONFIDENCE_FIRST, CONFIDENCE_LAST
    header = list(CONFIDENCE_FIRST) + [h for pair in zip(cdf, baseline) for h in pair] + list(CONFIDENCE_LAST)
    lines = ["\t".join(header)]
    for i, (a, s) in enumerate(zip(alpha, scale)):
        radii = [str(0.3 - 0.1 * j - 0.01 * k) for j in range(len(cdf)) for k in range(2)]
        lines.append("\t".join([str(i), "1", "1", "1"] + radii + [
            "0:00:01", "gaussian", s, "score", a, "50", "500", "0", "m", "10000", "10", "4096", "1:50",
            ",".join(f"{k}:{50.0 if k == 1 else 0.0}" for k in range(10)), "3686:500", "450"]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_confidence_file_keeps_its_header_text(tmp_path):
    from smoothcert.analysis import load_confidence
    res = load_confidence(write_confidence(tmp_path / "c.tsv", ("cdf@0.50", "cdf@0.8"), ("baseline@0.50",
                                                                                          "baseline@0.8")))
    assert res.thresholds == (0.5, 0.8) and res.alpha == 0.001 and res.name == "score σ=0.25"
    np.testing.assert_allclose(res.cdf[0], [0.3, 0.2])
    np.testing.assert_allclose(res.baseline[0], [0.29, 0.19])
    np.testing.assert_allclose(res.mean_measure, [0.9, 0.9])


@pytest.mark.parametrize("change, message", [
    ({"cdf": ("cdf@0.50", "cdf@0.8")}, "line 1: column cdf@0.50 has no baseline@0.50"),
    ({"baseline": ("baseline@0.5", "baseline@0.9")}, "line 1: column cdf@0.8 has no baseline@0.8"),
    ({"cdf": ("cdf@0.5", "cdf@abc"), "baseline": ("baseline@0.5", "baseline@abc")},
     "line 1: column 'cdf@abc' is not a number: 'abc'"),
    ({"cdf": ("cdf@0.5", "cdf@1.5"), "baseline": ("baseline@0.5", "baseline@1.5")}, "line 1: thresholds must lie strictly inside (0, 1)"),
    ({"cdf": ("cdf@0.5", "cdf@0.50"), "baseline": ("baseline@0.5", "baseline@0.50")}, "line 1: thresholds repeat"),
    ({"alpha": ("x", "x")}, "line 2: scale and alpha must be numbers, got '0.25', 'x'"),
    ({"alpha": ("5", "5")}, "line 2: alpha must lie in (0, 1)"),
    ({"alpha": ("0.001", "0.01")}, "line 3: alpha is '0.01' but '0.001' on line 2"),
    ({"scale": ("x", "x")}, "line 2: scale and alpha must be numbers, got 'x'"),
    ({"scale": ("0.25", "0.5")}, "line 3: scale is '0.5' but '0.25' on line 2: rows of different scales"),
])
def test_bad_confidence_files_give_one_line_naming_the_line(tmp_path, capsys, change, message):
    from smoothcert.analysis import load_confidence
    path = write_confidence(tmp_path / "c.tsv", **change)
    with pytest.raises(SmoothcertError) as info:
        load_confidence(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)
    assert_one_line_error(*cli(capsys, path)[::2], message)


def test_confidence_plot_checks_its_path_before_drawing(tmp_path, monkeypatch):
    from smoothcert.analysis import confidence as analysis
    res = analysis.load_confidence(write_confidence(tmp_path / "c.tsv"))
    monkeypatch.setattr(analysis, "confidence_figure", lambda *a: pytest.fail("drew before checking the path"))
    with pytest.raises(SmoothcertError, match="unknown plot format 'gif'"):
        analysis.plot_confidence([res], tmp_path / "c.gif")
    monkeypatch.undo()
    assert analysis.plot_confidence([res], tmp_path / "c.svg", title="t") == str(tmp_path / "c.svg")
    assert (tmp_path / "c.svg").read_bytes().startswith(b"<?xml")


def test_analyze_of_confidence_files_takes_labels_and_refuses_what_it_would_ignore(tmp_path, capsys):
    path = write_confidence(tmp_path / "c.tsv")
    code, out, _ = cli(capsys, path, "--label", "my run")
    assert code == 0 and "my run" in out
    for extra, message in ((["--ci-radius", "0.1"], "--ci-radius and --alpha"), (["--alpha", "0.01"], "--ci-radius"),
                           (["--title", "t"], "need --plot"), (["--max-radius", "1"], "need --plot"),
                           (["--label", "a", "--label", "b"], "--label given 2 times for 1 files")):
        assert_one_line_error(*cli(capsys, path, *extra)[::2], message)
