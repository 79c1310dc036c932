"""The lock beside a results file (issue 13, item 4): it must never follow a link, truncate or delete a file
smoothcert did not create, nor stop readers."""
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import certify_args, rows, tiny_cnn
from smoothcert import run as run_module
from smoothcert.cli import main
from smoothcert.filelock import MAGIC, FileLock
from smoothcert.models import save_model


def one_line(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smoothcert "), err
    return lines[0]


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
    code = f"from smoothcert.filelock import FileLock; import os; FileLock({str(out)!r}).acquire(); os._exit(0)"
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
