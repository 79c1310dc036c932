"""Denoised smoothing wired through the API and the command line: Smooth(..., denoiser=), --denoiser on every command
that builds a Smooth (the model column covers classifier and denoiser; resuming with another is refused), Ray workers
building the same composition, --batch auto / --compile / --amp on the composition, train-denoiser, train --clean,
and each bad input in one line with exit 2."""

import pytest
import torch
from torch import nn

from conftest import certify_args, one_line_error, rows, tiny_cnn, without_time
from smoothcert import Gaussian, Smooth, SmoothcertError
from smoothcert.cli import main
from smoothcert.data import load_data
from smoothcert.denoise import Denoised, dncnn
from smoothcert.models import build, fingerprint, load_model, save_model
from smoothcert.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def small_denoiser(seed=1):
    """A 3-layer DnCNN that is not the identity (its last convolution is not zero)."""
    torch.manual_seed(seed)
    d = dncnn(1, depth=3, width=4)
    with torch.no_grad():
        d.body[-1].weight.normal_(0, 0.1)
    return d.eval()


@pytest.fixture
def denoiser_files(tmp_path):
    """The same denoiser as a state dict (for --denoiser dncnn) and as a .pt2 file; a second, different one."""
    d = small_denoiser()
    torch.save(d.state_dict(), tmp_path / "d.pt")
    save_model(d, str(tmp_path / "d.pt2"), torch.zeros(2, 1, 4, 4))
    save_model(small_denoiser(2), str(tmp_path / "other.pt2"), torch.zeros(2, 1, 4, 4))
    return d, tmp_path / "d.pt", tmp_path / "d.pt2", tmp_path / "other.pt2"


def models(path) -> set:
    return {r["model"] for r in rows(path)}


# -- the API ------------------------------------------------------------------------------------------------------
def test_smooth_with_a_denoiser_is_smooth_of_the_composition():
    clf, d = tiny_cnn(), small_denoiser()
    smoothed = Smooth(clf, Gaussian(0.25), denoiser=d)
    assert isinstance(smoothed.model, Denoised) and smoothed.model.classifier is clf and smoothed.model.denoiser is d
    assert smoothed.model_id() == fingerprint(Denoised(clf, d)) != fingerprint(clf)
    x = torch.rand(3, 1, 4, 4)
    got = list(smoothed.certify_many(x, 20, 300, 0.01, 128, seed=0))
    want = list(Smooth(Denoised(clf, d), Gaussian(0.25)).certify_many(x, 20, 300, 0.01, 128, seed=0))
    assert [(c.counts.tolist(), c.radius) for c in got] == [(c.counts.tolist(), c.radius) for c in want]
    alone = list(Smooth(clf, Gaussian(0.25)).certify_many(x, 20, 300, 0.01, 128, seed=0))
    assert [c.counts.tolist() for c in alone] != [c.counts.tolist() for c in got]          # the denoiser is in the path
    with pytest.raises(SmoothcertError, match="the denoiser must be a torch.nn.Module"):
        Smooth(clf, Gaussian(0.25), denoiser=lambda z: z)


# -- the command line: every command that builds a Smooth --------------------------------------------------------
def test_certify_with_a_denoiser_is_certify_of_the_composed_model(tmp_path, model_pt2, npz_data, denoiser_files):
    d, weights, d_pt2, _ = denoiser_files
    composed = tmp_path / "composed.pt2"
    save_model(Denoised(load_model(str(model_pt2)), d), str(composed), torch.zeros(2, 1, 4, 4))
    assert main(certify_args(model_pt2, npz_data, tmp_path / "a.tsv", "--denoiser", "dncnn",
                             "--denoiser-weights", str(weights))) == 0
    assert main(certify_args(model_pt2, npz_data, tmp_path / "b.tsv", "--denoiser", str(d_pt2))) == 0
    assert main(certify_args(composed, npz_data, tmp_path / "c.tsv")) == 0
    assert main(certify_args(model_pt2, npz_data, tmp_path / "alone.tsv")) == 0
    assert without_time(tmp_path / "a.tsv") == without_time(tmp_path / "b.tsv") == without_time(tmp_path / "c.tsv")
    assert models(tmp_path / "a.tsv") == {fingerprint(Denoised(load_model(str(model_pt2)), d))}
    assert models(tmp_path / "alone.tsv") != models(tmp_path / "a.tsv")


def test_resuming_with_another_denoiser_or_none_is_refused(tmp_path, model_pt2, npz_data, denoiser_files, capsys):
    _, _, d_pt2, other = denoiser_files
    out = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, out, "--denoiser", str(d_pt2), "--max", "4")) == 0
    before = out.read_text()
    capsys.readouterr()
    for extra in (["--denoiser", str(other)], []):
        line = one_line_error(capsys, main(certify_args(model_pt2, npz_data, out, *extra)))
        assert "was made with model=" in line and "choose another --out" in line
        assert out.read_text() == before
    assert main(certify_args(model_pt2, npz_data, out, "--denoiser", str(d_pt2))) == 0    # the same one resumes
    assert len(rows(out)) == 12


MODES = {"nested": ["--n", "100,300"], "input-n": ["--n-max", "300", "--max-loss", "0.1"],
         "target": ["--n-max", "300", "--target-radius", "0.1"], "soft": ["--certificate", "soft-bernstein"]}


def test_every_certify_mode_predict_and_confidence_take_the_denoiser(tmp_path, model_pt2, npz_data, denoiser_files):
    d, _, d_pt2, _ = denoiser_files
    want = fingerprint(Denoised(load_model(str(model_pt2)), d))
    common = ["--data", f"npz:{npz_data}", "--sigma", "0.25", "--alpha", "0.01", "--batch", "128", "--seed", "0",
              "--no-progress", "--denoiser", str(d_pt2), "--max", "3"]
    for name, extra in MODES.items():
        args = certify_args(model_pt2, npz_data, tmp_path / f"{name}.tsv", "--denoiser", str(d_pt2), "--max", "3")
        if name != "soft":
            del args[args.index("--n"):args.index("--n") + 2]
        assert main(args + extra) == 0, name
    outs = [tmp_path / f"{name}.tsv" for name in MODES if name != "nested"]
    outs += [tmp_path / "nested_n100.tsv", tmp_path / "nested_n300.tsv"]
    assert main(["predict", "--model", str(model_pt2), "--n", "200", "--out", str(tmp_path / "p.tsv"), *common]) == 0
    assert main(["confidence", "--model", str(model_pt2), "--n0", "20", "--n", "200",
                 "--out", str(tmp_path / "conf.tsv"), *common]) == 0
    for out in outs + [tmp_path / "p.tsv", tmp_path / "conf.tsv"]:
        assert models(out) == {want}, out


def test_bench_latency_times_the_composition(tmp_path, model_pt2, npz_data, denoiser_files, monkeypatch, capsys):
    import smoothcert.jobs as jobs
    _, _, d_pt2, _ = denoiser_files
    seen = []
    real = jobs.bench_latency

    def record(smoothed, *args, **kwargs):
        seen.append(smoothed.model)
        return real(smoothed, *args, **kwargs)
    monkeypatch.setattr(jobs, "bench_latency", record)
    assert main(["bench-latency", "--model", str(model_pt2), "--data", f"npz:{npz_data}", "--sigma", "0.25",
                 "--denoiser", str(d_pt2), "--budget-ms", "5", "--repeats", "1", "--n0", "10"]) == 0
    assert len(seen) == 1 and isinstance(seen[0], Denoised)
    assert "the largest n within 5 ms" in capsys.readouterr().out


def test_batch_auto_compile_and_amp_apply_to_the_whole_composition(tmp_path, model_pt2, npz_data, denoiser_files,
                                                                    monkeypatch):
    import smoothcert.smooth as smooth_module
    d, _, d_pt2, _ = denoiser_files
    timed, compiled = [], []
    real_auto = smooth_module.auto_batch_size

    def auto(model, *args, **kwargs):
        timed.append(model)
        return real_auto(model, *args, **kwargs)

    def fake_compile(model, *args, **kwargs):      # what would be compiled (compiling itself takes minutes)
        compiled.append(model)
        return model
    monkeypatch.setattr(smooth_module, "auto_batch_size", auto)
    monkeypatch.setattr(torch, "compile", fake_compile)
    assert main(certify_args(model_pt2, npz_data, tmp_path / "auto.tsv", "--denoiser", str(d_pt2), "--max", "2",
                             "--batch", "auto", "--compile")) == 0
    assert len(timed) == 1 and isinstance(timed[0], Denoised) and timed[0].denoiser is not None
    assert len(compiled) == 1 and compiled[0] is timed[0]
    want = fingerprint(Denoised(load_model(str(model_pt2)), d))
    assert models(tmp_path / "auto.tsv") == {want + "+compiled"}
    with pytest.warns(UserWarning, match="autocast is emulated"):
        assert main(certify_args(model_pt2, npz_data, tmp_path / "amp.tsv", "--denoiser", str(d_pt2), "--max", "2",
                                 "--amp", "bf16")) == 0
    assert models(tmp_path / "amp.tsv") == {want + "+amp=bf16"}


# -- bad input: one line, exit 2, no results file ------------------------------------------------------------------
class Pool(nn.Module):
    def forward(self, x):
        return nn.functional.avg_pool2d(x, 2)


@pytest.mark.parametrize("flags, message", [
    (["--denoiser-weights", "d.pt"], "--denoiser-weights goes with --denoiser"),
    (["--denoiser", "d.pt2", "--diffusion-range", "0,1"], "--diffusion-range goes with --denoiser diffusion:DIR"),
    (["--denoiser", "diffusion:ddpm", "--diffusion-range", "0;1"], "--diffusion-range: must be two numbers"),
    (["--denoiser", "diffusion:ddpm", "--diffusion-range", "0,1,2"], "--diffusion-range: must be two numbers"),
    (["--denoiser", "diffusion:ddpm", "--diffusion-range", "a,b"], "--diffusion-range: must be two numbers"),
    (["--denoiser", "diffusion:ddpm", "--diffusion-range", "1,-1"], "with lo < hi, got '1,-1'"),
    (["--denoiser", "diffusion:ddpm", "--diffusion-range", "nan,1"], "with lo < hi, got 'nan,1'"),
    (["--denoiser", "pool.pt2"], "the denoiser must return a tensor of its input's shape: for inputs of shape "
                                 "(2, 1, 4, 4) it returned (2, 1, 2, 2)"),
    (["--denoiser", "broken.pt2"], "--denoiser: "),
    (["--denoiser", "missing.pt2"], "--denoiser: "),
    (["--denoiser", "dncnn"], "--denoiser dncnn needs --denoiser-weights"),
    (["--denoiser", "dncnn", "--denoiser-weights", "model.pt2"], "model.pt2"),
    (["--denoiser", "diffusion:ddpm", "--noise", "laplace", "--lam", "0.2"], "goes with --noise gaussian"),
])
def test_bad_denoiser_input_is_one_line_and_exit_2(tmp_path, model_pt2, npz_data, capsys, flags, message):
    save_model(Pool(), str(tmp_path / "pool.pt2"), torch.zeros(2, 1, 4, 4))
    (tmp_path / "broken.pt2").write_bytes(b"not a program")
    torch.save(small_denoiser().state_dict(), tmp_path / "d.pt")
    flags = [str(tmp_path / f) if f.endswith((".pt", ".pt2")) else f for f in flags]
    args = certify_args(model_pt2, npz_data, tmp_path / "r.tsv", *flags)
    if "--noise" in flags:
        del args[args.index("--sigma"):args.index("--sigma") + 2]
    line = one_line_error(capsys, _exit_code(args))
    assert message in line, line
    if "missing" in str(flags) or "broken" in str(flags):
        assert str(tmp_path / ("missing.pt2" if "missing" in str(flags) else "broken.pt2")) in line
    assert not (tmp_path / "r.tsv").exists()


def _exit_code(args) -> int:
    """main's exit code; argparse's own errors exit through SystemExit."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


# -- diffusion denoisers from the command line (a tiny UNet2DModel saved in the test; nothing downloaded) ---------
@pytest.fixture
def ddpm_dir(tmp_path):
    from test_denoise import tiny_ddpm
    unet, scheduler = tiny_ddpm()
    folder = tmp_path / "ddpm"
    unet.save_pretrained(folder)
    scheduler.save_pretrained(folder)
    return folder, unet, scheduler


def test_a_diffusion_denoiser_certifies_from_the_command_line(tmp_path, model_pt2, npz_data, ddpm_dir, no_network):
    from smoothcert.denoise import DiffusionDenoiser
    folder, unet, scheduler = ddpm_dir
    for data_range, flags in (((-1.0, 1.0), []), ((-1.0, 1.0), ["--diffusion-range", "-1,1"]),
                              ((0.0, 1.0), ["--diffusion-range", "0,1"])):
        out = tmp_path / f"r{len(flags)}{data_range[0]}.tsv"
        assert main(certify_args(model_pt2, npz_data, out, "--denoiser", f"diffusion:{folder}", "--max", "2",
                                 *flags)) == 0
        want = Denoised(load_model(str(model_pt2)), DiffusionDenoiser(unet, scheduler.alphas_cumprod, 0.25,
                                                                      data_range))
        assert models(out) == {fingerprint(want)}


def test_bad_diffusion_folders_are_one_line_and_exit_2(tmp_path, model_pt2, npz_data, ddpm_dir, no_network, capsys):
    folder, _, _ = ddpm_dir
    args = certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--denoiser", f"diffusion:{folder}")
    args[args.index("--sigma") + 1] = "5"          # 100 linear steps reach (2 sigma)^2 <= ~28
    assert "beyond the diffusion schedule" in one_line_error(capsys, main(args))
    (folder / "scheduler_config.json").unlink()
    assert "has no scheduler" in one_line_error(capsys, main(certify_args(
        model_pt2, npz_data, tmp_path / "r.tsv", "--denoiser", f"diffusion:{folder}")))
    assert "diffusion model folder not found" in one_line_error(capsys, main(certify_args(
        model_pt2, npz_data, tmp_path / "r.tsv", "--denoiser", f"diffusion:{tmp_path / 'nowhere'}")))
    assert not (tmp_path / "r.tsv").exists()


# -- Ray: the workers build the same composition --------------------------------------------------------------------
@pytest.fixture
def ray_cluster(monkeypatch, tmp_path):
    import logging
    ray = pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)                    # relative paths: the workers get them absolute
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


def ray_and_local(tmp_path, model_pt2, npz_data, flags):
    assert main(certify_args(model_pt2, npz_data, "local.tsv", *flags)) == 0
    assert main(certify_args(model_pt2, npz_data, "ray.tsv", *flags, "--ray", "--workers", "2")) == 0
    assert without_time(tmp_path / "ray.tsv") == without_time(tmp_path / "local.tsv")
    assert len(rows(tmp_path / "ray.tsv")) == 12 and len(models(tmp_path / "ray.tsv")) == 1


def test_a_ray_run_with_a_denoiser_writes_the_file_of_a_local_run(tmp_path, model_pt2, npz_data, denoiser_files,
                                                                  ray_cluster):
    ray_and_local(tmp_path, model_pt2, npz_data, ["--denoiser", "dncnn", "--denoiser-weights", "d.pt"])


@pytest.mark.slow
def test_a_ray_run_with_a_diffusion_denoiser_writes_the_file_of_a_local_run(tmp_path, model_pt2, npz_data, ddpm_dir,
                                                                            ray_cluster):
    ray_and_local(tmp_path, model_pt2, npz_data, ["--denoiser", "diffusion:ddpm", "--diffusion-range", "0,1"])


# -- train-denoiser and train --clean --------------------------------------------------------------------------------
def test_train_denoiser_trains_a_denoiser_that_certify_takes(tmp_path, model_pt2, npz_data, capsys):
    common = ["train-denoiser", "--classifier", str(model_pt2), "--data", f"npz:{npz_data}", "--sigma", "0.25",
              "--objective", "mse+stability", "--epochs", "3", "--depth", "3", "--width", "4", "--batch", "4"]
    assert main(common + ["--out", str(tmp_path / "d.pt2")]) == 0
    out = capsys.readouterr().out
    epochs = [line.split()[:3] for line in out.splitlines() if line.startswith("epoch")]
    assert epochs == [["epoch", "1", "mse"], ["epoch", "2", "mse"], ["epoch", "3", "stability"]]
    assert "the classifier is frozen" in out and "behind the denoiser" in out
    assert main(common + ["--out", str(tmp_path / "again.pt2")]) == 0            # seeded: the same denoiser
    assert main(common + ["--out", str(tmp_path / "d.pt")]) == 0                 # a state dict, for dncnn
    first = load_model(str(tmp_path / "d.pt2"))
    assert fingerprint(load_model(str(tmp_path / "again.pt2"))) == fingerprint(first)
    assert fingerprint(first) != fingerprint(small_denoiser())
    assert sum(1 for k in first.state_dict() if k.endswith(".weight")) >= 3
    # the classifier was frozen: its file is unchanged, and the denoiser certifies behind it from either file
    assert main(certify_args(model_pt2, npz_data, tmp_path / "a.tsv", "--denoiser", str(tmp_path / "d.pt2"))) == 0
    assert main(certify_args(model_pt2, npz_data, tmp_path / "b.tsv", "--denoiser", "dncnn",
                             "--denoiser-weights", str(tmp_path / "d.pt"))) == 0
    assert without_time(tmp_path / "a.tsv") == without_time(tmp_path / "b.tsv")


def test_train_denoiser_takes_a_factory_classifier_with_weights(tmp_path, npz_data):
    torch.save(tiny_cnn().state_dict(), tmp_path / "w.pt")
    assert main(["train-denoiser", "--classifier", "conftest:tiny_cnn", "--weights", str(tmp_path / "w.pt"),
                 "--data", f"npz:{npz_data}", "--sigma", "0.25", "--epochs", "1", "--depth", "2", "--width", "2",
                 "--out", str(tmp_path / "d.pt2")]) == 0
    assert load_model(str(tmp_path / "d.pt2"))(torch.zeros(3, 1, 4, 4)).shape == (3, 1, 4, 4)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "1", "--objective", "mse+stability"], "--epochs must be an integer >= 2"),
    (["--classifier", "missing.pt2"], "missing.pt2"),
    (["--sigma", None], "gaussian noise needs --sigma"),
    (["--arch", "unet"], "unknown denoiser architecture 'unet'"),
    (["--out", "nowhere/d.pt2"], "output folder does not exist"),
])
def test_train_denoiser_refuses_bad_input_in_one_line(tmp_path, model_pt2, npz_data, capsys, flags, message):
    args = {"--classifier": str(model_pt2), "--data": f"npz:{npz_data}", "--sigma": "0.25", "--epochs": "2",
            "--out": str(tmp_path / "d.pt2")}
    args.update({k: (str(tmp_path / v) if v and v.endswith(".pt2") else v) for k, v in zip(flags[::2], flags[1::2])})
    argv = ["train-denoiser"] + [item for k, v in args.items() if v is not None for item in (k, v)]
    assert message in one_line_error(capsys, main(argv))
    assert not (tmp_path / "d.pt2").exists()


def test_train_clean_and_sigma_0_train_an_ordinary_classifier(tmp_path, capsys):
    common = ["train", "--epochs", "1", "--seed", "3"]
    assert main(common + ["--clean", "--out", str(tmp_path / "a.pt2")]) == 0
    assert main(common + ["--sigma", "0", "--out", str(tmp_path / "b.pt2")]) == 0
    out = capsys.readouterr().out
    assert "clean train acc" in out and "clean accuracy on digits" in out and "noisy" not in out
    data = load_data("digits", "train")
    torch.manual_seed(3)
    want = train(build("digits-cnn"), data.x, data.y, None, epochs=1, seed=3)
    assert fingerprint(load_model(str(tmp_path / "a.pt2"))) == fingerprint(load_model(str(tmp_path / "b.pt2"))) \
        == fingerprint(want)
    for flags, message in ((["--clean", "--sigma", "0.25"], "it does not go with --sigma 0.25"),
                           (["--clean", "--noise", "laplace", "--lam", "0.2"], "leave out --noise and --lam")):
        assert message in one_line_error(capsys, main(common + flags + ["--out", str(tmp_path / "c.pt2")]))
    assert not (tmp_path / "c.pt2").exists()
