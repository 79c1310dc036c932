"""Issue 13, third round: what a red-team harness still found (notes/redteam13.py). Each hostile input gives one
line on stderr and exit 2 (or the promised result), within bounded memory, running no code and changing no file.
Hostile files are built small; memory is bounded by refusing before allocating, checked under an address-space
cap where a subprocess is needed."""
import subprocess
import sys

import pytest

from conftest import certify_args

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
