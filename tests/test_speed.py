"""Speed features testable on a CPU: the timed choice of batch size, the compiled forward pass and its agreement
check, and the prepared GPU check script (run in its CPU mode)."""
import os
import subprocess
import sys
import time
import warnings

import pytest
import torch
from torch import nn

from conftest import Threshold, certify_args
from smoothcert import Gaussian, Smooth
from smoothcert.cli import main
from smoothcert.errors import SmoothcertError
from smoothcert.device import CompileCheck, auto_batch_size, check_compiled, fastest_batch_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Paced(nn.Module):
    """A two-class model whose forward pass on b inputs sleeps b * per_sample(b) seconds: its speed per sample at
    each batch size is set by the test. Records the batch sizes it ran; sizes in `fails` raise `error`."""

    def __init__(self, per_sample, fails=(), error=None):
        super().__init__()
        self.per_sample, self.fails, self.error, self.sizes = per_sample, set(fails), error, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] in self.fails:
            raise self.error
        time.sleep(x.shape[0] * self.per_sample(x.shape[0]))
        return torch.zeros(x.shape[0], 2)


def test_fastest_batch_size_picks_the_least_time_per_sample():
    # 32 runs at half the per-sample time of any other size, though 64 is larger
    cost = {8: 400e-6, 16: 200e-6, 32: 100e-6, 64: 200e-6}
    model = Paced(cost.__getitem__)
    assert fastest_batch_size(model, (1,), torch.device("cpu"), candidates=list(cost), seconds=0.01) == 32
    assert set(model.sizes) == set(cost)
    # equal speeds: the largest wins (it spreads the engine's per-batch work thinner)
    assert fastest_batch_size(Paced(lambda b: 50e-6), (1,), torch.device("cpu"), candidates=[8, 16, 32],
                              seconds=0.01) == 32


def test_fastest_batch_size_stops_at_memory_and_at_slow_passes():
    oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes")
    model = Paced(lambda b: 10e-6, fails={64}, error=oom)
    assert fastest_batch_size(model, (1,), torch.device("cpu"), candidates=[16, 32, 64, 128], seconds=0.01) == 32
    assert 128 not in model.sizes                          # past the first size that does not fit: not tried
    model = Paced(lambda b: 1e-3)                          # a pass of 32 takes 32 ms > longest
    assert fastest_batch_size(model, (1,), torch.device("cpu"), candidates=[16, 32, 64], seconds=0.01,
                              longest=0.02) in (16, 32)
    assert 64 not in model.sizes
    with pytest.raises(SmoothcertError, match="does not fit in memory"):
        fastest_batch_size(Paced(lambda b: 0.0, fails={16}, error=oom), (1,), torch.device("cpu"), candidates=[16])
    with pytest.raises(RuntimeError, match="shapes"):      # other errors are the model's, not a size's
        fastest_batch_size(Paced(lambda b: 0.0, fails={16}, error=RuntimeError("mat1 and mat2 shapes")), (1,),
                           torch.device("cpu"), candidates=[16, 32])


def test_auto_batch_size_on_cpu_times_the_model_once_per_shape_and_keeps_the_global_generator(monkeypatch):
    cost = {64: 40e-6, 128: 10e-6, 256: 40e-6}
    model = Paced(lambda b: cost.get(b, 0.0))
    state = torch.get_rng_state()
    assert auto_batch_size(model, (1,), "cpu", candidates=list(cost)) == 128
    assert torch.equal(state, torch.get_rng_state())       # the timing inputs come from their own generator

    from smoothcert import smooth as smooth_module
    calls = []
    monkeypatch.setattr(smooth_module, "auto_batch_size", lambda *a, **k: calls.append(a[1]) or 128)
    smoothed = Smooth(Threshold(), Gaussian(0.5))
    for seed in range(3):
        c = smoothed.certify(torch.tensor([0.5]), 10, 300, 0.01, None, seed=seed)
        assert c.counts.sum() == 300
    assert calls == [(1,)]                                  # chosen once, then reused with its engine
    assert list(smoothed._samplers) == [128]


def test_auto_batch_size_times_under_autocast_with_amp():
    seen = []

    class Records(Threshold):
        def forward(self, x):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().forward(x)

    auto_batch_size(Records(), (1,), "cpu", candidates=[32], amp="bf16")
    assert seen and all(seen)


class Flipped(nn.Module):
    """A stand-in for a compiled model: the eager model's logits, with the classes swapped on the first k rows."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x):
        out = self.model(x).clone()
        out[:self.k] = out[:self.k].flip(1)
        return out


def test_check_compiled_counts_disagreements_exactly():
    eager = Threshold()
    xs = torch.tensor([[3.0], [-3.0]])      # far from the boundary at 0: no sample's logits tie
    check = check_compiled(eager, Flipped(eager, 7), xs, Gaussian(0.1), 40, "cpu")
    assert (check.samples, check.disagreements) == (40, 7)
    assert "DISAGREE" in check.describe() and "7 of 40" in check.describe()
    same = check_compiled(eager, eager, xs, Gaussian(0.1), 40, "cpu")
    assert same.disagreements == 0 and "agree" in same.describe() and "\n" not in same.describe()


def test_check_compiled_turns_a_compiler_failure_into_one_line():
    class Fails(nn.Module):
        def forward(self, x):
            raise RuntimeError("backend='inductor' raised:\nCalledProcessError: ... (200 more lines)")

    with pytest.raises(SmoothcertError, match=r"torch.compile failed on this model \(RuntimeError: backend=") as err:
        check_compiled(Threshold(), Fails(), torch.zeros(2, 1), Gaussian(0.1), 8, "cpu")
    assert "\n" not in str(err.value)


def test_smooth_compile_certifies_the_compiled_model_and_warns_on_disagreement(monkeypatch):
    eager = Threshold()
    monkeypatch.setattr(torch, "compile", lambda model: Flipped(model, 10_000))   # every row's classes swapped
    smoothed = Smooth(eager, Gaussian(0.25), compile=True)
    x = torch.tensor([2.0])
    with pytest.warns(UserWarning, match="DISAGREE"):
        c = smoothed.certify(x, 20, 200, 0.01, 100, seed=0)
    assert c.prediction == 0                                # the compiled (flipped) model is the one certified
    check = smoothed.compile_checks[(1,)]
    assert isinstance(check, CompileCheck) and check.disagreements == check.samples == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smoothed.certify(x, 20, 200, 0.01, 100, seed=1)     # checked once per shape
    assert Smooth(eager, Gaussian(0.25)).certify(x, 20, 200, 0.01, 100, seed=0).prediction == 1


def test_cli_compile_prints_one_line(tmp_path, model_pt2, npz_data, monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", lambda model: model)   # the real compiler is exercised by the slow test
    out = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, out, "--compile")) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "compiled" in line]
    assert len(err) == 1 and "agree with the eager model's on all 128 noisy samples" in err[0]


@pytest.mark.slow
def test_torch_compile_of_a_small_cnn_agrees_with_eager():
    from conftest import tiny_cnn
    model = tiny_cnn().eval()
    try:
        torch.compile(model)(torch.zeros(4, 1, 4, 4))
    except Exception as exc:  # no compiler on this machine: nothing to check here
        pytest.skip(f"torch.compile does not work here: {type(exc).__name__}")
    xs = torch.rand(3, 1, 4, 4)
    compiled = Smooth(model, Gaussian(0.25), compile=True)
    eager = Smooth(model, Gaussian(0.25))
    a = list(compiled.certify_many(xs, 50, 500, 0.01, 64, seed=3))
    b = list(eager.certify_many(xs, 50, 500, 0.01, 64, seed=3))
    check = compiled.compile_checks[(1, 4, 4)]
    assert check.samples == 64 and check.disagreements == 0 and check.seconds > 0
    assert [c.counts.tolist() for c in a] == [c.counts.tolist() for c in b]


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], check=True)


@pytest.mark.slow
def test_gpu_check_script_runs_in_its_cpu_mode(tmp_path):
    env = {**os.environ, "CPU": "1", "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path)}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| what") and len(table) >= 6
    assert any("certify" in line and "forward" not in line for line in table)
