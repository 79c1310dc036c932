"""Results files from someone else and the lock beside a results file (issue 13, items 3 and 4): a few bytes of a
row must not make any reader allocate gigabytes (peaks measured with tracemalloc, which sees numpy's arrays), and
the lock must never follow a link, truncate or delete a file smoothcert did not create, nor stop readers."""
import multiprocessing
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from conftest import certify_args, rows, tiny_cnn
from smoothcert.jobs import recertification as run_module
from smoothcert.cli import main
from smoothcert.files.lock import MAGIC, FileLock
from smoothcert.models import save_model

MB = 1 << 20
BIG = 1_000_000                                    # classes claimed by a hostile row (files.rows.MAX_CLASSES)


def one_line(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smoothcert "), err
    return lines[0]


def measured(argv) -> tuple[int, int]:
    """main(argv)'s exit code and the peak of what it allocated (bytes), numpy's arrays included."""
    tracemalloc.start()
    try:
        code = main(argv)
        return code, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A model, its data, and a real certify file (12 rows) and confidence file (3 rows) made with them."""
    d = tmp_path_factory.mktemp("made")
    rng = np.random.default_rng(0)
    y = np.arange(12) % 3
    np.savez(d / "data.npz", x=(rng.random((12, 1, 4, 4)) * 0.2 + y[:, None, None, None] * 0.4).astype(np.float32),
             y=y)
    save_model(tiny_cnn(), str(d / "model.pt2"), torch.zeros(2, 1, 4, 4))
    assert main(certify_args(d / "model.pt2", d / "data.npz", d / "certify.tsv")) == 0
    assert main(["confidence", *certify_args(d / "model.pt2", d / "data.npz", d / "confidence.tsv", "--max", "3",
                                             "--thresholds", "0.4,0.6")[1:]]) == 0
    return d


def rewritten(source, target, count=None, **changes):
    """`source`'s rows, repeated to `count` rows (idx renumbered), with `changes` (column -> value, or a function of
    the row's cells) applied to every row, written to `target`."""
    lines = open(source).read().rstrip("\n").split("\n")
    header, body = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
    out = []
    for i in range(count or len(body)):
        cells = dict(zip(header, body[i % len(body)]))
        cells["idx"] = str(i) if count else cells["idx"]
        cells.update({k: v(cells) if callable(v) else v for k, v in changes.items()})
        out.append("\t".join(cells[h] for h in header))
    open(target, "w").write("\n".join(["\t".join(header)] + out) + "\n")
    return target


def without(path, column):
    return [{k: v for k, v in r.items() if k != column} for r in rows(path)]


# -- item 3: what a row can make a reader allocate ------------------------------------------------------------------
@pytest.mark.parametrize("certificate", ["cohen", "margin", "exact-margin", "best", "single-stage"])
def test_recertifying_400_rows_claiming_a_million_classes_is_exact_and_small(made, tmp_path, certificate):
    """400 rows of num_classes=1000000 (sparse counts, 100 KB) made recertify allocate 3 GB and more (40 rows for
    exact-margin, whose exact bound takes 0.1 s a row: 640 MB before)."""
    count = 40 if certificate == "exact-margin" else 400
    small = rewritten(made / "certify.tsv", tmp_path / "small.tsv", count)
    big = rewritten(made / "certify.tsv", tmp_path / "big.tsv", count, num_classes=str(BIG))
    assert os.path.getsize(big) < 200_000
    assert main(["recertify", str(small), "--certificate", certificate, "--out", str(tmp_path / "a.tsv")]) == 0
    code, peak = measured(["recertify", str(big), "--certificate", certificate, "--out", str(tmp_path / "b.tsv")])
    assert code == 0 and peak < 256 * MB, peak
    assert without(tmp_path / "b.tsv", "num_classes") == without(tmp_path / "a.tsv", "num_classes")


def test_plan_bench_latency_analyze_and_resuming_on_a_million_classes_are_small(made, tmp_path, capsys):
    small = rewritten(made / "certify.tsv", tmp_path / "small.tsv", 400)
    big = rewritten(made / "certify.tsv", tmp_path / "big.tsv", 400, num_classes=str(BIG))
    for command in (["plan", "--results"], ["analyze"]):
        assert main(command + [str(small)]) == 0
        expected = capsys.readouterr().out.replace(str(small), "FILE")
        code, peak = measured(command + [str(big)])
        assert code == 0 and peak < 256 * MB, (command, peak)
        assert capsys.readouterr().out.replace(str(big), "FILE") == expected
    model, data = made / "model.pt2", made / "data.npz"
    code, peak = measured(["bench-latency", "--model", str(model), "--data", f"npz:{data}", "--sigma", "0.5",
                           "--budget-ms", "10", "--results", str(big)])     # read, then refused: other noise
    assert "was certified under" in one_line(capsys, code) and peak < 256 * MB, peak
    code, peak = measured(certify_args(model, data, big))                    # resuming it
    assert "num_classes=1000000 but this run has num_classes=3" in one_line(capsys, code) and peak < 16 * MB, peak


def test_a_soft_row_claiming_a_million_classes_is_refused_before_allocating(made, tmp_path, capsys):
    soft = tmp_path / "soft.tsv"
    assert main(certify_args(made / "model.pt2", made / "data.npz", soft, "--max", "3", "--certificate",
                             "soft-hoeffding")) == 0
    big = rewritten(soft, tmp_path / "big.tsv", num_classes=str(BIG))
    code, peak = measured(["recertify", str(big), "--certificate", "soft-bernstein", "--out", str(tmp_path / "o")])
    assert "must give finite values for all 1000000 classes" in one_line(capsys, code) and peak < 8 * MB, peak


def test_a_confidence_row_with_16_million_bins_is_refused_in_one_line(made, tmp_path, capsys):
    bad = rewritten(made / "confidence.tsv", tmp_path / "bins.tsv", bins=str(1 << 24), histogram="16777215:300")
    for argv in (["recertify", str(bad), "--thresholds", "0.5", "--out", str(tmp_path / "o.tsv")],
                 ["analyze", str(bad)]):
        code, peak = measured(argv)
        line = one_line(capsys, code)
        assert f"{bad} line 2: bins must be 4096" in line and peak < 8 * MB, (argv, peak)
    code, peak = measured(["confidence", *certify_args(made / "model.pt2", made / "data.npz", bad,
                                                       "--thresholds", "0.4,0.6")[1:]])     # resuming it
    assert "bins" in one_line(capsys, code) and peak < 8 * MB and not os.path.exists(tmp_path / "o.tsv")


def test_confidence_rows_keep_no_dense_histogram(made, tmp_path):
    """4,000 rows (1.3 MB) held 4,000 dense 4,096-bin histograms (134 MB) while analyze read them, and recertify
    1,000 (34 MB) (fewer: it bisects a radius per row)."""
    for count, argv, budget in ((4000, ["analyze"], 48 * MB),
                                (1000, ["recertify", "--thresholds", "0.5", "--out", str(tmp_path / "o")], 16 * MB)):
        many = rewritten(made / "confidence.tsv", tmp_path / "many.tsv", count, histogram="2100:300",
                         measure_sum=repr(300 * 2100 / 4096))
        assert os.path.getsize(many) < 2 * MB
        code, peak = measured(argv[:1] + [str(many)] + argv[1:])
        assert code == 0 and peak < budget, (argv, peak)


def test_a_confidence_row_of_2_to_the_62_samples_and_thresholds_is_recertified_in_bins_not_samples(made, tmp_path):
    """One bin holding n = 2^62 samples at num_thresholds = 2^62 made the layers enumerate every order statistic."""
    huge = 2 ** 62
    change = dict(n=str(huge), histogram=f"2100:{huge}", measure_sum=repr(huge * 2100 / 4096))
    a = rewritten(made / "confidence.tsv", tmp_path / "a.tsv", **change)
    b = rewritten(made / "confidence.tsv", tmp_path / "b.tsv", num_thresholds=str(huge), **change)
    assert main(["recertify", str(a), "--out", str(tmp_path / "ra.tsv")]) == 0
    code, peak = measured(["recertify", str(b), "--out", str(tmp_path / "rb.tsv")])
    assert code == 0 and peak < 16 * MB, peak
    assert without(tmp_path / "rb.tsv", "num_thresholds") == without(tmp_path / "ra.tsv", "num_thresholds")
    assert float(rows(tmp_path / "rb.tsv")[0]["cdf@0.4"]) > 0               # one bin at 0.51: certified at 0.4


def test_the_layers_of_a_histogram_are_the_bins_of_every_gth_order_statistic():
    """The layers are now found bin by bin; they must be the bins of the order statistics 0, g, 2g, ... as before."""
    from smoothcert.certificates.confidence import layers_from_histogram
    rng = np.random.default_rng(1)
    for _ in range(300):
        bins, t = int(rng.integers(1, 64)), int(rng.integers(1, 40))
        row = rng.integers(0, 6, bins) * (rng.random(bins) < 0.5)
        row[rng.integers(bins)] += 1
        total, cum = int(row.sum()), np.cumsum(row)
        ranks = np.arange(0, total, -(-total // t))                        # the order statistics, one by one
        expected = np.unique(np.searchsorted(cum, ranks, side="right"))
        layers = layers_from_histogram(row, "score", t)
        assert np.array_equal(layers.thresholds[0], np.linspace(0, 1, bins + 1)[expected])
        assert np.array_equal(layers.count_ge[0], total - (cum[expected] - row[expected]))


def test_exact_margin_refuses_samples_it_cannot_hold_naming_the_line(made, tmp_path, capsys):
    n = 10 ** 12
    bad = rewritten(made / "certify.tsv", tmp_path / "bad.tsv", n=str(n), samples=str(n), counts=f"0:{n - 5},1:5")
    code, peak = measured(["recertify", str(bad), "--certificate", "exact-margin", "--out", str(tmp_path / "o")])
    line = one_line(capsys, code)
    assert f"{bad} line 2: exact-margin" in line and "10,000,000" in line and peak < 8 * MB


def test_counts_that_overflow_int64_are_refused(made, tmp_path, capsys):
    """Five counts of 2^62 wrapped to the row's 300 samples in int64 and were accepted."""
    c = 2 ** 62
    bad = rewritten(made / "certify.tsv", tmp_path / "bad.tsv", num_classes="5",
                    counts=f"0:{c},1:{c},2:{c},3:{c},4:300")
    line = one_line(capsys, main(["recertify", str(bad), "--certificate", "cohen", "--out", str(tmp_path / "o")]))
    assert f"{bad} line 2: counts sum to {4 * c + 300}, not to the row's 300 samples" in line


# -- item 4: the lock never destroys anything -----------------------------------------------------------------------
def _certify(made, out):
    return certify_args(made / "model.pt2", made / "data.npz", out, "--max", "2")


def listing(folder):
    return sorted(os.listdir(folder))


def test_a_users_own_lock_named_file_is_refused_and_kept(made, tmp_path, capsys):
    out, mine = tmp_path / "results", tmp_path / "results.lock"
    mine.write_text("my notes\n")
    line = one_line(capsys, main(_certify(made, out)))
    assert "results.lock exists and is not a lock smoothcert made" in line
    assert mine.read_text() == "my notes\n" and listing(tmp_path) == ["results.lock"]
    mine.write_text("")                            # an empty one too (after a second of waiting for a writer)
    assert "stays empty" in one_line(capsys, main(_certify(made, out)))
    assert mine.read_text() == "" and listing(tmp_path) == ["results.lock"]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_lock_is_refused_and_its_target_untouched(made, tmp_path, capsys, dangling):
    target = tmp_path / "precious.txt"
    if not dangling:
        target.write_text("keep me\n")
    os.symlink(target, tmp_path / "r.tsv.lock")
    line = one_line(capsys, main(_certify(made, tmp_path / "r.tsv")))
    assert "r.tsv.lock exists and is a symbolic link" in line
    assert os.path.islink(tmp_path / "r.tsv.lock")
    assert (not target.exists()) if dangling else target.read_text() == "keep me\n"
    assert not (tmp_path / "r.tsv").exists()


def test_a_lock_named_folder_is_refused_and_kept(made, tmp_path, capsys):
    (tmp_path / "r.tsv.lock").mkdir()
    (tmp_path / "r.tsv.lock" / "inside").write_text("x")
    assert "is a folder" in one_line(capsys, main(_certify(made, tmp_path / "r.tsv")))
    assert (tmp_path / "r.tsv.lock" / "inside").read_text() == "x"


@pytest.mark.parametrize("link", [False, True])
def test_recertify_leaves_its_inputs_lock_named_file_alone(made, tmp_path, link):
    source = tmp_path / "source.tsv"
    source.write_text((made / "certify.tsv").read_text())
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    if link:
        os.symlink(target, tmp_path / "source.tsv.lock")
    else:
        (tmp_path / "source.tsv.lock").write_text("keep me\n")
    assert main(["recertify", str(source), "--certificate", "margin", "--out", str(tmp_path / "new.tsv")]) == 0
    assert (tmp_path / "source.tsv.lock").read_text() == "keep me\n" and target.read_text() == "keep me\n"
    assert os.path.islink(tmp_path / "source.tsv.lock") == link and len(rows(tmp_path / "new.tsv")) == 12
    assert listing(tmp_path) == sorted(["source.tsv", "source.tsv.lock", "precious.txt", "new.tsv"])


@pytest.mark.parametrize("out", ["X.lock", "r.tsv.LOCK", "link-to-a-lock"])
def test_an_out_named_like_a_lock_is_refused(made, tmp_path, capsys, out):
    """recertify --out X.lock reported success and left nothing: its own lock release deleted it."""
    os.symlink(tmp_path / "other.tsv.lock", tmp_path / "link-to-a-lock")
    before = listing(tmp_path)
    for argv in (["recertify", str(made / "certify.tsv"), "--certificate", "margin", "--out", str(tmp_path / out)],
                 _certify(made, tmp_path / out)):
        line = one_line(capsys, main(argv))
        assert "ends in .lock, the name of a run's lock file" in line and listing(tmp_path) == before


def test_two_recertify_runs_of_one_input_do_not_block_each_other(made, tmp_path, monkeypatch):
    """The first run reads its input while the second runs to the end; neither creates anything beside the input."""
    folder = tmp_path / "in"
    folder.mkdir()
    source = folder / "source.tsv"
    source.write_text((made / "certify.tsv").read_text())
    read_table, inner = run_module.read_table, []

    def reading(path, columns):
        if not inner:
            inner.append(listing(folder))      # nothing created beside the input while it is read
            inner.append(main(["recertify", str(source), "--certificate", "cohen", "--out", str(tmp_path / "b.tsv")]))
        return read_table(path, columns)

    monkeypatch.setattr(run_module, "read_table", reading)
    os.chmod(folder, 0o555)                     # read-only (not for root, hence the listing above)
    try:
        assert main(["recertify", str(source), "--certificate", "margin", "--out", str(tmp_path / "a.tsv")]) == 0
        assert main(["analyze", str(source)]) == 0 and main(["plan", "--results", str(source)]) == 0
    finally:
        os.chmod(folder, 0o755)
    assert inner == [["source.tsv"], 0] and listing(folder) == ["source.tsv"]
    assert len(rows(tmp_path / "a.tsv")) == len(rows(tmp_path / "b.tsv")) == 12


def test_recertify_is_refused_while_its_input_is_being_written(made, tmp_path, capsys):
    source = tmp_path / "source.tsv"
    source.write_text((made / "certify.tsv").read_text())
    with FileLock(str(source)):
        line = one_line(capsys, main(["recertify", str(source), "--certificate", "margin", "--out",
                                      str(tmp_path / "new.tsv")]))
    assert "source.tsv is being written by another run" in line and f"pid {os.getpid()}" in line
    assert listing(tmp_path) == ["source.tsv"]


def test_a_lock_replaced_by_a_users_file_is_not_deleted_on_release(tmp_path):
    lock = FileLock(str(tmp_path / "r.tsv")).acquire()
    os.unlink(tmp_path / "r.tsv.lock")
    (tmp_path / "r.tsv.lock").write_text("mine\n")
    lock.release()
    assert (tmp_path / "r.tsv.lock").read_text() == "mine\n"


def test_a_stale_lock_of_a_killed_run_is_replaced_and_removed(made, tmp_path):
    out = tmp_path / "r.tsv"
    code = f"from smoothcert.files.lock import FileLock; import os; FileLock({str(out)!r}).acquire(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "r.tsv.lock").read_bytes().startswith(MAGIC)
    assert main(_certify(made, out)) == 0
    assert listing(tmp_path) == ["r.tsv"] and len(rows(out)) == 2


def _contend(out, barrier, results):
    barrier.wait()
    try:
        lock = FileLock(out).acquire()
    except Exception as e:                        # noqa: BLE001 - reported to the parent
        results.put(("refused", str(e)))
        return
    results.put(("held", ""))
    import time
    time.sleep(3)                                 # longer than a refused run's retries
    lock.release()


def test_runs_racing_for_one_lock_let_exactly_one_in(tmp_path):
    out = str(tmp_path / "r.tsv")
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(out, barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(kind for kind, _ in outcomes) == ["held"] + ["refused"] * 5, outcomes
    assert all("being written by another run (pid " in message for kind, message in outcomes if kind == "refused")
    assert listing(tmp_path) == []


def test_a_temporary_file_in_the_way_is_refused_not_followed(made, tmp_path, capsys):
    """recertify wrote through a link named like its temporary file (OUT.PID.tmp), overwriting the link's target."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    os.symlink(target, tmp_path / f"new.tsv.{os.getpid()}.tmp")
    one_line(capsys, main(["recertify", str(made / "certify.tsv"), "--certificate", "margin", "--out",
                           str(tmp_path / "new.tsv")]))
    assert target.read_text() == "keep me\n" and os.path.islink(tmp_path / f"new.tsv.{os.getpid()}.tmp")
    assert not (tmp_path / "new.tsv").exists()


def test_analyze_does_not_write_through_a_link_named_like_its_temporary_file(made, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    os.symlink(target, tmp_path / f"plot.png.{os.getpid()}.tmp")
    line = one_line(capsys, main(["analyze", str(made / "certify.tsv"), "--plot", str(tmp_path / "plot.png")]))
    assert "cannot write plot" in line and target.read_text() == "keep me\n"
    assert os.path.islink(tmp_path / f"plot.png.{os.getpid()}.tmp") and not (tmp_path / "plot.png").exists()
