"""Issue 13, item 5: what still printed a traceback, hung, asked for the impossible or named the wrong input. Each
case gives one line on stderr, exit 2, and no output file (or, for CRLF files and negative thresholds, the
promised result)."""
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from conftest import certify_args, rows, tiny_cnn, without_time
from smoothcert import Gaussian, Smooth, SmoothcertError
from smoothcert.cli import main
from smoothcert.models import save_model
from test_hardening import one_line_error

HUGE = "99999999999999999999"                          # beyond int64 (9.2e18)


def _main(argv):
    """main's exit code, also where argparse exits (a bad value of a flag)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _model_args(model, data):
    return ["--model", str(model), "--data", f"npz:{data}", "--sigma", "0.25"]


def _run(kind, model, data, out, *extra):
    return [kind, *_model_args(model, data), "--no-progress", "--max", "2", "--out", str(out), *extra]


# -- numbers beyond int64, and flags that took inf or nan ------------------------------------------------------------
@pytest.mark.parametrize("kind,extra,message", [
    ("certify", ["--n", HUGE], "--n must be at most 4,611,686,018,427,387,904"),
    ("certify", ["--n0", HUGE, "--n", "100"], "argument --n0: must be an integer <= 4,611,686,018,427,387,904"),
    ("certify", ["--n-max", HUGE, "--max-loss", "0.1"], "argument --n-max: must be an integer"),
    ("certify", ["--n-max", HUGE, "--target-radius", "0.1"], "argument --n-max: must be an integer"),
    ("certify", ["--n", str(2 ** 62), "--n0", str(2 ** 62)], "samples, more than 4,611,686,018,427,387,904"),
    ("predict", ["--n", HUGE], "argument --n: must be an integer"),
    ("confidence", ["--n", HUGE], "argument --n: must be an integer"),
    ("confidence", ["--n0", HUGE], "argument --n0: must be an integer"),
    ("confidence", ["--num-thresholds", HUGE], "argument --num-thresholds: must be an integer"),
    ("certify", ["--n", "100", "--seed", HUGE + "0"], "argument --seed: must be an integer"),
    ("certify", ["--n", "100", "--batch", HUGE], "--batch must be at most"),
    ("certify", ["--n", "100", "--workers", HUGE, "--ray"], "argument --workers: must be an integer"),
    ("certify", ["--n-max", "1000", "--target-radius", "inf"], "argument --target-radius: must be a finite number > 0"),
    ("certify", ["--n-max", "1000", "--target-radius", "nan"], "argument --target-radius: must be a finite number > 0"),
    ("certify", ["--n-max", "1000", "--max-loss", "inf", "--loss", "absolute"],
     "argument --max-loss: must be a finite number >= 0"),
])
def test_numbers_beyond_int64_and_non_finite_values_give_one_line(tmp_path, model_pt2, npz_data, capsys, kind,
                                                                   extra, message):
    out = tmp_path / "r.tsv"
    line = one_line_error(capsys, _main(_run(kind, model_pt2, npz_data, out, *extra)))
    assert message in line and "Traceback" not in line
    assert not list(tmp_path.glob("r*.tsv"))


@pytest.mark.parametrize("extra,message", [
    (["--n0", HUGE], "argument --n0: must be an integer"),
    (["--repeats", HUGE], "argument --repeats: must be an integer"),
    (["--index", HUGE], "argument --index: must be an integer"),
    (["--budget-ms", "inf"], "argument --budget-ms: must be a finite number > 0, got inf"),
    (["--budget-ms", "nan"], "argument --budget-ms: must be a finite number > 0, got nan"),
    (["--budget-ms", "0"], "argument --budget-ms: must be a finite number > 0, got 0"),
    (["--budget-ms", "-5"], "argument --budget-ms: must be a finite number > 0, got -5"),
])
def test_bench_latency_refuses_overflow_and_an_infinite_budget(model_pt2, npz_data, capsys, extra, message):
    """--budget-ms inf used to time n up to a million and print 'the largest n within inf ms'."""
    t0 = time.perf_counter()
    line = one_line_error(capsys, _main(["bench-latency", *_model_args(model_pt2, npz_data), "--repeats", "1",
                                        *extra]))
    assert message in line and time.perf_counter() - t0 < 60


def test_bench_latency_refuses_an_infinite_budget_in_the_python_api(model_pt2):
    from smoothcert.jobs import bench_latency
    smoothed = Smooth(tiny_cnn(), Gaussian(0.25))
    for budget in (float("inf"), float("nan")):
        with pytest.raises(SmoothcertError, match="--budget-ms must be a finite number > 0"):
            bench_latency(smoothed, torch.zeros(1, 4, 4), n0=10, alpha=0.01, budget_ms=budget, repeats=1)


@pytest.mark.parametrize("extra,message", [
    (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
    (["--adv-step", "inf"], "argument --adv-step: must be a finite number >= 0, got inf"),
    (["--adv-step", "nan"], "argument --adv-step: must be a finite number >= 0, got nan"),
    (["--epochs", HUGE], "argument --epochs: must be an integer"),
    (["--batch", HUGE], "argument --batch: must be an integer"),
    (["--seed", HUGE + "0"], "argument --seed: must be an integer"),
])
def test_train_refuses_what_used_to_save_a_nan_model_or_overflow(tmp_path, npz_data, capsys, extra, message):
    """--lr inf and --adv-step inf used to train and save a model of NaN weights; --batch and --seed beyond int64
    said 'Overflow when unpacking long long'."""
    out = tmp_path / "m.pt"
    line = one_line_error(capsys, _main(["train", "--data", f"npz:{npz_data}", "--sigma", "0.25", "--epochs", "1",
                                        "--out", str(out), *extra]))
    assert message in line and not out.exists()


def test_train_refuses_non_finite_steps_in_the_python_api():
    from smoothcert.train import train
    x, y = torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.int64)
    for kw, message in (({"lr": float("inf")}, "learning rate"), ({"adversarial_step": float("inf")}, "adversarial")):
        with pytest.raises(SmoothcertError, match=f"{message} .*must be a finite number"):
            train(tiny_cnn(), x, y, Gaussian(0.25), epochs=1, **kw)


def test_the_python_api_refuses_sample_sizes_beyond_int64_with_a_smoothcert_error():
    """Smooth.certify(..., n=10**20) raised OverflowError from numpy."""
    smoothed, x = Smooth(tiny_cnn(), Gaussian(0.25)), torch.zeros(1, 4, 4)
    for n0, n, name in ((10 ** 20, 100, "n0"), (10, 10 ** 20, "n")):
        with pytest.raises(SmoothcertError, match=f"{name} must be at most 4,611,686,018,427,387,904"):
            smoothed.certify(x, n0, n, 0.01, 100)
    with pytest.raises(SmoothcertError, match="n must be at most"):
        smoothed.predict(x, 10 ** 20, 0.01, 100)
    with pytest.raises(SmoothcertError, match="one call asks for 9,223,372,036,854,775,808 samples"):
        smoothed.certify(x, 2 ** 62, 2 ** 62, 0.01, 100)


def test_the_engine_holds_memory_per_request_not_per_sample():
    """A call for 10^12 samples used to build a (10^12,) array of owners first: 8 TB, a MemoryError before the
    first batch. Now the first batch arrives (and the run is stopped there)."""
    from smoothcert.engine import Request, Sampler, Stream, Votes

    class Stop(Exception):
        pass

    def stop(k):
        raise Stop(k)
    sampler = Sampler(tiny_cnn(), Gaussian(0.25), 3, batch_size=100)
    requests = [Request(0, Stream(torch.Generator().manual_seed(0)), 10 ** 12)]
    with pytest.raises(Stop):
        sampler.run(torch.zeros(1, 1, 4, 4), requests, [Votes()], stop)


# -- --n-max's cap, named and documented ------------------------------------------------------------------------------
def test_n_max_over_the_cap_of_input_specific_n_names_the_flag_and_the_cap_is_documented(tmp_path, model_pt2,
                                                                                           npz_data, capsys):
    """It used to say 'n must be an integer in [1, 1000000]', a cap the help did not mention."""
    out = tmp_path / "r.tsv"
    line = one_line_error(capsys, _main(_run("certify", model_pt2, npz_data, out, "--n-max", "2000000",
                                            "--max-loss", "0.1")))
    assert "--n-max must be at most 1,000,000 with --max-loss" in line and not out.exists()
    with pytest.raises(SystemExit):
        main(["certify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-loss (at most 1,000,000" in text
    readme = open(f"{__file__.rsplit('/tests/', 1)[0]}/README.md").read()
    assert "at most 1,000,000" in readme


# -- duplicated rows: plan and bench-latency refuse them as analyze does ---------------------------------------------
@pytest.fixture
def duplicated(tmp_path, model_pt2, npz_data):
    run = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, run, "--max", "3")) == 0
    lines = run.read_text().splitlines(keepends=True)
    run.write_text("".join(lines + lines[1:2]))           # input 0 once more, on line 5
    return run


def test_plan_and_bench_latency_refuse_duplicated_rows_as_analyze_does(duplicated, model_pt2, npz_data, capsys):
    capsys.readouterr()
    for command in (["analyze", str(duplicated)], ["plan", "--results", str(duplicated)],
                    ["bench-latency", *_model_args(model_pt2, npz_data), "--repeats", "1", "--budget-ms", "1",
                     "--results", str(duplicated)]):
        line = one_line_error(capsys, _main(command))
        assert re.search(r"line 5: input idx 0 appears again \(first at .*line 2\)", line), line


# -- Ray: an address that does not answer, and more workers than CPUs ------------------------------------------------
def test_a_ray_address_where_nothing_listens_fails_in_one_line_fast(tmp_path, model_pt2, npz_data, capsys):
    """--ray 127.0.0.1:1 used to retry for more than 300 s."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray cluster is running in this process")
    t0 = time.perf_counter()
    line = one_line_error(capsys, _main(certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--ray", "127.0.0.1:1")))
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in line and time.perf_counter() - t0 < 30
    assert not ray.is_initialized() and not (tmp_path / "r.tsv").exists()


SILENT = """
import socket, sys
sys.path[:0] = {paths!r}
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(4)                                   # accepts connections and never answers
import smoothcert.distributed.cluster
smoothcert.distributed.cluster.CONNECT_TIMEOUT = 2.0
from smoothcert.cli import main
sys.exit(main({args!r} + ["--ray", f"127.0.0.1:{{server.getsockname()[1]}}"]))
"""


@pytest.mark.slow
def test_a_ray_address_that_does_not_answer_as_a_cluster_fails_after_the_deadline(tmp_path, model_pt2, npz_data):
    """Something listens but is not a Ray cluster: ray.init would retry for minutes; it is given up on after
    CONNECT_TIMEOUT (2 s here). In a subprocess: the abandoned ray.init thread ends with it."""
    pytest.importorskip("ray")
    here = __file__.rsplit("/", 1)[0]
    code = SILENT.format(paths=[f"{here}/..", here], args=certify_args(model_pt2, npz_data, tmp_path / "r.tsv"))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.perf_counter() - t0 < 60, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("smoothcert")]
    assert ours == [f"smoothcert certify: error: no Ray cluster answered at {ours[0].split(' at ')[1].split()[0]} "
                    "within 2 s (is it a Ray cluster's address, host:port of its head node?)"], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r.tsv").exists()


def test_more_workers_than_this_machines_cpus_are_refused_before_a_cluster_starts(tmp_path, model_pt2, npz_data,
                                                                                  capsys):
    """--ray --workers 100000 used to start a local cluster of 100,000 CPUs and ask it for 100,000 actors."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray cluster is running in this process")
    line = one_line_error(capsys, _main(certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--ray",
                                                    "--workers", "100000")))
    assert re.search(r"100,000 workers asked for \(--workers\), but this machine has \d+ CPUs: at most \d+", line)
    assert not ray.is_initialized() and not (tmp_path / "r.tsv").exists()


def test_worker_count_is_capped_by_the_cluster():
    from smoothcert.distributed.cluster import worker_count
    assert worker_count({"CPU": 4.0}, None, 0) == 4 and worker_count({"CPU": 4.0}, 3, 0) == 3
    assert worker_count({"CPU": 16.0, "GPU": 2.0}, None, 1) == 2
    with pytest.raises(SmoothcertError, match="5 workers asked for .*the Ray cluster has 4 CPUs: at most 4"):
        worker_count({"CPU": 4.0}, 5, 0)
    with pytest.raises(SmoothcertError, match="3 workers .* 2 GPUs \\(1 per worker\\): at most 2"):
        worker_count({"CPU": 16.0, "GPU": 2.0}, 3, 1)


# -- inputs named by their data-set index -----------------------------------------------------------------------------
class PoisonOn(nn.Module):
    """A linear layer whose logits are NaN for a sample with pixel (0, 0, 1) above 25."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, 3)

    def forward(self, x):
        return torch.where((x[:, 0, 0, 1] > 25)[:, None], torch.nan, self.linear(x.flatten(1)))


@pytest.fixture
def poisoned(tmp_path, npz_data):
    """The npz data with input 7 poisoned, and PoisonOn as a .pt2."""
    with np.load(npz_data) as f:
        x, y = f["x"].copy(), f["y"]
    x[7, 0, 0, 1] = 50.0
    data, model = tmp_path / "poisoned.npz", tmp_path / "poison.pt2"
    np.savez(data, x=x, y=y)
    save_model(PoisonOn(), str(model), torch.zeros(2, 1, 4, 4))
    return model, data


@pytest.mark.parametrize("kind,selection", [
    ("certify", ["--start", "1", "--skip", "2"]),              # inputs 1, 3, 5, 7, ...: input 7 at position 3
    ("certify", ["--indices", "9,7,2"]),
    ("certify", ["--indices", "7,2"]),                        # first: the model's probe finds it
    ("predict", ["--start", "5"]),
    ("confidence", ["--indices", "11,7"]),
    ("certify", ["--start", "3", "--certificate", "soft-hoeffding"]),
])
def test_non_finite_logits_name_the_input_by_its_data_set_index(tmp_path, poisoned, capsys, kind, selection):
    """They used to say only 'the model output non-finite logits', without the input."""
    model, data = poisoned
    out = tmp_path / "r.tsv"
    args = [kind, *_model_args(model, data), "--no-progress", "--batch", "64", "--out", str(out), *selection]
    line = one_line_error(capsys, _main(args + ["--n", "100"]))       # one group: no row is written before it
    assert line.endswith("error: input 7: the model output non-finite logits (NaN or inf)"), line
    assert not out.exists()


def test_non_finite_logits_name_the_input_in_the_python_api(npz_data):
    with np.load(npz_data) as f:
        xs = torch.from_numpy(f["x"][:6].copy())
    xs[4, 0, 0, 1] = 50.0
    smoothed = Smooth(PoisonOn(), Gaussian(0.25))
    with pytest.raises(SmoothcertError, match=r"^input 14: the model output non-finite logits"):
        list(smoothed.certify_many(xs, 10, 100, 0.01, 64, seed=0, indices=range(10, 16)))
    with pytest.raises(SmoothcertError, match=r"^input 4: the model output non-finite logits"):
        list(smoothed.certify_many(xs, 10, 100, 0.01, 64, seed=0))
    with pytest.raises(SmoothcertError, match=r"^input 14: "):
        list(smoothed.certify_input_n(xs, 10, 1000, 0.01, 64, seed=0, indices=range(10, 16)))


def test_a_nan_input_is_named_by_its_data_set_index(tmp_path, npz_data, model_pt2, capsys):
    """It used to say 'first at position 3' (its place among the selected inputs), or, first in the selection,
    blame the model's logits."""
    with np.load(npz_data) as f:
        x, y = f["x"].copy(), f["y"]
    x[7, 0, 1, 1] = np.nan
    data = tmp_path / "nan.npz"
    np.savez(data, x=x, y=y)
    for selection in (["--start", "1", "--skip", "2"], ["--indices", "7,8"]):
        out = tmp_path / "r.tsv"
        line = one_line_error(capsys, _main(certify_args(model_pt2, data, out, *selection)))
        assert line.endswith("error: input 7 contains NaN or inf") and not out.exists()


def test_a_float64_value_that_overflows_float32_is_named(tmp_path, npz_data, model_pt2, capsys):
    """An npz whose x holds 1e300 used to become inf in float32 and blame the model's logits."""
    with np.load(npz_data) as f:
        x, y = f["x"].astype(np.float64), f["y"]
    x[5, 0, 2, 3] = -1e300
    data = tmp_path / "big.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "r.tsv"
    line = one_line_error(capsys, _main(certify_args(model_pt2, data, out, "--indices", "5")))
    assert line.endswith(f"x in {data}: input 5 holds -1e+300, which overflows float32 (inputs are loaded as "
                         "float32)") and not out.exists()
    x[5, 0, 2, 3] = 3e38                                  # within float32: loaded and certified
    np.savez(data, x=x, y=y)
    assert main(certify_args(model_pt2, data, out, "--indices", "4")) == 0


def test_a_value_beyond_the_models_dtype_is_named_in_the_python_api():
    half = Smooth(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).half(), Gaussian(0.25))
    xs = torch.zeros(3, 1, 4, 4)
    xs[2, 0, 0, 0] = 1e5                                  # finite in float32, inf in float16
    with pytest.raises(SmoothcertError, match=r"^input 12 holds 100000, which overflows float16 \(the model's dtype\)"):
        list(half.certify_many(xs, 10, 100, 0.01, 64, seed=0, indices=[10, 11, 12]))
    wide = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    wide[1, 0, 3, 3] = 1e300
    with pytest.raises(SmoothcertError, match=r"^input 1 holds 1e\+300, which overflows float32 \(the model's dtype\)"):
        list(Smooth(tiny_cnn(), Gaussian(0.25)).certify_many(wide, 10, 100, 0.01, 64, seed=0))


# -- results files with Windows line ends ------------------------------------------------------------------------------
def _crlf(path, to):
    to.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    return to


def test_crlf_results_files_read_as_the_same_rows(tmp_path, model_pt2, npz_data, capsys):
    """A file saved with \\r\\n line ends was 'not a smoothcert results file' (missing column counts\\r)."""
    lf = tmp_path / "lf.tsv"
    assert main(certify_args(model_pt2, npz_data, lf, "--max", "3")) == 0
    crlf = _crlf(lf, tmp_path / "crlf.tsv")
    capsys.readouterr()
    outputs = {}
    for name, path in (("lf", lf), ("crlf", crlf)):
        capsys.readouterr()
        assert main(["analyze", str(path)]) == 0
        assert main(["plan", "--results", str(path), "--n", "100,300"]) == 0
        outputs[name] = capsys.readouterr().out.replace(str(path), "PATH")
        assert main(["bench-latency", *_model_args(model_pt2, npz_data), "--repeats", "1", "--budget-ms", "1e-9",
                     "--results", str(path)]) == 0                   # (its timings differ from run to run)
        assert main(["recertify", str(path), "--certificate", "margin", "--out", str(tmp_path / f"re_{name}.tsv")]) \
            == 0
    assert outputs["crlf"] == outputs["lf"]
    assert rows(tmp_path / "re_crlf.tsv") == rows(tmp_path / "re_lf.tsv")
    # resumed: the rows there are kept and checked, the rest appended
    capsys.readouterr()
    assert main(certify_args(model_pt2, npz_data, crlf, "--max", "5")) == 0
    assert main(certify_args(model_pt2, npz_data, lf, "--max", "5")) == 0
    assert capsys.readouterr().out.count("2 rows written") == 2
    assert without_time(crlf) == without_time(lf)


def test_crlf_soft_and_confidence_files_keep_their_kind(tmp_path, model_pt2, npz_data, capsys):
    """A soft file's header ends in 'scores': read with its \\r, it was re-certified as a hard file."""
    soft = tmp_path / "soft.tsv"
    assert main(certify_args(model_pt2, npz_data, soft, "--max", "3", "--certificate", "soft-hoeffding")) == 0
    assert main(["recertify", str(_crlf(soft, tmp_path / "soft_crlf.tsv")), "--certificate", "soft-bernstein",
                 "--out", str(tmp_path / "a.tsv")]) == 0
    assert main(["recertify", str(soft), "--certificate", "soft-bernstein", "--out", str(tmp_path / "b.tsv")]) == 0
    assert rows(tmp_path / "a.tsv") == rows(tmp_path / "b.tsv") and "scores" in rows(tmp_path / "a.tsv")[0]
    conf = tmp_path / "conf.tsv"
    assert main(["confidence", *certify_args(model_pt2, npz_data, conf, "--max", "3")[1:]]) == 0
    conf_crlf = _crlf(conf, tmp_path / "conf_crlf.tsv")
    capsys.readouterr()
    for path in (conf, conf_crlf):
        assert main(["analyze", str(path)]) == 0
        assert main(["recertify", str(path), "--thresholds", "0.6", "--out", str(tmp_path / f"re_{path.name}")]) == 0
    out = capsys.readouterr().out
    assert out.count("3 rows re-certified") == 2
    assert rows(tmp_path / "re_conf.tsv") == rows(tmp_path / "re_conf_crlf.tsv")


# -- negative thresholds, as written ---------------------------------------------------------------------------------
def test_negative_thresholds_parse_as_written(tmp_path, model_pt2, npz_data, capsys):
    """argparse took '-0.5,0,0.5' for an option: 'argument --thresholds: expected one argument'."""
    out = tmp_path / "c.tsv"
    assert main(["confidence", *certify_args(model_pt2, npz_data, out, "--max", "2")[1:], "--measure", "margin",
                 "--thresholds", "-0.5,0,0.5"]) == 0
    assert [h for h in rows(out)[0] if h.startswith("cdf@")] == ["cdf@-0.5", "cdf@0", "cdf@0.5"]
    assert main(["recertify", str(out), "--thresholds", "-0.25", "--out", str(tmp_path / "new.tsv")]) == 0
    assert [h for h in rows(tmp_path / "new.tsv")[0] if h.startswith("cdf@")] == ["cdf@-0.25"]
    capsys.readouterr()
    line = one_line_error(capsys, _main(["confidence", *certify_args(model_pt2, npz_data, tmp_path / "s.tsv")[1:],
                                        "--thresholds", "-0.5,0.5"]))        # the score measure lies in [0, 1]
    assert "thresholds must lie strictly inside (0, 1)" in line and not (tmp_path / "s.tsv").exists()


def test_argparse_errors_are_one_line(capsys):
    line = one_line_error(capsys, _main(["certify", "--model", "m.pt2", "--out", "r.tsv", "--noise", "banana"]))
    assert line.startswith("smoothcert certify: error: argument --noise: invalid choice: 'banana'")
    assert line.endswith("(see smoothcert certify --help)")


# -- tampered soft sums and single-stage refusals name the file and line ---------------------------------------------
@pytest.fixture
def soft_file(tmp_path, model_pt2, npz_data):
    out = tmp_path / "soft.tsv"
    assert main(certify_args(model_pt2, npz_data, out, "--max", "3", "--certificate", "soft-hoeffding")) == 0
    return out


def _edit(path, line, column, edit):
    lines = path.read_text().split("\n")
    header, cells = lines[0].split("\t"), lines[line - 1].split("\t")
    cells[header.index(column)] = edit(cells[header.index(column)])
    lines[line - 1] = "\t".join(cells)
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("column,edit", [
    ("scores", lambda s: re.sub(r"^0:[^:]+:", "0:99999.0:", s)),       # a class's sum beyond n
    ("scores", lambda s: re.sub(r"^0:[^:]+:", "0:-5.0:", s)),          # negative
    ("scores", lambda s: re.sub(r"^0:([^:]+):[^,]+", r"0:\1:99999.0", s)),   # squares beyond the sum
    ("scores", lambda s: re.sub(r"^0:([^:]+):", lambda m: f"0:{float(m[1]) * 0.97!r}:", s)),   # plausible, but
    # the classes' sums no longer add up to n
    ("scores_selection", lambda s: re.sub(r"^0:[^,]+", "0:500.0", s)),
])
@pytest.mark.parametrize("certificate", ["soft-hoeffding", "soft-bernstein", "cohen"])
def test_tampered_soft_sums_are_refused_naming_the_file_and_line(soft_file, tmp_path, capsys, column, edit,
                                                                  certificate):
    """They used to be refused (or not) by the bounds, without file or line: 'a sum of n values in [0, 1] must
    lie in [n*0, n*1]'; a total changed within range passed."""
    _edit(soft_file, 3, column, edit)
    capsys.readouterr()
    new = tmp_path / "new.tsv"
    line = one_line_error(capsys, _main(["recertify", str(soft_file), "--certificate", certificate, "--out", str(new)]))
    assert f"{soft_file} line 3: {column} are not sums of softmax scores over the row's" in line
    assert not new.exists()


def test_resuming_a_tampered_soft_file_is_refused_naming_the_line(soft_file, model_pt2, npz_data, capsys):
    _edit(soft_file, 2, "scores", lambda s: re.sub(r"^0:[^:]+:", "0:1e-3:", s))
    capsys.readouterr()
    line = one_line_error(capsys, _main(certify_args(model_pt2, npz_data, soft_file, "--max", "4", "--certificate",
                                                    "soft-hoeffding")))
    assert f"{soft_file} line 2: scores are not sums of softmax scores" in line


@pytest.mark.parametrize("certificate", ["cohen", "margin", "best", "soft-hoeffding"])
def test_a_single_stage_file_is_refused_naming_the_file_and_line(tmp_path, model_pt2, npz_data, capsys,
                                                                 certificate):
    """It used to say 'every input needs at least one selection and one estimation sample', naming nothing."""
    single = tmp_path / "single.tsv"
    assert main(certify_args(model_pt2, npz_data, single, "--max", "2", "--certificate", "single-stage",
                             "--n0", "0")) == 0
    capsys.readouterr()
    new = tmp_path / "new.tsv"
    line = one_line_error(capsys, _main(["recertify", str(single), "--certificate", certificate, "--out", str(new)]))
    assert f"{single} line 2: n0 is 0" in line and "only --certificate single-stage re-certifies it" in line
    assert not new.exists()
    assert main(["recertify", str(single), "--certificate", "single-stage", "--out", str(new)]) == 0
