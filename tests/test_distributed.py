"""Certifying on a Ray cluster: the same rows as one process (all columns but time), resume after kill -9 of the
driver or of a worker, one-line errors naming the failing input, and a core that never needs Ray.

The Ray tests share one local cluster per module (starting one takes seconds); the tests without Ray come first,
since one of them hides the `ray` module for a moment."""
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import certify_args, rows, tiny_cnn, without_time
from smoothcert import Gaussian, Smooth, SmoothcertError
from smoothcert.cli import main
from smoothcert.data import load_data
from smoothcert.models import save_model
from smoothcert.jobs import Job, certify_dataset, predict_dataset
from smoothcert.modes import group_size

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def one_thread():
    """The local runs compared with Ray's on one torch thread: the rows are the same on any number (the models
    here give bit-identical logits), and two threads on two busy cores can be fifty times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_without_ray_the_flag_says_how_to_install_it_in_one_line(tmp_path, model_pt2, npz_data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # `import ray` now fails, as where it is not installed
    assert main(certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--ray")) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("Ray is not installed: pip install 'smoothcert[ray]'") and len(err.splitlines()) == 1
    assert not (tmp_path / "r.tsv").exists()
    from smoothcert.distributed import RayExecutor
    with pytest.raises(SmoothcertError, match=r"pip install 'smoothcert\[ray\]'"):
        RayExecutor()


def test_workers_without_ray_is_refused(tmp_path, model_pt2, npz_data, capsys):
    assert main(certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--workers", "2")) == 2
    assert "--workers goes with --ray" in capsys.readouterr().err


def test_the_core_never_imports_ray(tmp_path, model_pt2, npz_data):
    code = ("import sys; import smoothcert, smoothcert.cli, smoothcert.jobs, smoothcert.distributed\n"
            f"assert smoothcert.cli.main({certify_args(model_pt2, npz_data, tmp_path / 'c.tsv')!r}) == 0\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(rows(tmp_path / "c.tsv")) == 12


# -- on a cluster -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module: 4 logical CPUs, so a CLI run's 2 workers start beside the shared
    executor's 2 (idle workers cost memory, not CPU)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(cluster):
    from smoothcert.distributed import RayExecutor
    with RayExecutor(workers=2) as ex:
        yield ex


def _inputs(tmp_path, count=12):
    data = load_data(f"npz:{_write_npz(tmp_path, count)}")
    return Smooth(tiny_cnn(), Gaussian(0.25)), data, list(range(count))


def _write_npz(tmp_path, count, poison=None):
    """`count` inputs (1, 4, 4) of 3 classes; input `poison` carries a pixel of 50 that PoisonOn turns into NaN."""
    rng = np.random.default_rng(1)
    y = np.arange(count) % 3
    x = (rng.random((count, 1, 4, 4)) * 0.2 + y[:, None, None, None] * 0.4).astype(np.float32)
    if poison is not None:
        x[poison, 0, 0, 1] = 50.0
    path = tmp_path / f"data{count}.npz"
    np.savez(path, x=x, y=y)
    return path


def test_tasks_are_whole_sampling_groups_as_one_process_cuts_them(executor):
    for batch, sizes, count in [(128, (20, 300), 12), (1000, (100, 10_000), 450), (256, (100, 100_000), 7),
                                (100, (10, 37), 1001), (500, (50,), 3)]:
        group = group_size(batch, sizes, count)
        indices = list(range(0, 3 * count, 3))                   # inputs need not be 0..count-1
        tasks = executor._tasks(indices, set(), group, sum(sizes), batch)
        assert tasks[0][0] == 0 and tasks[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(tasks, tasks[1:]))
        assert all(start % group == 0 for start, _ in tasks)
        assert all((stop - start) % group == 0 for start, stop in tasks[:-1])
        # a task of whole groups is cut into the same groups when it is run on its own
        assert all(group_size(batch, sizes, stop - start) == min(group, stop - start) for start, stop in tasks)
        if len(tasks) > 1:                                       # a task whose inputs are all done is not sent
            done = set(indices[: tasks[1][0]])
            assert executor._tasks(indices, done, group, sum(sizes), batch) == tasks[1:]


def test_ray_certify_and_predict_give_the_rows_of_one_process_and_resume(tmp_path, executor):
    smoothed, data, indices = _inputs(tmp_path)
    kw = dict(n0=20, n=300, alpha=0.01, batch_size=128, seed=5, progress=False)
    certify_dataset(smoothed, data, indices, str(tmp_path / "local.tsv"), **kw)
    assert certify_dataset(smoothed, data, indices, str(tmp_path / "ray.tsv"), executor=executor, **kw) == 12
    assert without_time(tmp_path / "ray.tsv") == without_time(tmp_path / "local.tsv")
    assert executor.stats.tasks == 3 and executor.stats.samples == 12 * 320 and len(executor.stats.pids) == 2
    executor.task_groups = 2                                 # tasks of two groups (8 inputs) each: the same rows
    try:
        certify_dataset(smoothed, data, indices, str(tmp_path / "ray2.tsv"), executor=executor, **kw)
    finally:
        executor.task_groups = None
    assert without_time(tmp_path / "ray2.tsv") == without_time(tmp_path / "local.tsv") and executor.stats.tasks == 2
    # a file cut after 5 rows (mid-group) and a half-written line: the Ray run resumes it to the same file
    lines = (tmp_path / "local.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "part.tsv").write_text("".join(lines[:6]) + lines[6][:20])
    assert certify_dataset(smoothed, data, indices, str(tmp_path / "part.tsv"), executor=executor, **kw) == 7
    assert without_time(tmp_path / "part.tsv") == without_time(tmp_path / "local.tsv")
    assert executor.stats.tasks == 2                         # the group of inputs 4..7 is sampled whole again

    kw = dict(n=500, alpha=0.01, batch_size=100, seed=2, progress=False)
    predict_dataset(smoothed, data, indices, str(tmp_path / "plocal.tsv"), **kw)
    predict_dataset(smoothed, data, indices, str(tmp_path / "pray.tsv"), executor=executor, **kw)
    assert without_time(tmp_path / "pray.tsv") == without_time(tmp_path / "plocal.tsv")


def test_every_mode_on_ray_gives_the_rows_of_one_process(tmp_path, executor):
    """Several n, input-specific n, early stopping, soft certificates and certified confidence: the same Jobs,
    cut into the same groups (modes.GROUPING), give the same rows."""
    from smoothcert.jobs import confidence_dataset
    smoothed, data, indices = _inputs(tmp_path)
    runs = {"nested": dict(n=[100, 300]), "input-n": dict(n=300, n_max=600, max_loss=0.05),
            "target": dict(n=300, n_max=2000, target_radius=0.1), "soft": dict(n=300, certificate="soft-bernstein")}
    for name, extra in runs.items():
        kw = dict(n0=20, alpha=0.01, batch_size=128, seed=5, progress=False, **extra)
        certify_dataset(smoothed, data, indices, str(tmp_path / f"local_{name}.tsv"), **kw)
        certify_dataset(smoothed, data, indices, str(tmp_path / f"ray_{name}.tsv"), executor=executor, **kw)
        for suffix in (["_n100", "_n300"] if name == "nested" else [""]):
            local, ray = tmp_path / f"local_{name}{suffix}.tsv", tmp_path / f"ray_{name}{suffix}.tsv"
            assert without_time(ray) == without_time(local), name
    kw = dict(n0=20, n=300, alpha=0.01, thresholds=[0.4, 0.6], batch_size=128, seed=5, progress=False)
    confidence_dataset(smoothed, data, indices, str(tmp_path / "local_conf.tsv"), **kw)
    confidence_dataset(smoothed, data, indices, str(tmp_path / "ray_conf.tsv"), executor=executor, **kw)
    assert without_time(tmp_path / "ray_conf.tsv") == without_time(tmp_path / "local_conf.tsv")


def test_the_python_api_draws_one_seed_for_a_whole_ray_run_and_refuses_a_generator(tmp_path, executor):
    smoothed, data, _ = _inputs(tmp_path, 6)
    job = Job("certify_many", (20, 300, 0.01, 128), {})
    got = list(executor(smoothed, job, data.x, range(6)))
    assert len({c.seed for c in got}) == 1 and [c.index for c in got] == list(range(6))
    again = list(smoothed.certify_many(data.x, 20, 300, 0.01, 128, seed=got[0].seed))
    assert [c.counts.tolist() for c in again] == [c.counts.tolist() for c in got]
    with pytest.raises(SmoothcertError, match="generator"):
        executor(smoothed, Job("certify_many", (20, 300, 0.01, 128), {"generator": torch.Generator()}), data.x, range(6))
    with pytest.raises(SmoothcertError, match="input 3 contains NaN"):
        executor(smoothed, job, torch.where(torch.arange(6)[:, None, None, None] == 3, torch.nan, data.x), range(6))


def test_the_cli_on_ray_writes_the_file_of_a_local_run(tmp_path, cluster, model_pt2, npz_data, capsys):
    assert main(certify_args(model_pt2, npz_data, tmp_path / "local.tsv")) == 0
    assert main(certify_args(model_pt2, npz_data, tmp_path / "ray.tsv", "--ray", "--workers", "2")) == 0
    assert without_time(tmp_path / "ray.tsv") == without_time(tmp_path / "local.tsv")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["smoothcert: 2 Ray workers on the Ray cluster of this process"]


POISON = '''
import torch
from torch import nn


class PoisonOn(nn.Module):
    """Logits of a fixed linear layer, NaN for a noisy sample whose pixel (0, 0, 1) is above 25."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, 3)

    def forward(self, x):
        out = self.linear(x.flatten(1))
        return torch.where((x[:, 0, 0, 1] > 25)[:, None], torch.nan, out)


class RaiseOn(PoisonOn):
    """The same layer; raises its own error for such a sample (a model's bug, not a smoothcert error)."""

    def forward(self, x):
        if bool((x[:, 0, 0, 1] > 25).any()):
            raise RuntimeError("boom: a pixel above 25")
        return super().forward(x)
'''


def test_an_input_with_non_finite_logits_fails_the_ray_run_in_one_line_naming_it(tmp_path, cluster, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)                               # the factory is found from here, by the workers too
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "poison_model.py").write_text(POISON)
    import poison_model
    torch.save(poison_model.PoisonOn().state_dict(), tmp_path / "w.pt")
    data = _write_npz(tmp_path, 12, poison=7)

    def args(out, *extra):
        return certify_args("poison_model:PoisonOn", data, out, "--weights", str(tmp_path / "w.pt"), *extra)
    assert main(args(tmp_path / "local.tsv")) == 2               # in one process: stops at the group of 4..7
    capsys.readouterr()
    assert main(args(tmp_path / "ray.tsv", "--ray", "--workers", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "input 7: the model output non-finite logits" in err[1], err
    # the rows before input 7's group (0..3; groups of 4) were written, and are those of the local run
    assert [r["idx"] for r in rows(tmp_path / "ray.tsv")] == ["0", "1", "2", "3"]
    assert without_time(tmp_path / "ray.tsv") == without_time(tmp_path / "local.tsv")
    # the model's own exception: one line naming the input, locally and on Ray, and the same rows
    assert main(args(tmp_path / "local2.tsv", "--model", "poison_model:RaiseOn")) == 2
    assert capsys.readouterr().err.strip() == ("smoothcert certify: error: the model raised RuntimeError on noisy "
                                               "samples: boom: a pixel above 25")
    assert main(args(tmp_path / "ray2.tsv", "--ray", "--workers", "2", "--model", "poison_model:RaiseOn")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[1].endswith("input 7: the model raised RuntimeError on noisy samples: boom: a "
                                             "pixel above 25"), err
    assert without_time(tmp_path / "ray2.tsv") == without_time(tmp_path / "local.tsv")


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_and_the_file_is_the_same(tmp_path, executor):
    smoothed, data, indices = _inputs(tmp_path)
    kw = dict(n0=20, n=50_000, alpha=0.01, batch_size=500, seed=1, progress=False)
    certify_dataset(smoothed, data, indices, str(tmp_path / "local.tsv"), **kw)
    before = set()

    def killing(smoothed, job, xs, indices, skip, on_batch):
        results = executor(smoothed, job, xs, indices, skip, on_batch)
        first = next(results)                        # the workers run, each with tasks in flight
        before.update(executor.pids)
        os.kill(executor.pids[0], signal.SIGKILL)
        yield first
        yield from results

    assert certify_dataset(smoothed, data, indices, str(tmp_path / "ray.tsv"), executor=killing, **kw) == 12
    assert without_time(tmp_path / "ray.tsv") == without_time(tmp_path / "local.tsv")
    assert executor.stats.pids - before, "no task ran on a restarted worker"


@pytest.mark.slow
def test_kill_9_of_the_driver_then_the_same_command_gives_the_file_of_a_local_run(tmp_path, model_pt2, npz_data):
    pytest.importorskip("ray")
    def command(out, *extra):
        args = certify_args(model_pt2, npz_data, out, *extra)
        args[args.index("--n") + 1] = "100000"
        return [sys.executable, "-m", "smoothcert.cli", *args]

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, *sys.path]), OMP_NUM_THREADS="1")
    part = tmp_path / "part.tsv"
    proc = subprocess.Popen(command(part, "--ray", "--workers", "2"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and (not part.exists() or part.read_text().count("\n") < 3):
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=60)
    lines = part.read_text().splitlines()
    assert 2 <= len(lines) - 1 < 12, f"{len(lines) - 1} rows at the kill"
    again = subprocess.run(command(part, "--ray", "--workers", "2"), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    full = tmp_path / "full.tsv"
    assert subprocess.run(command(full), env=env, capture_output=True).returncode == 0
    assert without_time(part) == without_time(full) and len(rows(full)) == 12


@pytest.mark.slow
def test_a_worker_that_loads_another_model_is_refused(tmp_path, cluster):
    from smoothcert.distributed import RayExecutor, Recipe
    smoothed, data, indices = _inputs(tmp_path, 4)
    other = tmp_path / "other.pt2"
    torch.manual_seed(9)
    save_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)), str(other), torch.zeros(2, 1, 4, 4))
    with RayExecutor(workers=1, make_smooth=Recipe.of(str(other), None, smoothed)) as ex:
        with pytest.raises(SmoothcertError, match="loaded another model"):
            certify_dataset(smoothed, data, indices, str(tmp_path / "r.tsv"), n0=20, n=300, alpha=0.01,
                            batch_size=128, executor=ex, progress=False)
    assert not (tmp_path / "r.tsv").exists()
