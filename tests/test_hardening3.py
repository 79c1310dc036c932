"""Issue 13, third round: what a red-team harness still found (notes/redteam13.py). Each hostile input gives one
line on stderr and exit 2 (or the promised result), within bounded memory, running no code and changing no file.
Hostile files are built small; memory is bounded by refusing before allocating, checked under an address-space
cap where a subprocess is needed."""
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import certify_args, one_line_error, tiny_cnn
from smoothcert import SmoothcertError
from smoothcert.cli import main
from smoothcert.models import load_model

HERE = __file__.rsplit("/", 1)[0]


def run_cli(args, cwd, prelude="", timeout=120, memory_mb=None):
    """Run `smoothcert` (main(args)) in a subprocess after `prelude`; with `memory_mb`, under that address-space
    cap (RLIMIT_AS), so an input that makes it allocate past the cap fails. Returns the CompletedProcess."""
    limit = ""
    if memory_mb:
        limit = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory_mb << 20}, {memory_mb << 20}))\n")
    code = (f"import sys\nsys.path[:0] = {[f'{HERE}/..', HERE]!r}\n{prelude}\nfrom smoothcert.cli import main\n"
            f"{limit}sys.exit(main({[str(a) for a in args]!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def one_line(done) -> str:
    """The one stderr line of a refused command (exit 2, nothing else on stderr)."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("smoothcert "), done.stderr
    return lines[0]


# -- 1. Ray: an address that accepts and never answers ---------------------------------------------------------------
@pytest.mark.slow
def test_a_ray_address_that_never_answers_prints_only_our_line(tmp_path, model_pt2, npz_data):
    """Ray's C++ core logs 'Failed to connect to GCS ... within 5 seconds' to stderr for every try: with a deadline
    past 5 s, the error was one line among Ray's."""
    pytest.importorskip("ray")
    prelude = ("import socket\nserver = socket.socket()\nserver.bind(('127.0.0.1', 0))\nserver.listen(4)\n"
               "import smoothcert.distributed.cluster as cluster\ncluster.CONNECT_TIMEOUT = 7.0\n")
    args = certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--ray", "ADDRESS")
    code_args = repr(args).replace("'ADDRESS'", "f'127.0.0.1:{server.getsockname()[1]}'")
    code = (f"import sys\nsys.path[:0] = {[f'{HERE}/..', HERE]!r}\n{prelude}from smoothcert.cli import main\n"
            f"sys.exit(main({code_args}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "no Ray cluster answered at 127.0.0.1:" in one_line(done)
    assert not (tmp_path / "r.tsv").exists()


# -- 2. TorchScript files run code on load (__setstate__) and when run -----------------------------------------------
def test_a_torchscript_file_is_refused_without_trust_and_runs_nothing(tmp_path, npz_data, capsys):
    ts = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(tiny_cnn(), torch.zeros(2, 1, 4, 4)), str(ts))
    out = tmp_path / "r.tsv"
    line = one_line_error(capsys, main(certify_args(ts, npz_data, out)))
    assert "is a TorchScript file" in line and "--trust-model" in line and "save_model" in line and ".pt2" in line
    assert not out.exists()
    with pytest.raises(SmoothcertError, match="TorchScript"):
        load_model(str(ts))
    assert isinstance(load_model(str(ts), trust=True), torch.nn.Module)


def test_a_torchscript_file_whose_load_would_write_a_file_is_refused_before_loading(tmp_path, monkeypatch):
    """Refused before torch.jit.load is called at all (it unpickles the file's constants, running __setstate__)."""
    ts = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny_cnn()), str(ts))
    monkeypatch.chdir(tmp_path)
    called = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: called.append(a))
    with pytest.raises(SmoothcertError, match="TorchScript"):
        load_model(str(ts))
    assert not called


def test_a_file_that_is_neither_pt2_nor_torchscript_says_what_a_state_dict_needs(tmp_path, capsys, npz_data):
    weights = tmp_path / "w.pt"
    torch.save(tiny_cnn().state_dict(), weights)
    line = one_line_error(capsys, main(certify_args(weights, npz_data, tmp_path / "r.tsv")))
    assert "neither a torch.export program" in line and "--weights" in line
