"""Tests for smoothcert.efficiency and its part of `smoothcert analyze` (issue 8 item 7): results against n with
their prediction, samples per input of adaptive runs, and their speed-up against the fixed-n run. The files come
from the real CLI on a tiny linear model whose smoothed classifier is right on most inputs."""
import types

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from conftest import certify_args, rows
from smoothcert.analysis import load_results
from smoothcert.cli import main
from smoothcert.efficiency import (Efficiency, fixed_n_sets, matching_fixed, plot_samples, plot_versus_n, report,
                                   samples_summary, speedup, versus_n)
from smoothcert.errors import SmoothcertError

NS = (100, 300, 1000)
SIGMA, ALPHA, N0, R0 = 0.25, 0.01, 20, 0.25            # certify_args' sigma, alpha, n0; the target radius


def adaptive_args(model, data, out, *extra):
    """certify_args without its fixed --n."""
    args = certify_args(model, data, out, *extra)
    i = args.index("--n")
    return args[:i] + args[i + 2:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Nested fixed-n files at NS, an input-n run and a target run at n_max = 1000, all on the same 30 inputs."""
    d = tmp_path_factory.mktemp("efficiency")
    rng = np.random.default_rng(1)
    y = np.arange(30) % 3
    x = (rng.random((30, 1, 4, 4)) * 0.2 + y[:, None, None, None] * 0.4
         + rng.normal(0, 0.08, (30, 1, 1, 1))).astype(np.float32)
    np.savez(d / "data.npz", x=x, y=y)
    centre = 0.1 + 0.4 * torch.arange(3.0)                 # class means of the pixels
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))  # -(mean - centre)^2 up to a term shared by all classes
    with torch.no_grad():
        model[1].weight.copy_((2 * centre / 16)[:, None].expand(3, 16))
        model[1].bias.copy_(-centre ** 2)
    from smoothcert.models import save_model
    save_model(model.eval(), str(d / "model.pt2"), torch.zeros(2, 1, 4, 4))
    m, data = d / "model.pt2", d / "data.npz"
    assert main(certify_args(m, data, d / "r.tsv", "--n", ",".join(map(str, NS)))) == 0
    assert main(adaptive_args(m, data, d / "inn.tsv", "--n-max", "1000", "--max-loss", "0.05")) == 0
    assert main(adaptive_args(m, data, d / "tgt.tsv", "--n-max", "1000", "--target-radius", str(R0))) == 0
    return types.SimpleNamespace(dir=d, fixed=[d / f"r_n{n}.tsv" for n in NS], inn=d / "inn.tsv", tgt=d / "tgt.tsv")


def measured(path, radius):
    """(ACR, certified accuracy at radius) straight from the file's rows."""
    table = rows(path)
    r = np.array([float(t["radius"]) for t in table])
    ok = np.array([t["correct"] == "1" for t in table])
    return float(np.mean(r * ok)), float(np.mean(ok & (r >= radius)))


def predicted(path, n, radius):
    """(expected ACR, expected certified accuracy at radius) at n from the file's plug-in pA: the full binomial
    sum over k = 0..n of Cohen et al.'s radius sigma Phi^-1(CP_lower), CP_lower = Beta quantile (independent of
    planning's windowed sums and radius tables)."""
    k = np.arange(n + 1)
    low = np.where(k > 0, stats.beta.ppf(ALPHA, np.maximum(k, 1), n - k + 1), 0.0)
    cert = low >= 0.5
    r_k = np.where(cert, SIGMA * stats.norm.ppf(np.where(cert, low, 0.5)), 0.0)
    acr, acc = [], []
    for t in rows(path):
        sel = dict(map(int, kv.split(":")) for kv in t["counts_selection"].split(","))
        est = dict(map(int, kv.split(":")) for kv in t["counts"].split(","))
        a = min(c for c in sel if sel[c] == max(sel.values()))       # the selection's top class, lowest on ties
        pmf = stats.binom.pmf(k, n, est.get(a, 0) / int(t["n"])) * (a == int(t["label"]))
        acr.append(pmf @ r_k)
        acc.append(pmf[cert & (r_k >= radius)].sum())
    return float(np.mean(acr)), float(np.mean(acc))


def test_versus_n_matches_direct_computation(runs):
    files = [load_results(p) for p in reversed(runs.fixed)]          # any order
    sets = fixed_n_sets(files + [load_results(runs.inn)])
    assert len(sets) == 1 and [r.path for r in sets[0]] == [str(p) for p in runs.fixed]
    v = versus_n(sets[0], radii=(0.0, 0.25, 0.5))
    assert v.ns == NS and v.prediction is not None
    for i, (n, path) in enumerate(zip(NS, runs.fixed)):
        for j, radius in enumerate(v.radii):
            acr, acc = measured(path, radius)
            assert v.acr[i] == pytest.approx(acr, abs=1e-12) and v.certified_accuracy[i, j] == pytest.approx(acc)
            p_acr, p_acc = predicted(runs.fixed[-1], n, radius)
            assert v.prediction.acr[i] == pytest.approx(p_acr, abs=1e-9)
            assert v.prediction.certified_accuracy[i, j] == pytest.approx(p_acc, abs=1e-9)
    assert 0.2 < v.acr[-1] and 0 < v.certified_accuracy[-1, 1] < 1         # the data exercise the numbers
    assert v.acr[0] < v.acr[-1] and v.prediction.acr[0] < v.prediction.acr[-1]


def test_analyze_prints_the_table_against_n(runs, capsys):
    assert main(["analyze", *map(str, runs.fixed), "--radii", "0", "0.25"]) == 0
    out = capsys.readouterr().out
    v = versus_n([load_results(p) for p in runs.fixed], (0.0, 0.25))
    assert "against n: cohen σ=0.25 l2, n0=20, alpha=0.01, seed=0 (30 inputs" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("against n"))
    assert lines[start + 1].split() == ["n", "ACR", "pred.", "r=0", "pred.", "r=0.25", "pred."]
    for i, n in enumerate(NS):
        p = v.prediction
        assert lines[start + 3 + i].split() == [str(n), f"{v.acr[i]:.3f}", f"{p.acr[i]:.3f}"] + [
            f"{x * 100:.1f}" for j in range(2) for x in (v.certified_accuracy[i, j], p.certified_accuracy[i, j])]
    assert "samples per input" not in out and "speed-up" not in out


def test_two_sided_certificates_are_measured_but_not_predicted(runs, tmp_path, capsys):
    margin = []
    for n, path in zip(NS[:2], runs.fixed):
        margin.append(tmp_path / f"m{n}.tsv")
        assert main(["recertify", str(path), "--certificate", "margin", "--out", str(margin[-1])]) == 0
    v = versus_n([load_results(p) for p in margin])
    assert v.prediction is None and v.run is None
    assert v.acr[1] == pytest.approx(measured(margin[1], 0)[0], abs=1e-12)
    capsys.readouterr()
    assert main(["analyze", *map(str, margin), "--radii", "0", "0.25"]) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("against n: margin"))
    assert "no prediction" in out[start]
    assert out[start + 3].split() == ["100", f"{v.acr[0]:.3f}", f"{v.certified_accuracy[0, 0] * 100:.1f}",
                                      f"{v.certified_accuracy[0, 1] * 100:.1f}"]


def edited(src, dst, change=None, keep=None):
    """A copy of a results file with change(row) applied to every row (a dict of its cells), or its first `keep`
    rows."""
    table = rows(src)[:keep]
    for row in table:
        change and change(row)
    dst.write_text("\n".join(["\t".join(table[0])] + ["\t".join(row.values()) for row in table]) + "\n")
    return dst


def setting(column, value):
    return lambda row: row.update({column: value})


def other_label(row):
    row["label"] = str((int(row["label"]) + 1) % 3)
    row["correct"] = str(int(row["predict"] == row["label"]))


def test_sets_need_every_setting_but_n_and_the_same_inputs(runs, tmp_path):
    a, b, c = (load_results(p) for p in runs.fixed)
    other_seed = load_results(edited(runs.fixed[1], tmp_path / "seed.tsv", setting("seed", "7")))
    fewer = load_results(edited(runs.fixed[1], tmp_path / "fewer.tsv", keep=20))
    other_data = load_results(edited(runs.fixed[1], tmp_path / "labels.tsv", other_label))
    assert fixed_n_sets([a, other_seed]) == [] and fixed_n_sets([a, fewer]) == []
    assert fixed_n_sets([a]) == [] and fixed_n_sets([a, a]) == []          # one n is no set
    assert [s for s in fixed_n_sets([a, other_seed, fewer, c, a])] == [(a, c)]
    with pytest.raises(SmoothcertError, match="differ in seed"):
        versus_n([a, other_seed])
    with pytest.raises(SmoothcertError, match="different inputs"):
        versus_n([a, fewer])
    with pytest.raises(SmoothcertError, match="different inputs"):
        versus_n([a, other_data])
    with pytest.raises(SmoothcertError, match="same n"):
        versus_n([a, a])
    with pytest.raises(SmoothcertError, match="not a fixed-n"):
        versus_n([a, load_results(runs.inn)])


def test_samples_summary_matches_the_samples_column(runs, capsys):
    for path in (runs.inn, runs.tgt):
        samples = np.array([int(t["samples"]) for t in rows(path)])
        s = samples_summary(load_results(path))
        assert (s.mean, s.median, s.max, s.n_max, s.n0) == (samples.mean(), np.median(samples), samples.max(), 1000,
                                                            N0)
        assert s.counts.sum() == len(samples) and s.edges[0] <= samples.min() and samples.max() < s.edges[-1]
        for a, b, k in zip(s.edges, s.edges[1:], s.counts):
            assert k == np.sum((samples >= a) & (samples < b)) and str(b)[0] in "125" and set(str(b)[1:]) <= {"0"}
        assert s.counts[0] > 0 and s.counts[-1] > 0                   # the bins span exactly the data
    assert load_results(runs.tgt).samples.min() < 1000                # early stopping stopped some inputs early
    assert main(["analyze", str(runs.tgt)]) == 0
    out = capsys.readouterr().out
    s = samples_summary(load_results(runs.tgt))
    assert f"mean {s.mean:.1f}, median {s.median:g}, max {s.max} of n_max 1000" in out
    assert f"  [{s.edges[0]}, {s.edges[1]})" in out and "no speed-up for" in out


def test_speedup_against_the_fixed_run_at_n_max(runs, capsys):
    fixed = load_results(runs.fixed[-1])
    acr_f, _ = measured(runs.fixed[-1], 0)
    inn = speedup(load_results(runs.inn), fixed, radii=(0.0, 0.5))
    samples = np.array([int(t["samples"]) for t in rows(runs.inn)])
    assert inn.mode == "input-n" and (inn.n, inn.n0) == (1000, N0)
    assert inn.speedup == pytest.approx((N0 + 1000) / (N0 + samples.mean()))
    assert inn.speedup_estimation == pytest.approx(1000 / samples.mean())
    acr_a, acc_a = measured(runs.inn, 0.5)
    assert inn.acr_difference == pytest.approx(acr_a - acr_f) and inn.acr_relative == pytest.approx(
        (acr_a - acr_f) / acr_f)
    assert inn.accuracy_difference[1] == pytest.approx(acc_a - measured(runs.fixed[-1], 0.5)[1])

    tgt = speedup(load_results(runs.tgt), fixed)
    samples = np.array([int(t["samples"]) for t in rows(runs.tgt)])
    assert tgt.mode == "target" and tgt.radii == (R0,) and tgt.acr is None and tgt.acr_difference is None
    assert tgt.speedup == pytest.approx((N0 + 1000) / (N0 + samples.mean())) and tgt.speedup > 1.5
    assert tgt.certified_accuracy == (measured(runs.tgt, R0)[1],)
    assert tgt.certified_accuracy_fixed == (measured(runs.fixed[-1], R0)[1],)

    assert main(["analyze", *map(str, runs.fixed), str(runs.inn), str(runs.tgt), "--radii", "0", "0.5"]) == 0
    out = capsys.readouterr().out
    assert f"{tgt.speedup:.2f}x" in out and f"{inn.speedup_estimation:.2f}x" in out
    assert f"{inn.acr_difference:+.3f}" in out and f"{inn.acr_relative * 100:+.1f}%" in out
    line = next(line for line in out.splitlines() if line.startswith("cohen σ=0.25 l2 (tgt)") and "x" in line)
    assert line.split()[-4:] == [f"{R0:g}", f"{tgt.certified_accuracy[0] * 100:.1f}",
                                 f"{tgt.certified_accuracy_fixed[0] * 100:.1f}",
                                 f"{tgt.accuracy_difference[0] * 100:+.1f}"]
    assert "no speed-up" not in out


def test_speedup_needs_the_fixed_run_at_n_max_with_the_same_settings(runs, tmp_path):
    inn, n300 = load_results(runs.inn), load_results(runs.fixed[1])
    with pytest.raises(SmoothcertError, match="n_max is 1000"):
        speedup(inn, n300)
    with pytest.raises(SmoothcertError, match="not an adaptive run"):
        speedup(n300, inn)
    other = load_results(edited(runs.fixed[-1], tmp_path / "a.tsv", setting("alpha", "0.05")))
    with pytest.raises(SmoothcertError, match="differ in alpha"):
        speedup(inn, other)
    assert matching_fixed(inn, [n300, other]) is None
    assert matching_fixed(inn, [n300, load_results(runs.fixed[-1])]).path == str(runs.fixed[-1])
    eff = report([inn, n300, other])
    assert eff.speedups == () and len(eff.unmatched) == 1 and "no speed-up for" in str(eff)


def test_report_formats_and_files_without_settings(runs, tmp_path):
    eff = report([load_results(p) for p in [*runs.fixed, runs.inn, runs.tgt]])
    assert isinstance(eff, Efficiency) and len(eff.sets) == 1 and len(eff.samples) == len(eff.speedups) == 2
    md, tex = eff.format("markdown"), eff.format("latex")
    assert "| n | ACR | pred. |" in md and "```" in md
    assert r"\begin{tabular}" in tex and "% against n" in tex and "% samples per input" in tex
    with pytest.raises(SmoothcertError, match="table format"):
        eff.format("html")
    cohen = tmp_path / "cohen.tsv"                                   # Cohen et al.'s 6 columns: nothing to add
    cohen.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0:00:01\n")
    assert str(report([load_results(cohen), load_results(cohen)])) == ""


def test_plots_are_written_in_the_format_of_their_extension(runs, tmp_path, capsys):
    magic = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}
    n_plot, s_plot = tmp_path / "n.pdf", tmp_path / "s.svg"
    assert main(["analyze", *map(str, runs.fixed), str(runs.inn), str(runs.tgt), "--plot-n", str(n_plot),
                 "--plot-samples", str(s_plot)]) == 0
    out = capsys.readouterr().out
    assert f"plot against n written to {n_plot}" in out and f"samples histogram written to {s_plot}" in out
    eff = report([load_results(p) for p in [*runs.fixed, runs.tgt]])
    assert plot_versus_n(eff.sets, tmp_path / "n.png", radius=0.5) == str(tmp_path / "n.png")
    assert plot_samples(eff.samples, tmp_path / "s.png") == str(tmp_path / "s.png")
    for path in tmp_path.iterdir():
        assert path.read_bytes().startswith(magic[path.suffix[1:]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.pdf", "n.png", "s.png", "s.svg"]


@pytest.mark.parametrize("which,extra,message", [
    ("one", ["--plot-n", "x.png"], "--plot-n needs fixed-n certify files that differ only in n"),
    ("fixed", ["--plot-samples", "x.png"], "--plot-samples needs certify files of an adaptive run"),
    ("all", ["--plot-n", "x.txt"], "unknown plot format 'txt'"),
    ("all", ["--plot-samples", "."], "is a directory"),
    ("all", ["--plot", "ok.png", "--plot-n", "x.png", "--plot-samples", "x.gif"], "unknown plot format 'gif'"),
])
def test_bad_plot_requests_give_one_line_and_write_nothing(runs, tmp_path, monkeypatch, capsys, which, extra,
                                                           message):
    files = {"one": runs.fixed[:1], "fixed": runs.fixed, "all": [*runs.fixed, runs.inn]}[which]
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", *map(str, files), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_rows_of_two_runs_in_one_file_are_refused(runs, tmp_path, capsys):
    """The rows of the n = 100 and n = 300 files, renumbered into one file, are not one curve."""
    table = rows(runs.fixed[0]) + rows(runs.fixed[1])
    for i, row in enumerate(table):
        row["idx"] = str(i)
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("\n".join(["\t".join(table[0])] + ["\t".join(row.values()) for row in table]) + "\n")
    with pytest.raises(SmoothcertError, match="mixed.tsv, line 32: n is '300' but '100' on line 2: rows of different "
                                              "ns in one file"):
        load_results(mixed)
    assert main(["analyze", str(mixed)]) == 2
    err = capsys.readouterr().err
    assert "line 32" in err and err.count("\n") == 1


@pytest.mark.parametrize("which, samples, message", [("tgt", "99999999", "samples must lie in 1..1000"),
                                                     ("inn", "1001", "samples must lie in 1..1000"),
                                                     ("fixed", "999", "samples 999 differs from n 1000")])
def test_samples_beyond_n_are_refused(runs, tmp_path, capsys, which, samples, message):
    src = {"tgt": runs.tgt, "inn": runs.inn, "fixed": runs.fixed[-1]}[which]
    bad = edited(src, tmp_path / "bad.tsv", setting("samples", samples))
    with pytest.raises(SmoothcertError, match="bad.tsv line 2: " + message):
        load_results(bad)
    assert main(["analyze", str(bad), str(runs.fixed[-1])]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_file_is_read_alike_alone_and_with_its_set(runs, tmp_path, capsys):
    """analyze reads smoothcert's certify files as planning does: a trailing blank line is refused (one line,
    naming it) whether the file is given alone or as the largest n of a set, never accepted in one and not the
    other."""
    blank = tmp_path / "r_n1000.tsv"
    blank.write_text(runs.fixed[-1].read_text() + "\n")
    for files in ([blank], [runs.fixed[0], blank]):
        assert main(["analyze", *map(str, files)]) == 2
        err = capsys.readouterr().err
        assert f"{blank} line 32" in err and err.count("\n") == 1
