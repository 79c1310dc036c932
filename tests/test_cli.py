"""The command line end to end: certify/predict/train/analyze/demo, resume, and bad input."""
import os
import warnings

import numpy as np
import pytest
import torch

from conftest import certify_args, rows, tiny_cnn, without_time
from smoothcert.cli import main
from smoothcert.models import save_model
from smoothcert.files import CERTIFY_COLUMNS, PREDICT_COLUMNS


def test_certify_writes_cohens_columns_then_the_statistics(tmp_path, model_pt2, npz_data):
    out = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, out)) == 0
    header = open(out).readline().rstrip("\n").split("\t")
    assert tuple(header) == CERTIFY_COLUMNS and header[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    table = rows(out)
    assert [int(r["idx"]) for r in table] == list(range(12))
    for r in table:
        counts = dict(item.split(":") for item in r["counts"].split(","))
        assert sum(map(int, counts.values())) == 300
        assert float(r["radius"]) >= 0
        assert (int(r["predict"]) == -1) == (float(r["radius"]) == 0.0 and float(r["pA_lower"]) < 0.5)
        assert int(r["correct"]) == int(int(r["predict"]) == int(r["label"]))


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, model_pt2, npz_data):
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    assert main(certify_args(model_pt2, npz_data, full)) == 0
    assert main(certify_args(model_pt2, npz_data, part, "--max", "5")) == 0
    with open(part, "a") as f:          # an interrupted write leaves half a row behind
        f.write("5\t2\t1\t0.12")
    assert main(certify_args(model_pt2, npz_data, part)) == 0
    assert without_time(part) == without_time(full)
    assert main(certify_args(model_pt2, npz_data, part)) == 0   # nothing left to do: nothing duplicated
    assert without_time(part) == without_time(full)


def test_resume_refuses_a_file_made_with_other_settings(tmp_path, model_pt2, npz_data, capsys):
    out = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, out, "--max", "3")) == 0
    before = open(out).read()
    args = certify_args(model_pt2, npz_data, out)
    args[args.index("--sigma") + 1] = "0.5"
    assert main(args) == 2
    assert "scale" in capsys.readouterr().err
    assert open(out).read() == before


def test_same_seed_same_file_other_selection_same_rows(tmp_path, model_pt2, npz_data):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    assert main(certify_args(model_pt2, npz_data, a)) == 0
    assert main(certify_args(model_pt2, npz_data, b, "--indices", "7,3")) == 0
    by_idx = {r["idx"]: r for r in without_time(a)}
    for r in without_time(b):
        assert r == by_idx[r["idx"]]


def test_predict_writes_cohens_predict_columns(tmp_path, model_pt2, npz_data):
    out = tmp_path / "p.tsv"
    args = ["predict", "--model", str(model_pt2), "--data", f"npz:{npz_data}", "--sigma", "0.25", "--n", "200",
            "--alpha", "0.01", "--batch", "100", "--seed", "0", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    header = open(out).readline().rstrip("\n").split("\t")
    assert tuple(header) == PREDICT_COLUMNS and header[:5] == ["idx", "label", "predict", "correct", "time"]
    assert len(rows(out)) == 12


def test_factory_and_weights_and_torchscript_models_load(tmp_path, npz_data):
    weights = tmp_path / "w.pt"
    torch.save(tiny_cnn().state_dict(), weights)
    out1 = tmp_path / "a.tsv"
    assert main(certify_args("conftest:tiny_cnn", npz_data, out1, "--weights", str(weights))) == 0
    ts = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(tiny_cnn(), torch.zeros(2, 1, 4, 4)), str(ts))
    out2 = tmp_path / "b.tsv"
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # loading a TorchScript file must not spill deprecation warnings
        assert main(certify_args(ts, npz_data, out2, "--trust-model")) == 0   # refused without (test_hardening3)
    assert [r["counts"] for r in rows(out1)] == [r["counts"] for r in rows(out2)]


def test_train_then_certify_then_analyze(tmp_path, npz_data, capsys):
    model = tmp_path / "m.pt2"
    assert main(["train", "--arch", "digits-cnn", "--data", f"npz:{npz_data}", "--sigma", "0.25", "--epochs", "2",
                 "--out", str(model)]) == 2       # 4x4 images do not fit the 8x8 digits CNN: a clean error
    assert "cannot take inputs of shape (1, 4, 4)" in capsys.readouterr().err
    assert not model.exists()
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    npz_data = tmp_path / "d8.npz"
    np.savez(npz_data, x=(rng.random((30, 1, 8, 8)) * 0.3 + y[:, None, None, None] * 0.3).astype(np.float32), y=y)
    assert main(["train", "--arch", "digits-cnn", "--data", f"npz:{npz_data}", "--sigma", "0.25", "--epochs", "2",
                 "--out", str(model)]) == 0
    out = tmp_path / "r.tsv"
    assert main(certify_args(model, npz_data, out)) == 0
    png = tmp_path / "plot.png"
    assert main(["analyze", str(out), str(out), "--radii", "0", "0.1", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "ACR" in text and "r=0.1" in text
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_runs_end_to_end_and_learns(tmp_path, capsys):
    from smoothcert.jobs.demo import run_demo
    outputs = run_demo(out_dir=str(tmp_path), n=200, epochs=15, progress=False)
    text = capsys.readouterr().out
    assert "ACR" in text and os.path.exists(tmp_path / "certified_accuracy_l2.png")
    assert "the runs at n = 100, 200 came from one nested pass" in text and "early stopping at r0 = 0.25" in text
    assert os.path.exists(tmp_path / "certified_accuracy_l1.png")
    assert os.path.exists(tmp_path / "denoised.png") and "clean CNN behind DnCNN (stability)" in text
    assert "certified accuracy at sigma=0.25, n=200 on all 450 test images" in text
    certified = [p for p in outputs if not os.path.basename(p).startswith("confidence")]   # no certificate column
    assert len(certified) == len(outputs) - 1
    assert {r["certificate"] for path in certified for r in rows(path)} >= {
        "cohen", "margin", "best", "teng", "teng-binary", "lecuyer", "gaussian-l1", "soft-bernstein", "yang-margin",
        "yang"}
    again = run_demo(out_dir=str(tmp_path), n=200, epochs=15, progress=False)   # reuses models, resumes rows
    assert "reusing" in capsys.readouterr().out
    assert [without_time(p) for p in again] == [without_time(p) for p in outputs]
    for path in outputs:
        table = rows(path)
        assert len(table) == 450
        # a working model: most test digits are certified correct at radius 0
        assert np.mean([int(r["correct"]) for r in table]) > 0.7


def bad(tmp_path, model_path, data_path, change):
    args = certify_args(model_path, data_path, tmp_path / "bad.tsv")
    for key, value in change.items():
        flag = "--" + key
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


@pytest.mark.parametrize("change,message", [
    (dict(alpha="0"), "alpha"), (dict(alpha="1.5"), "alpha"), (dict(n="0"), "--n"), (dict(n0="0"), "--n0"),
    (dict(sigma="0"), "sigma"), (dict(sigma="-1"), "sigma"), (dict(model="missing.pt2"), "not found"),
    (dict(data="npz:missing.npz"), "missing.npz"), (dict(certificate="nope"), "certificate"),
    (dict(batch="0"), "batch"),
])
def test_bad_settings_fail_cleanly_without_a_results_file(tmp_path, model_pt2, npz_data, capsys, change, message):
    assert main(bad(tmp_path, model_pt2, npz_data, change)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.tsv").exists()


def _npz(tmp_path, x, y):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.parametrize("case,message", [("nan", "NaN"), ("shape", "shape"), ("label", "labels")])
def test_bad_data_fails_cleanly(tmp_path, model_pt2, capsys, case, message):
    x = np.zeros((4, 1, 4, 4), np.float32)
    y = np.array([0, 1, 2, 0])
    if case == "nan":
        x[2, 0, 1, 1] = np.nan
    elif case == "shape":
        x = np.zeros((4, 1, 5, 5), np.float32)
    else:
        y = np.array([0, 1, 7, 0])
    assert main(certify_args(model_pt2, _npz(tmp_path, x, y), tmp_path / "bad.tsv")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.tsv").exists()


class WrongOutput(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1).sum(1)


class NanOutput(torch.nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 3), float("nan"))


@pytest.mark.parametrize("factory,message", [("WrongOutput", "(batch, classes)"), ("NanOutput", "non-finite")])
def test_bad_model_outputs_fail_cleanly(tmp_path, npz_data, capsys, factory, message):
    path = tmp_path / "m.pt2"
    save_model(globals()[factory](), str(path), torch.zeros(2, 1, 4, 4))
    assert main(certify_args(path, npz_data, tmp_path / "bad.tsv")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.tsv").exists()


def test_weights_that_are_not_a_plain_state_dict_fail_cleanly(tmp_path, npz_data, capsys):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": tiny_cnn().state_dict()}, ckpt)
    whole = tmp_path / "whole.pt"
    torch.save(tiny_cnn(), whole)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(100))
    for path, message in [(ckpt, "not a plain state dict"), (whole, "plain state dict"), (garbage, "plain state dict")]:
        assert main(certify_args("conftest:tiny_cnn", npz_data, tmp_path / "bad.tsv", "--weights", str(path))) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (tmp_path / "bad.tsv").exists()


def test_unreadable_model_file_fails_cleanly(tmp_path, npz_data, capsys):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    assert main(certify_args(junk, npz_data, tmp_path / "bad.tsv")) == 2
    assert "cannot load" in capsys.readouterr().err
    assert not (tmp_path / "bad.tsv").exists()


@pytest.mark.parametrize("noise,first,others", [
    (["--sigma", "0.25"], "cohen", ["margin", "best", "exact-margin", "gaussian-l1"]),
    (["--noise", "laplace", "--lam", "0.2"], "teng", ["teng-binary", "lecuyer", "best"]),
])
def test_recertify_equals_certify_with_that_certificate(tmp_path, model_pt2, npz_data, noise, first, others):
    def args(out, *extra):
        a = certify_args(model_pt2, npz_data, out, *extra)
        i = a.index("--sigma")
        return a[:i] + noise + a[i + 2:]

    base = tmp_path / "base.tsv"
    assert main(args(base)) == 0
    assert {r["certificate"] for r in rows(base)} == {first}
    for name in others:
        direct, again = tmp_path / f"{name}.tsv", tmp_path / f"re-{name}.tsv"
        assert main(args(direct, "--certificate", name)) == 0
        assert main(["recertify", str(base), "--certificate", name, "--out", str(again)]) == 0
        assert without_time(again) == without_time(direct), name
        assert open(again).readline() == open(base).readline()      # the same layout


@pytest.mark.parametrize("change,message", [
    (["--noise", "laplace"], "--lam"), (["--certificate", "teng"], "for laplace noise"),
    (["--noise", "laplace", "--lam", "0.2", "--sigma", "0.25"], "--sigma goes with"),
    (["--noise", "laplace", "--lam", "0.2", "--norm", "l2"], "cannot certify the 'l2' norm"),
    (["--noise", "laplace", "--lam", "0"], "lam must be"),
])
def test_bad_noise_and_certificate_combinations_fail_cleanly(tmp_path, model_pt2, npz_data, capsys, change, message):
    args = certify_args(model_pt2, npz_data, tmp_path / "bad.tsv")
    if "--noise" in change and "--sigma" not in change:
        i = args.index("--sigma")
        args = args[:i] + args[i + 2:]
    elif "--sigma" in change:
        i = args.index("--sigma")
        args = args[:i] + args[i + 2:]
    assert main(args + change) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.tsv").exists()


def test_recertify_refuses_files_it_cannot_read(tmp_path, capsys):
    cohen_style = tmp_path / "cohen.tsv"
    cohen_style.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0:00:01\n")
    assert main(["recertify", str(cohen_style), "--certificate", "margin", "--out", str(tmp_path / "o.tsv")]) == 2
    assert "missing columns" in capsys.readouterr().err
    assert not (tmp_path / "o.tsv").exists()


def test_train_with_laplace_and_adversarial_noise(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    data = tmp_path / "d8.npz"
    np.savez(data, x=(rng.random((60, 1, 8, 8)) * 0.3 + y[:, None, None, None] * 0.3).astype(np.float32), y=y)
    for extra in ([], ["--adv-step", "0.05"]):
        out = tmp_path / f"m{len(extra)}.pt2"
        assert main(["train", "--arch", "digits-cnn", "--data", f"npz:{data}", "--noise", "laplace", "--lam", "0.1",
                     "--epochs", "15", "--out", str(out), *extra]) == 0
        accuracy = float(capsys.readouterr().out.strip().split()[-1])
        assert accuracy > 0.8          # three well-separated classes are learnt under noise


def test_progress_bar_counts_inputs_and_samples(tmp_path, model_pt2, npz_data, capsys):
    from smoothcert.jobs import Progress
    args = [a for a in certify_args(model_pt2, npz_data, tmp_path / "r.tsv") if a != "--no-progress"]
    assert main(args) == 0
    assert "12/12" in capsys.readouterr().err            # the bar reached every input
    bar = Progress(total=4, done=1, enabled=True)
    bar.interval = 0.0
    bar.on_batch(500)
    bar.bar.update(1)
    assert bar.samples == 500 and bar.bar.n == 2 and "samples/s" in str(bar.bar)
    bar.close()


def test_recertify_does_not_overwrite_without_force(tmp_path, model_pt2, npz_data, capsys):
    base, out = tmp_path / "base.tsv", tmp_path / "out.tsv"
    assert main(certify_args(model_pt2, npz_data, base)) == 0
    out.write_text("keep me\n")
    assert main(["recertify", str(base), "--certificate", "margin", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep me\n"
    assert main(["recertify", str(base), "--certificate", "margin", "--out", str(out), "--force"]) == 0
    assert rows(out)[0]["certificate"] == "margin"


@pytest.mark.parametrize("indices,message", [("0,0,1", "given twice"), (",", "no input indices")])
def test_bad_index_selections_fail_cleanly(tmp_path, model_pt2, npz_data, capsys, indices, message):
    assert main(certify_args(model_pt2, npz_data, tmp_path / "bad.tsv", "--indices", indices)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.tsv").exists()


def test_a_half_header_is_refused_and_left_as_it_is(tmp_path, model_pt2, npz_data, capsys):
    """A file smoothcert creates holds its whole header from the start (test_hardening3: the header is written in
    one step), so a half header is not one of its files: a user's file holding 'idx' was cut off and rewritten."""
    out = tmp_path / "r.tsv"
    for text in ("idx\tlabel\tpre", "idx", "\t".join(CERTIFY_COLUMNS)):
        out.write_text(text)
        assert main(certify_args(model_pt2, npz_data, out, "--max", "3")) == 2
        assert "not a complete results header" in capsys.readouterr().err
        assert out.read_text() == text


def test_a_program_exported_with_a_fixed_batch_runs_on_any_batch(tmp_path):
    from smoothcert.models import StaticBatch, load_model
    model = tiny_cnn().eval()
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(4, 1, 4, 4),)), str(path))
    loaded = load_model(str(path))
    assert isinstance(loaded, StaticBatch) and loaded.batch == 4
    x = torch.rand(10, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def _one_line(capsys, code):
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("smoothcert "), err
    return err


@pytest.mark.parametrize("args,message", [
    (["--thresholds", ","], "at least one threshold"),
    (["--thresholds", "0.5,0.5"], "thresholds repeat: 0.5,0.5"),
    (["--thresholds", "0.5,1.5"], "thresholds must lie strictly inside (0, 1)"),
    (["--num-thresholds", "0"], "num_thresholds must be an integer >= 1, got 0"),
])
def test_recertify_checks_thresholds_as_confidence_does(tmp_path, model_pt2, npz_data, capsys, args, message):
    """recertify used to fail in numpy (','), write duplicate cdf@0.5 columns (0.5,0.5) or blame line 2 (0)."""
    conf = tmp_path / "c.tsv"
    assert main(["confidence", *certify_args(model_pt2, npz_data, conf, "--max", "3")[1:]]) == 0
    capsys.readouterr()
    for command in (["recertify", str(conf), "--out", str(tmp_path / "new.tsv")],
                    ["confidence", *certify_args(model_pt2, npz_data, tmp_path / "other.tsv")[1:]]):
        err = _one_line(capsys, main(command + args))
        assert message in err and "line" not in err
    assert not (tmp_path / "new.tsv").exists() and not (tmp_path / "other.tsv").exists()


@pytest.mark.parametrize("column,value,message", [
    ("measure_sum", "x", "line 3: measure_sum must be a number, got 'x'"),
    ("scale", "x", "line 3: scale and alpha must be numbers"),
    ("measure", "probability", "line 3: unknown measure 'probability'"),
])
def test_recertify_names_the_line_of_a_bad_confidence_row(tmp_path, model_pt2, npz_data, capsys, column, value,
                                                          message):
    conf = tmp_path / "c.tsv"
    assert main(["confidence", *certify_args(model_pt2, npz_data, conf, "--max", "3")[1:]]) == 0
    lines = conf.read_text().split("\n")
    header, cells = lines[0].split("\t"), lines[2].split("\t")
    cells[header.index(column)] = value
    lines[2] = "\t".join(cells)
    conf.write_text("\n".join(lines))
    capsys.readouterr()
    err = _one_line(capsys, main(["recertify", str(conf), "--out", str(tmp_path / "new.tsv")]))
    assert f"{conf} {message}" in err and not (tmp_path / "new.tsv").exists()


def test_bench_latency_refuses_a_run_of_other_noise(tmp_path, model_pt2, npz_data, capsys):
    """--results used to predict the ACR of a sigma = 0.25 run at an n timed under sigma = 0.5."""
    run = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, run, "--max", "2")) == 0
    capsys.readouterr()
    err = _one_line(capsys, main(["bench-latency", "--model", str(model_pt2), "--data", f"npz:{npz_data}",
                                  "--sigma", "0.5", "--results", str(run), "--budget-ms", "1", "--repeats", "1"]))
    assert "certified under gaussian(sigma=0.25) but this command times gaussian(sigma=0.5)" in err


def test_every_command_is_registered_once():
    from smoothcert.cli import COMMANDS, build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
