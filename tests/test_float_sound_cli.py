"""Float-sound sampling wired through the API and every command (issue 16, items A1, A2, A4, A5): the default on
known grids, --float-sound / --no-float-sound / --input-grid, the `noise` column that records the grid and bits,
resuming, recertify, analyze's names, Ray, and one-line refusals of bad input."""
import logging

import numpy as np
import pytest
import torch

from conftest import one_line_error, rows, tiny_cnn, without_time
from smoothcert import Gaussian, Laplace, Smooth, SmoothcertError
from smoothcert.analysis import load_results
from smoothcert.cli import main
from smoothcert.data import load_data
from smoothcert.models import build, save_model
from smoothcert.noises.record import noise_cell, parse_cell, rebuild
from smoothcert.noises.sound import SoundGaussian

SOUND_255 = "gaussian-sound:grid=255:bits=0"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def grid_data(tmp_path):
    """12 inputs (1, 4, 4) of 3 classes on the 8-bit grid k/255."""
    rng = np.random.default_rng(0)
    y = np.arange(12) % 3
    k = rng.integers(0, 50, (12, 1, 4, 4)) + 100 * y[:, None, None, None]
    path = tmp_path / "grid.npz"
    np.savez(path, x=(k / 255).astype(np.float32), y=y)
    return path


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.pt2"
    save_model(tiny_cnn(), str(path), torch.zeros(2, 1, 4, 4))
    return path


def run(command, model, data, out, *extra):
    args = [command, "--model", str(model), "--data", f"npz:{data}", "--sigma", "0.25", "--alpha", "0.01",
            "--batch", "128", "--seed", "0", "--out", str(out), "--no-progress", *extra]
    if command in ("certify", "confidence"):
        args += ["--n0", "20"] + ([] if "--n" in extra or "--n-max" in extra else ["--n", "300"])
    elif command == "predict":
        args += ["--n", "300"]
    return main(args)


def test_the_noise_cell_records_what_rebuilds_the_noise():
    for noise in (SoundGaussian(0.25, 255), SoundGaussian(0.5, 16, bits=3), SoundGaussian(0.25, 255, max_dims=99)):
        cell = noise_cell(noise)
        assert rebuild(cell, noise.sigma) == noise and rebuild(cell, noise.sigma).tv == noise.tv
    assert noise_cell(SoundGaussian(0.25, 255)) == SOUND_255 and noise_cell(Gaussian(0.25)) == "gaussian"
    assert noise_cell(SoundGaussian(0.25, 16, max_dims=99)) == "gaussian-sound:grid=16:bits=1:dims=99"
    assert rebuild("laplace", 0.3) == Laplace(0.3) and parse_cell("gaussian") == ("gaussian", {})
    for bad in ("gaussian-sound", "gaussian-sound:grid=0:bits=1", "gaussian-sound:grid=16", "gaussian-sound:grid=16:"
                "bits=1:dims=0", "gaussian-sound:grid=16:bits=1 ", "GAUSSIAN"):
        with pytest.raises(SmoothcertError, match="unknown noise"):
            parse_cell(bad)


def test_the_api_is_float_sound_exactly_when_a_grid_is_given():
    model = tiny_cnn()
    assert Smooth(model, Gaussian(0.25)).noise == Gaussian(0.25)
    assert Smooth(model, Gaussian(0.25), input_grid=255).noise == SoundGaussian(0.25, 255)
    assert Smooth(model, SoundGaussian(0.25, 16)).noise == SoundGaussian(0.25, 16)
    for kwargs, message in [({"float_sound": True}, "needs the input grid"),
                            ({"float_sound": False, "input_grid": 255}, "input_grid goes with"),
                            ({"float_sound": "yes"}, "True, False or None")]:
        with pytest.raises(SmoothcertError, match=message):
            Smooth(model, Gaussian(0.25), **kwargs)
    with pytest.raises(SmoothcertError, match="for Gaussian noise"):
        Smooth(model, Laplace(0.2), input_grid=255)
    xs = torch.randint(0, 256, (3, 1, 4, 4)) / 255.0
    a = list(Smooth(model, Gaussian(0.25), input_grid=255).certify_many(xs, 10, 100, 0.01, 64, seed=3))
    b = list(Smooth(model, SoundGaussian(0.25, 255)).certify_many(xs, 10, 100, 0.01, 64, seed=3))
    assert [(x.prediction, x.radius, x.counts.tolist()) for x in a] == \
        [(x.prediction, x.radius, x.counts.tolist()) for x in b]
    with pytest.raises(SmoothcertError, match=r"input 7 is off its grid"):
        next(Smooth(model, Gaussian(0.25), input_grid=255).certify_many(xs + 0.3 / 255, 10, 100, 0.01, 64, seed=0,
                                                                         indices=[7, 8, 9]))


def test_built_in_loaders_know_their_grid(tmp_path):
    from PIL import Image
    assert load_data("digits").grid == 16 and load_data("npz:" + str(_npz(tmp_path))).grid is None
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), 7, np.uint8)).save(tmp_path / "img" / cls / "x.png")
    assert load_data(f"folder:{tmp_path / 'img'}").grid == 255
    Image.fromarray(np.full((4, 4), 700, np.uint16)).save(tmp_path / "img" / "b" / "deep.png")   # 16 bits a pixel
    assert load_data(f"folder:{tmp_path / 'img'}").grid is None


def _npz(tmp_path):
    np.savez(tmp_path / "any.npz", x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([0, 1]))
    return tmp_path / "any.npz"


def test_digits_default_is_float_sound_and_no_float_sound_opts_out(tmp_path, capsys):
    path = tmp_path / "digits.pt2"
    torch.manual_seed(0)
    save_model(build("digits-cnn"), str(path), torch.zeros(2, 1, 8, 8))
    base = ["certify", "--model", str(path), "--sigma", "0.25", "--n0", "20", "--n", "200", "--max", "3",
            "--batch", "100", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "sound.tsv")]) == 0
    assert main(base + ["--out", str(tmp_path / "plain.tsv"), "--no-float-sound"]) == 0
    assert main(base + ["--out", str(tmp_path / "declared.tsv"), "--float-sound", "--input-grid", "16"]) == 0
    assert {r["noise"] for r in rows(tmp_path / "sound.tsv")} == {"gaussian-sound:grid=16:bits=1"}
    assert {r["noise"] for r in rows(tmp_path / "plain.tsv")} == {"gaussian"}
    assert without_time(tmp_path / "declared.tsv") == without_time(tmp_path / "sound.tsv")
    assert [r["counts"] for r in rows(tmp_path / "plain.tsv")] != [r["counts"] for r in rows(tmp_path / "sound.tsv")]
    # --no-float-sound is the sampling of earlier versions: the rows of the API with plain Gaussian noise
    from smoothcert.jobs import certify_dataset
    data = load_data("digits")
    certify_dataset(Smooth(_load(path), Gaussian(0.25)), data,
                    [0, 1, 2], str(tmp_path / "api.tsv"), n0=20, n=[200], alpha=0.001, batch_size=100, seed=0,
                    progress=False)
    assert without_time(tmp_path / "api.tsv") == without_time(tmp_path / "plain.tsv")
    # resuming either way with the other sampling is refused, naming the noise
    assert main(base + ["--out", str(tmp_path / "sound.tsv"), "--no-float-sound"]) == 2
    assert "noise=gaussian-sound:grid=16:bits=1 but this run has noise=gaussian" in one_line_error(capsys, 2)
    assert main(base + ["--out", str(tmp_path / "plain.tsv")]) == 2
    assert "noise=gaussian but this run has noise=gaussian-sound" in one_line_error(capsys, 2)


def _load(path):
    from smoothcert.models import load_model
    return load_model(str(path), device=torch.device("cpu"))


@pytest.mark.parametrize("command,extra", [
    ("certify", ()), ("certify", ("--n", "100,300")), ("certify", ("--n-max", "400", "--max-loss", "0.05")),
    ("certify", ("--n-max", "400", "--target-radius", "0.2")), ("certify", ("--certificate", "soft-bernstein")),
    ("certify", ("--certificate", "exact-margin")), ("predict", ()), ("confidence", ())])
def test_every_verb_is_float_sound_seeded_and_resumable(tmp_path, model, grid_data, command, extra):
    outs = [tmp_path / f"{name}.tsv" for name in ("a", "b", "c", "plain")]
    assert run(command, model, grid_data, outs[0], "--input-grid", "255", *extra) == 0
    assert run(command, model, grid_data, outs[1], "--float-sound", "--input-grid", "255", *extra) == 0
    assert run(command, model, grid_data, outs[2], "--input-grid", "255", "--max", "5", *extra) == 0   # interrupted
    assert run(command, model, grid_data, outs[2], "--input-grid", "255", *extra) == 0                 # resumed
    assert run(command, model, grid_data, outs[3], *extra) == 0                                        # npz: plain
    files = [[p] if "," not in " ".join(extra) else [p.with_name(f"{p.stem}_n{n}.tsv") for n in (100, 300)]
             for p in outs]
    for a, b, c, plain in zip(*files):
        assert {r["noise"] for r in rows(a)} == {SOUND_255} and {r["noise"] for r in rows(plain)} == {"gaussian"}
        assert without_time(a) == without_time(b) == without_time(c) and len(rows(a)) == 12
        counts = "histogram" if command == "confidence" else "counts"
        assert [r[counts] for r in rows(a)] != [r[counts] for r in rows(plain)]


def test_recertify_and_analyze_keep_float_sound(tmp_path, model, grid_data, capsys):
    sound, plain = tmp_path / "sound.tsv", tmp_path / "plain.tsv"
    assert run("certify", model, grid_data, sound, "--input-grid", "255") == 0
    assert run("certify", model, grid_data, plain) == 0
    assert main(["recertify", str(sound), "--certificate", "cohen", "--out", str(tmp_path / "again.tsv")]) == 0
    assert (tmp_path / "again.tsv").read_text() == sound.read_text()      # the same noise, tv and radii
    assert main(["recertify", str(sound), "--certificate", "margin", "--out", str(tmp_path / "m.tsv")]) == 0
    noise = SoundGaussian(0.25, 255)
    for r in rows(tmp_path / "m.tsv"):
        assert r["noise"] == SOUND_255
        if int(r["predict"]) >= 0:
            assert float(r["radius"]) == float(noise.margin_radius(float(r["pA_lower"]), float(r["pB_upper"])))
    assert load_results(str(sound)).name == "cohen σ=0.25 float-sound l2"
    assert load_results(str(plain)).name == "cohen σ=0.25 l2"
    conf = tmp_path / "conf.tsv"
    assert run("confidence", model, grid_data, conf, "--input-grid", "255") == 0
    assert main(["recertify", str(conf), "--out", str(tmp_path / "conf2.tsv")]) == 0
    assert without_time(tmp_path / "conf2.tsv") == without_time(conf)
    from smoothcert.analysis.confidence import load_confidence
    assert load_confidence(str(conf)).name.endswith("float-sound")
    capsys.readouterr()
    assert main(["analyze", str(sound), str(plain)]) == 0
    assert "cohen σ=0.25 float-sound l2" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (("--float-sound",), "needs the input grid of npz:"),
    (("--input-grid", "255", "--sigma", "1e-7"), "sigma = 1e-07 is too small for this grid"),
    (("--noise", "laplace", "--lam", "0.2", "--sigma", None, "--float-sound", "--input-grid", "255"),
     "float-sound sampling is for Gaussian noise, not laplace"),
    (("--no-float-sound", "--input-grid", "255"), "--input-grid goes with float-sound sampling"),
    (("--input-grid", "16"), "input 0 is off its grid"),
    (("--input-grid", "16", "--indices", "5,3"), "input 5 is off its grid"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, model, grid_data, capsys, extra, message):
    args = ["certify", "--model", str(model), "--data", f"npz:{grid_data}", "--sigma", "0.25", "--n0", "20", "--n",
            "100", "--out", str(tmp_path / "o.tsv"), "--no-progress"]
    extra = list(extra)
    if "--sigma" in extra:                    # replace (or drop, with None) the default --sigma
        i = extra.index("--sigma")
        args = args[:args.index("--sigma")] + args[args.index("--sigma") + 2:]
        args += [] if extra[i + 1] is None else ["--sigma", extra[i + 1]]
        extra = extra[:i] + extra[i + 2:]
    assert message in one_line_error(capsys, main(args + extra))
    assert not (tmp_path / "o.tsv").exists()


def test_training_takes_no_float_sound_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--sigma", "0.25", "--out", str(tmp_path / "m.pt"), "--float-sound"])
    assert info.value.code == 2 and "--float-sound" in capsys.readouterr().err


def test_the_cli_on_ray_writes_the_float_sound_file_of_a_local_run(tmp_path, model, grid_data):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        assert run("certify", model, grid_data, tmp_path / "local.tsv", "--input-grid", "255") == 0
        assert run("certify", model, grid_data, tmp_path / "ray.tsv", "--input-grid", "255", "--ray", "--workers",
                   "2") == 0
    finally:
        ray.shutdown()
    assert {r["noise"] for r in rows(tmp_path / "ray.tsv")} == {SOUND_255}
    assert without_time(tmp_path / "ray.tsv") == without_time(tmp_path / "local.tsv")
