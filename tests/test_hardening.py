"""Hostile and mistaken input (issue 6): model files that would run code, results files that would be mixed,
corrupted or trusted blindly, and every bad input that used to print a traceback."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import WithConstant, certify_args, one_line_error, rows, tiny_cnn
from smoothcert.cli import main
from smoothcert.models import fingerprint, load_model, save_model
from smoothcert.files import FileLock


# -- 1. a .pt2 must not run code or exhaust memory: tests/test_pt2_safety.py ----------------------------------------


# -- 2. the saved model does not carry the training data --------------------------------------------------------
def test_a_saved_model_does_not_grow_with_the_data_it_was_given(tmp_path):
    model = tiny_cnn()
    small, big = tmp_path / "small.pt2", tmp_path / "big.pt2"
    save_model(model, str(small), torch.zeros(1, 1, 4, 4))
    data = torch.rand(20_000, 1, 4, 4)                      # 1.3 MB: a view of it used to be stored whole
    save_model(model, str(big), data[:2])
    assert abs(os.path.getsize(big) - os.path.getsize(small)) < 4096


def test_train_writes_a_model_whose_size_does_not_depend_on_the_training_set(tmp_path):
    rng = np.random.default_rng(0)
    sizes = []
    for count in (30, 3000):
        data = tmp_path / f"d{count}.npz"
        np.savez(data, x=rng.random((count, 1, 8, 8)).astype(np.float32), y=np.arange(count) % 3)
        out = tmp_path / f"m{count}.pt2"
        assert main(["train", "--arch", "digits-cnn", "--data", f"npz:{data}", "--sigma", "0.25", "--epochs", "1",
                     "--out", str(out)]) == 0
        sizes.append(os.path.getsize(out))
    assert abs(sizes[1] - sizes[0]) < 4096        # 3000 images are 768 KB


# -- 3. one writer per results file ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["certify", "predict", "recertify"])
def test_a_results_file_being_written_is_refused_naming_the_holder(tmp_path, model_pt2, npz_data, capsys, command):
    out = tmp_path / "r.tsv"
    source = tmp_path / "source.tsv"
    assert main(certify_args(model_pt2, npz_data, source, "--max", "2")) == 0
    capsys.readouterr()
    args = {"certify": certify_args(model_pt2, npz_data, out),
            "predict": ["predict"] + certify_args(model_pt2, npz_data, out)[1:],
            "recertify": ["recertify", str(source), "--certificate", "margin", "--out", str(out)]}[command]
    if command == "predict":
        i = args.index("--n0")
        del args[i:i + 2]
    with FileLock(str(out)):
        line = one_line_error(capsys, main(args))
    assert "being written by another run" in line and f"pid {os.getpid()}" in line
    assert not out.exists()
    assert main(args) == 0                        # the lock is gone with its holder


def test_two_identical_runs_started_at_once_write_every_row_once(tmp_path, model_pt2, npz_data):
    out = tmp_path / "r.tsv"
    cmd = [sys.executable, "-m", "smoothcert.cli"] + certify_args(model_pt2, npz_data, out)
    cmd[cmd.index("--n") + 1] = "100000"            # long enough to overlap the refused run's 1 s of retries
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    assert "being written by another run" in next(err for code, err in results if code == 2)
    table = rows(out)
    assert sorted(int(r["idx"]) for r in table) == list(range(12))
    assert main(certify_args(model_pt2, npz_data, out)[:-1] + ["--no-progress"]) in (0, 2)


def test_the_lock_of_a_killed_run_does_not_block_the_next(tmp_path):
    out = str(tmp_path / "r.tsv")
    code = f"from smoothcert.files import FileLock; import os; FileLock({out!r}).acquire(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    with FileLock(out):                            # the kernel dropped the dead process's lock
        pass


# -- 4. the model is part of what a resumed run must match ------------------------------------------------------
def test_resuming_with_another_model_is_refused(tmp_path, npz_data, capsys):
    a, b = tmp_path / "a.pt2", tmp_path / "b.pt2"
    save_model(tiny_cnn(), str(a), torch.zeros(1, 1, 4, 4))
    other = tiny_cnn()
    with torch.no_grad():
        other[0].weight.mul_(1.01)
    save_model(other, str(b), torch.zeros(1, 1, 4, 4))
    out = tmp_path / "r.tsv"
    assert main(certify_args(a, npz_data, out, "--max", "4")) == 0
    before = open(out).read()
    capsys.readouterr()
    line = one_line_error(capsys, main(certify_args(b, npz_data, out)))
    assert "model=" in line and open(out).read() == before
    assert {r["model"] for r in rows(out)} == {fingerprint(load_model(str(a)))}
    assert main(certify_args(a, npz_data, out)) == 0 and len(rows(out)) == 12


def test_a_module_and_its_exported_program_have_one_fingerprint(tmp_path):
    model = tiny_cnn().eval()
    save_model(model, str(tmp_path / "m.pt2"), torch.zeros(1, 1, 4, 4))
    assert fingerprint(model) == fingerprint(load_model(str(tmp_path / "m.pt2")))
    assert fingerprint(model) != fingerprint(tiny_cnn(num_classes=4))


# -- 5. recertify and analyze check what the file says -----------------------------------------------------------
@pytest.fixture
def certified(tmp_path, model_pt2, npz_data):
    out = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, out, "--max", "4")) == 0
    return out


def _edit_row(path, line, **changes):
    lines = open(path).read().split("\n")
    header = lines[0].split("\t")
    cells = lines[line - 1].split("\t")
    for key, value in changes.items():
        cells[header.index(key)] = value
    lines[line - 1] = "\t".join(cells)
    open(path, "w").write("\n".join(lines))


@pytest.mark.parametrize("changes,message", [
    ({"counts": "0:20000"}, "sum to 20000, not to the row's 300"),
    ({"counts_selection": "0:19,1:2"}, "sum to 21"),
    ({"counts": "0:9223372036854775809"}, "must lie in"),
    ({"num_classes": "100000000000"}, "num_classes must lie in"),
    ({"counts": "7:300"}, "a class in counts must lie in"),
    ({"idx": "0"}, "appears twice"),
    ({"n": "abc"}, "n must be an integer"),
])
def test_recertify_refuses_rows_that_do_not_add_up(certified, tmp_path, capsys, changes, message):
    _edit_row(certified, 3, **changes)
    capsys.readouterr()
    line = one_line_error(capsys, main(["recertify", str(certified), "--certificate", "margin",
                                        "--out", str(tmp_path / "new.tsv")]))
    assert message in line and "line 3" in line and not (tmp_path / "new.tsv").exists()


def test_recertify_refuses_a_cut_off_last_row(certified, tmp_path, capsys):
    text = open(certified).read()
    open(certified, "w").write(text[:-15])
    capsys.readouterr()
    line = one_line_error(capsys, main(["recertify", str(certified), "--certificate", "margin",
                                        "--out", str(tmp_path / "new.tsv")]))
    assert "line 5" in line and "cut off" in line


def _run_args(kind, model, data, out):
    """The command line of a small run of each kind of results file (certify, soft, predict, confidence)."""
    if kind == "predict":
        return ["predict", "--model", str(model), "--data", f"npz:{data}", "--sigma", "0.25", "--n", "300",
                "--alpha", "0.01", "--batch", "128", "--seed", "0", "--out", str(out), "--no-progress"]
    extra = {"certify": [], "soft": ["--certificate", "soft-bernstein"], "confidence": ["--thresholds", "0.4,0.6"]}
    args = certify_args(model, data, out, *extra[kind])
    return ["confidence", *args[1:]] if kind == "confidence" else args


@pytest.mark.parametrize("kind,changes,message", [
    ("certify", {"counts": "garbage"}, "counts must be class:count pairs, got 'garbage'"),
    ("certify", {"counts": "1:299"}, "counts sum to 299, not to the row's 300"),
    ("certify", {"idx": "abc"}, "idx must be an integer, got 'abc'"),
    ("certify", {"label": "abc"}, "label must be an integer, got 'abc'"),
    ("certify", {"label": "7"}, "label must lie in 0..2"),
    ("soft", {"scores": "garbage"}, "scores must be class:value:value items"),
    ("soft", {"idx": "abc"}, "idx must be an integer, got 'abc'"),
    ("predict", {"counts": "garbage"}, "counts must be class:count pairs, got 'garbage'"),
    ("predict", {"pvalue": "x"}, "pvalue must be a number"),
    ("predict", {"label": "abc"}, "label must be an integer, got 'abc'"),
    ("confidence", {"histogram": "garbage"}, "histogram must be class:count pairs, got 'garbage'"),
    ("confidence", {"measure_sum": "x"}, "measure_sum must be a number"),
    ("confidence", {"cdf@0.4": "-1"}, "cdf@0.4 must be a finite number in [0, inf]"),
    ("confidence", {"idx": "abc"}, "idx must be an integer, got 'abc'"),
])
def test_resuming_refuses_a_corrupted_row_naming_its_line(tmp_path, model_pt2, npz_data, capsys, kind, changes,
                                                          message):
    """A resumed run used to keep a corrupted row (and append to its file) or fail with int()'s message."""
    out = tmp_path / "r.tsv"
    assert main(_run_args(kind, model_pt2, npz_data, out) + ["--max", "4"]) == 0
    _edit_row(out, 3, **changes)
    before = open(out).read()
    capsys.readouterr()
    line = one_line_error(capsys, main(_run_args(kind, model_pt2, npz_data, out)))
    assert f"{out} line 3: {message}" in line and open(out).read() == before


def test_resuming_refuses_a_complete_row_with_missing_fields(certified, model_pt2, npz_data, capsys):
    lines = open(certified).read().split("\n")
    lines[2] = "\t".join(lines[2].split("\t")[:5])          # a whole line, ended by its newline: not a cut-off write
    open(certified, "w").write("\n".join(lines))
    capsys.readouterr()
    line = one_line_error(capsys, main(certify_args(model_pt2, npz_data, certified)))
    assert "line 3: 5 fields where the header has" in line


@pytest.mark.parametrize("kind", ["predict", "confidence"])
def test_resuming_still_cuts_a_half_written_last_row(tmp_path, model_pt2, npz_data, kind):
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    assert main(_run_args(kind, model_pt2, npz_data, full)) == 0
    assert main(_run_args(kind, model_pt2, npz_data, part) + ["--max", "5"]) == 0
    with open(part, "a") as f:                            # an interrupted write: half a row, no newline
        f.write("5\t2\t1\tgarb")
    assert main(_run_args(kind, model_pt2, npz_data, part)) == 0
    strip = lambda path: [{k: v for k, v in r.items() if k != "time"} for r in rows(path)]
    assert strip(part) == strip(full)


# -- 7. one line and exit code 2, fast -----------------------------------------------------------------------------
def _factory_module(tmp_path, monkeypatch, source):
    pkg = tmp_path / "userpkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.startswith("userpkg")]:
        del sys.modules[name]


@pytest.mark.parametrize("extra,message", [
    (["--device", "meta"], "cannot run a model"),
    (["--device", "mps"], "MPS is not available"),
    (["--device", "cuda:7"], "CUDA"),
    (["--device", "banana"], "unknown device"),
    (["--batch", "1000000000000"], "more than the"),
    (["--indices", ""], "no input indices"),
])
def test_bad_settings_give_one_line(tmp_path, model_pt2, npz_data, capsys, extra, message):
    if extra[:2] == ["--device", "mps"] and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if extra[1].startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    out = tmp_path / "r.tsv"
    assert message in one_line_error(capsys, main(certify_args(model_pt2, npz_data, out, *extra)))
    assert not out.exists()


@pytest.mark.parametrize("source,spec,message", [
    ("", "torch.nn:Linear", "callable with no arguments"),
    ("def net():\n    raise ValueError('no GPU, no model')\n", "userpkg.nets:net", "raised ValueError: no GPU, no model"),
    ("def net(:\n", "userpkg.nets:net", "SyntaxError"),
    ("X = 3\n", "userpkg.nets:X", "not a function"),
    ("import torch\ndef net():\n    return torch.nn.Linear(16, 3)\n", "userpkg.nets:missing", "cannot find factory"),
])
def test_factory_problems_give_one_line(tmp_path, npz_data, capsys, monkeypatch, source, spec, message):
    _factory_module(tmp_path, monkeypatch, source)
    weights = tmp_path / "w.pt"
    torch.save(nn.Linear(16, 3).state_dict(), weights)
    args = certify_args("x", npz_data, tmp_path / "r.tsv")
    args[args.index("--model") + 1] = spec
    assert message in one_line_error(capsys, main(args + ["--weights", str(weights)]))


def test_a_factory_is_found_from_the_current_folder(tmp_path, npz_data, monkeypatch):
    _factory_module(tmp_path, monkeypatch, "import torch\ndef net():\n    return torch.nn.Sequential("
                                           "torch.nn.Flatten(), torch.nn.Linear(16, 3))\n")
    weights = tmp_path / "w.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).state_dict(), weights)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    args = certify_args("userpkg.nets:net", npz_data, tmp_path / "r.tsv", "--weights", str(weights), "--max", "2")
    assert main(args) == 0
    assert str(tmp_path) not in sys.path          # on the path for the factory only: later imports do not search it


def test_a_pickled_whole_model_as_weights_says_what_it_is(tmp_path, npz_data, capsys):
    weights = tmp_path / "whole.pt"
    torch.save(WithConstant(), weights)
    args = certify_args("digits-cnn", npz_data, tmp_path / "r.tsv", "--weights", str(weights))
    line = one_line_error(capsys, main(args))
    assert "state_dict" in line and "WithConstant" in line and "\x1b" not in line


def test_a_huge_label_is_checked_against_the_model_before_anything_that_large(tmp_path, model_pt2, capsys):
    data = tmp_path / "big_label.npz"
    np.savez(data, x=np.zeros((3, 1, 4, 4), np.float32), y=np.array([0, 1, 10 ** 9]))
    import time
    t0 = time.perf_counter()
    line = one_line_error(capsys, main(certify_args(model_pt2, data, tmp_path / "r.tsv")))
    assert "labels must lie in 0..2" in line and time.perf_counter() - t0 < 20


def test_a_huge_label_with_a_built_in_architecture_is_refused_fast(tmp_path, capsys):
    data = tmp_path / "big_label.npz"
    np.savez(data, x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, 1, 10 ** 9]))
    weights = tmp_path / "w.pt"
    from smoothcert.models import build
    torch.save(build("digits-cnn").state_dict(), weights)
    line = one_line_error(capsys, main(certify_args("digits-cnn", data, tmp_path / "r.tsv", "--weights", str(weights))))
    assert "labels must lie in 0..9" in line


def test_dev_null_as_out_is_refused_before_any_work(model_pt2, npz_data, capsys):
    line = one_line_error(capsys, main(certify_args(model_pt2, npz_data, "/dev/null")))
    assert "not a regular file" in line


@pytest.mark.parametrize("which", ["model", "data", "other-binary"])
def test_an_input_file_given_as_out_is_refused_and_left_alone(tmp_path, model_pt2, npz_data, capsys, which):
    target = {"model": model_pt2, "data": npz_data, "other-binary": tmp_path / "blob.bin"}[which]
    if which == "other-binary":
        target.write_bytes(os.urandom(500))
    before = target.read_bytes()
    line = one_line_error(capsys, main(certify_args(model_pt2, npz_data, target)))
    assert target.read_bytes() == before
    assert {"model": "is the model file", "data": "is the data file", "other-binary": "binary data"}[which] in line


def test_a_resnet_trains_on_one_channel_data(tmp_path):
    """cifar-resnet20 on digits (1 x 8 x 8) used to keep CIFAR's three-channel normalisation and fail."""
    out = tmp_path / "resnet.pt2"
    assert main(["train", "--arch", "cifar-resnet20", "--data", "digits", "--sigma", "0.25", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert load_model(str(out))(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_resuming_with_another_forward_pass_is_refused(tmp_path, model_pt2, npz_data, capsys):
    """Autocast (and a compiled forward pass) change the base classifier: the model column records them."""
    out = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, out, "--max", "4", "--amp", "bf16")) == 0
    assert all(r["model"].endswith("+amp=bf16") for r in rows(out))
    capsys.readouterr()
    assert "model=" in one_line_error(capsys, main(certify_args(model_pt2, npz_data, out)))
