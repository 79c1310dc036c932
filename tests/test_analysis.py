"""Tests for smoothcert.analysis: loading results TSVs, certified accuracy, ACR, intervals, table and plot."""
import os

import matplotlib.image
import numpy as np
import pytest
from scipy.stats import binom

from smoothcert.analysis import (abstain_rate, average_certified_radius, certified_accuracy,
                                 certified_accuracy_interval, load_results, plot_certified_accuracy,
                                 summary_table)
from smoothcert.bounds import clopper_pearson_lower, clopper_pearson_upper
from smoothcert.errors import SmoothcertError

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


def write_smoothcert(path, table=TABLE, alpha=0.001, scale=0.25):
    lines = ["\t".join(COHEN_HEADER + EXTRA_HEADER)]
    for i, y, p, r, c in table:
        extra = ["gaussian", str(scale), "cohen", "l2", str(alpha), "100", "1000", "0", "0.61", "10",
                 "0,90,0,0,0,0,0,0,10,0", "1,880,0,0,0,0,0,0,119,0"]
        lines.append("\t".join([str(i), str(y), str(p), str(r), str(c), "0:00:00.5"] + extra))
    path.write_text("\n".join(lines) + "\n")
    return path


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
    lo, hi = certified_accuracy_interval(cohen, 0.25, confidence=0.95)
    assert lo == pytest.approx(clopper_pearson_lower(4, 8, 0.025))
    assert hi == pytest.approx(clopper_pearson_upper(4, 8, 0.025))
    assert 0 <= lo < 0.5 < hi <= 1


def test_interval_with_alpha_lowers_only_the_lower_end(cohen, ours):
    for r in (0.0, 0.25, 0.5, 1.5):
        lo_c, hi_c = certified_accuracy_interval(cohen, r)
        lo, hi = certified_accuracy_interval(ours, r)
        point = certified_accuracy(ours, r)
        assert 0 <= lo <= point <= hi <= 1
        assert hi == pytest.approx(hi_c)
        assert lo < lo_c or lo_c == 0


def test_interval_alpha_correction_subtracts_binomial_quantile(tmp_path):
    res = load_results(write_smoothcert(tmp_path / "big.tsv", TABLE * 50, alpha=0.05))   # N=400, k=200 at r=.25
    q = binom.ppf(1 - 0.0125, 400, 0.05)
    assert q > 0
    lo, hi = certified_accuracy_interval(res, 0.25, confidence=0.95)
    assert lo == pytest.approx(clopper_pearson_lower(200 - int(q), 400, 0.0125))
    assert hi == pytest.approx(clopper_pearson_upper(200, 400, 0.025))
    assert lo < clopper_pearson_lower(200, 400, 0.025) < 0.5 < hi


def test_interval_narrows_with_more_rows(tmp_path):
    small = load_results(write_smoothcert(tmp_path / "small.tsv", TABLE))
    large = load_results(write_smoothcert(tmp_path / "large.tsv", TABLE * 20))
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
    ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0:00:01\n", "missing column.*radius"),
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
