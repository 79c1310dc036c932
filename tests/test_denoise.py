"""Denoised smoothing (smoothcert.denoise): the DnCNN, the composition and its shape check, denoiser training with the
classifier frozen, the diffusion denoiser's timestep and scaling against a hand computation, loading a diffusers
folder without any network, and the composition's certificate against its exact ground truth."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from conftest import Threshold
from smoothcert import Gaussian, Smooth, SmoothcertError
from smoothcert.certificates import ABSTAIN
from smoothcert.data import load_data
from smoothcert.denoise import (Denoised, DiffusionDenoiser, build_denoiser, diffusion_timestep, dncnn,
                                load_denoiser, load_diffusion, probe_denoiser, train_denoiser)
from smoothcert.denoise.training import phases
from smoothcert.models import build, fingerprint, load_model, save_model
from smoothcert.train import train
from soundness import assert_caught, assert_sound, plan

pytestmark = pytest.mark.usefixtures("one_thread")   # small tensor ops: see conftest.one_thread


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and text
    return text


# -- DnCNN and the composition ------------------------------------------------------------------------------------
def test_dncnn_keeps_the_shape_and_starts_as_the_identity():
    x = torch.rand(3, 1, 8, 8)
    d = dncnn().eval()
    assert torch.equal(d(x), x)                       # the last convolution starts at zero
    wide = build_denoiser("dncnn", channels=3, depth=17, width=64).eval()   # Salman et al.'s CIFAR-10 DnCNN
    assert wide(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert sum(isinstance(m, nn.Conv2d) for m in wide.modules()) == 17
    with pytest.raises(SmoothcertError, match="unknown denoiser architecture 'unet'"):
        build_denoiser("unet")
    with pytest.raises(SmoothcertError, match="DnCNN depth must be an integer >= 2"):
        dncnn(depth=1)


class _Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_a_denoiser_that_changes_the_shape_is_refused_in_one_line():
    clf = build("digits-cnn")
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(SmoothcertError) as exc:
        Denoised(clf, _Flatten())(x)
    assert "for inputs of shape (4, 1, 8, 8) it returned (4, 64)" in one_line(exc)
    with pytest.raises(SmoothcertError) as exc:
        probe_denoiser(_Flatten(), x)
    assert "the denoiser must return a tensor of its input's shape" in one_line(exc)
    with pytest.raises(SmoothcertError) as exc:       # through the engine: the probe of the composed model
        Smooth(Denoised(clf, _Flatten()), Gaussian(0.25)).certify(x[0], 10, 20, 0.01, seed=0)
    assert "the denoiser must return a tensor of its input's shape" in one_line(exc)
    with pytest.raises(SmoothcertError, match="the denoiser must be a torch.nn.Module"):
        Denoised(clf, lambda z: z)


def test_the_fingerprint_covers_the_classifier_and_the_denoiser():
    torch.manual_seed(0)
    clf, d = build("digits-cnn"), dncnn()
    base = fingerprint(Denoised(clf, d))
    assert fingerprint(Denoised(clf, d)) == base
    d2 = dncnn()
    d2.load_state_dict(d.state_dict())
    assert fingerprint(Denoised(clf, d2)) == base
    with torch.no_grad():
        d2.body[-1].weight[0, 0, 0, 0] = 1e-3         # one weight of the denoiser
    assert fingerprint(Denoised(clf, d2)) != base
    clf2 = build("digits-cnn")
    clf2.load_state_dict(clf.state_dict())
    with torch.no_grad():
        clf2[-1].bias[0] += 1e-3                       # one weight of the classifier
    assert fingerprint(Denoised(clf2, d)) != base
    assert fingerprint(Denoised(clf, d)) != fingerprint(clf)


def test_a_composition_exports_to_one_pt2_and_a_denoiser_loads_from_its_specs(tmp_path):
    torch.manual_seed(0)
    clf, d = build("digits-cnn"), dncnn(depth=4, width=8)
    with torch.no_grad():
        d.body[-1].weight.normal_(0, 0.1)
    composed = Denoised(clf, d).eval()
    x = torch.rand(5, 1, 8, 8)
    save_model(composed, str(tmp_path / "composed.pt2"), x)
    loaded = load_model(str(tmp_path / "composed.pt2"))
    assert torch.allclose(loaded(x), composed(x), atol=1e-5)
    assert fingerprint(loaded) == fingerprint(composed)
    # a composition whose classifier is an exported program: eval() leaves the program alone
    assert Denoised(load_model(str(tmp_path / "composed.pt2")), d).eval()(x).shape == (5, 10)
    torch.save(d.state_dict(), tmp_path / "d.pt")     # built-in architecture + weights: its shape read from them
    same = load_denoiser("dncnn", str(tmp_path / "d.pt"))
    assert torch.equal(same(x), d.eval()(x)) and not same.training
    save_model(d, str(tmp_path / "d.pt2"), x)         # a .pt2 file, through load_model
    assert torch.allclose(load_denoiser(str(tmp_path / "d.pt2"))(x), d(x), atol=1e-6)
    with pytest.raises(SmoothcertError, match="needs --denoiser-weights"):
        load_denoiser("dncnn")
    torch.save(dncnn(channels=3).state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(SmoothcertError, match="do not fit dncnn"):
        load_denoiser("dncnn", str(tmp_path / "rgb.pt"), channels=1)
    with pytest.raises(SmoothcertError, match="needs the smoothing sigma"):
        load_denoiser(f"diffusion:{tmp_path}")
    (tmp_path / "broken.pt2").write_bytes(b"not a program")
    for spec in (tmp_path / "missing.pt2", tmp_path / "broken.pt2"):    # a model file that does not load
        with pytest.raises(SmoothcertError) as exc:
            load_denoiser(str(spec))
        assert str(spec) in one_line(exc)


# -- training ----------------------------------------------------------------------------------------------------
def test_training_without_noise_trains_an_ordinary_classifier_deterministically():
    data = load_data("digits", "train")
    x, y = data.x[:300], data.y[:300]
    logs = []
    torch.manual_seed(0)
    a = train(build("digits-cnn"), x, y, None, epochs=3, seed=1, on_epoch=logs.append)
    torch.manual_seed(0)
    b = train(build("digits-cnn"), x, y, None, epochs=3, seed=1)
    assert fingerprint(a) == fingerprint(b) and logs[-1].train_accuracy > 0.5 and logs[-1].loss < logs[0].loss


def test_the_objectives_split_their_epochs():
    assert phases("mse+stability", 5) == [("mse", 3), ("stability", 2)]
    assert phases("stability", 1) == [("stability", 1)]
    with pytest.raises(SmoothcertError, match="epochs must be an integer >= 2"):
        phases("mse+stability", 1)
    with pytest.raises(SmoothcertError, match="unknown denoiser objective 'l1'"):
        phases("l1", 3)


class _BNClassifier(nn.Module):
    """A classifier with batch-norm statistics and a dropout layer, which training mode would change."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Flatten(), nn.Linear(4 * 8 * 8, 10))

    def forward(self, x):
        return self.net(x)


def test_stability_training_leaves_the_classifier_frozen():
    torch.manual_seed(0)
    data = load_data("digits", "train")
    clf = _BNClassifier()
    clf.net[1].running_mean.fill_(0.1)
    clf.net[-1].weight.requires_grad_(False)          # the caller's flags are restored as they were
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    flags = [p.requires_grad for p in clf.parameters()]
    d = dncnn(depth=3, width=8)
    d_before = {k: v.clone() for k, v in d.state_dict().items()}
    logs = []
    train_denoiser(d, clf, data.x[:200], data.y[:200], Gaussian(0.25), objective="mse+stability", epochs=2,
                   seed=0, on_epoch=logs.append)
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    assert [p.requires_grad for p in clf.parameters()] == flags
    assert not all(torch.equal(d_before[k], v) for k, v in d.state_dict().items())
    assert [log.objective for log in logs] == ["mse", "stability"] and [log.epoch for log in logs] == [1, 2]


def test_the_checks_before_training_leave_the_denoiser_unchanged(monkeypatch):
    import smoothcert.denoise.training as training
    monkeypatch.setattr(training, "_epoch", lambda *a: training.DenoiserEpochLog(a[-1], 0.0, 0.0, 0.0))
    d = dncnn(depth=3, width=8)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    train_denoiser(d, build("digits-cnn"), torch.rand(8, 1, 8, 8) * 5, torch.zeros(8, dtype=torch.long),
                   Gaussian(0.25), epochs=1)
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())     # batch-norm statistics too


def test_mse_training_denoises_digits_and_is_deterministic():
    torch.manual_seed(0)
    train_set, test_set = load_data("digits", "train"), load_data("digits", "test")
    clf = build("digits-cnn")
    noise, sigma = Gaussian(0.25), 0.25

    def trained(seed):
        torch.manual_seed(0)
        return train_denoiser(dncnn(depth=4, width=16), clf, train_set.x, train_set.y, noise, objective="mse",
                              epochs=4, batch_size=64, seed=seed)

    d = trained(3)
    gen = torch.Generator().manual_seed(0)
    noisy = test_set.x + sigma * torch.randn(test_set.x.shape, generator=gen)
    with torch.no_grad():
        mse = float(((d(noisy) - test_set.x) ** 2).mean())
    assert mse < 0.5 * sigma ** 2, mse                # the identity's (untrained DnCNN's) is sigma^2 = 0.0625
    assert fingerprint(trained(3)) == fingerprint(d) and fingerprint(trained(4)) != fingerprint(d)


def test_denoiser_training_refuses_bad_input():
    clf, x, y = build("digits-cnn"), torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    with pytest.raises(SmoothcertError, match="the denoiser must return a tensor of its input's shape"):
        train_denoiser(_Flatten(), clf, x, y, Gaussian(0.25))
    with pytest.raises(SmoothcertError, match="learning rate must be > 0"):
        train_denoiser(dncnn(), clf, x, y, Gaussian(0.25), lr=0)


# -- the diffusion denoiser: timestep and scaling by hand ------------------------------------------------------------
T, BETA_1, BETA_T = 10, 0.01, 0.3


def hand_schedule():
    """abar_t of a linear beta schedule, by hand in float64."""
    betas = [BETA_1 + (BETA_T - BETA_1) * i / (T - 1) for i in range(T)]
    abar, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        abar.append(prod)
    return abar


def hand_timestep(abar, target_std):
    """The t whose noise level sqrt((1 - abar_t)/abar_t) is nearest target_std on the log scale, by a plain loop."""
    best, best_gap = None, math.inf
    for t, a in enumerate(abar):
        gap = abs(0.5 * math.log((1 - a) / a) - math.log(target_std))
        if gap < best_gap:
            best, best_gap = t, gap
    return best


class Recorder(nn.Module):
    """A stand-in 'unet' that records what it is given and returns a fixed output."""

    def __init__(self, out):
        super().__init__()
        self.out, self.seen = out, []

    def forward(self, x_t, t):
        self.seen.append((x_t.clone(), t.clone()))
        return self.out.expand_as(x_t)


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize("sigma", [0.12, 0.25, 0.5])
def test_timestep_and_scaling_match_a_hand_computation(data_range, sigma):
    abar = hand_schedule()
    lo, hi = data_range
    s = hi - lo
    t = hand_timestep(abar, s * sigma)
    assert diffusion_timestep(torch.tensor(abar, dtype=torch.float64), sigma, s) == t
    eps = torch.full((1, 1, 2, 2), 0.3, dtype=torch.float64)
    unet = Recorder(eps)
    den = DiffusionDenoiser(unet, abar, sigma, data_range, clip=False)
    z = torch.tensor([[[[0.1, 0.9], [-0.2, 0.5]]]], dtype=torch.float64)    # a noisy input may leave [0, 1]
    out = den(z)
    x_t, t_seen = unet.seen[0]
    a = abar[t]
    for i, v in enumerate(z.flatten().tolist()):
        assert x_t.flatten()[i].item() == pytest.approx(math.sqrt(a) * (s * v + lo), rel=1e-12)
        x0 = (math.sqrt(a) * (s * v + lo) - math.sqrt(1 - a) * 0.3) / math.sqrt(a)      # Ho et al. eq. 15
        assert out.flatten()[i].item() == pytest.approx((x0 - lo) / s, rel=1e-12, abs=1e-12)
    assert t_seen.tolist() == [t] and den.t == t
    clipped = DiffusionDenoiser(Recorder(eps), abar, sigma, data_range)(z)
    assert torch.allclose(clipped, out.clamp(0, 1), atol=1e-12)         # clipped to the data range, then mapped


class Oracle(nn.Module):
    """Knows the clean input x0 (in the model's range) and the unit noise eps that made x_t, and returns the exact
    prediction of each type, so the one-step estimate must recover x0 exactly."""

    def __init__(self, x0, eps, abar, kind):
        super().__init__()
        self.x0, self.eps, self.abar, self.kind = x0, eps, abar, kind

    def forward(self, x_t, t):
        a = self.abar[int(t[0])]
        assert torch.allclose(x_t, math.sqrt(a) * self.x0 + math.sqrt(1 - a) * self.eps, atol=1e-12)
        if self.kind == "epsilon":
            return self.eps
        if self.kind == "sample":
            return self.x0
        return math.sqrt(a) * self.eps - math.sqrt(1 - a) * self.x0       # v


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_the_one_step_estimate_recovers_the_input_from_the_exact_noise(kind, data_range):
    abar = hand_schedule()
    lo, hi = data_range
    s = hi - lo
    t = 4
    sigma = math.sqrt((1 - abar[t]) / abar[t]) / s                    # exactly the noise level of t = 4
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    d = sigma * torch.randn(x.shape, generator=gen, dtype=torch.float64)    # the smoothing noise, [0, 1] space
    eps = s * d / math.sqrt((1 - abar[t]) / abar[t])                  # the same noise in x_t's unit scale
    den = DiffusionDenoiser(Oracle(s * x + lo, eps, abar, kind), abar, sigma, data_range, prediction_type=kind)
    assert den.t == t
    assert torch.allclose(den(x + d), x, atol=1e-12)


def test_a_sigma_the_schedule_cannot_reach_is_refused():
    abar = hand_schedule()
    largest = math.sqrt((1 - abar[-1]) / abar[-1])
    with pytest.raises(SmoothcertError) as exc:
        DiffusionDenoiser(Recorder(torch.zeros(1)), abar, largest / 2 * 1.01, (-1, 1))
    assert "beyond the diffusion schedule" in one_line(exc) and f"(t = {T - 1})" in one_line(exc)
    DiffusionDenoiser(Recorder(torch.zeros(1)), abar, largest / 2 * 0.99, (-1, 1))
    smallest = math.sqrt((1 - abar[0]) / abar[0])
    with pytest.raises(SmoothcertError, match=r"schedule's smallest .* \(t = 0\)"):
        diffusion_timestep(abar, smallest * 0.99)
    with pytest.raises(SmoothcertError, match="lo < hi"):
        DiffusionDenoiser(Recorder(torch.zeros(1)), abar, 0.25, (1, -1))
    with pytest.raises(SmoothcertError, match="unknown prediction type 'noise'"):
        DiffusionDenoiser(Recorder(torch.zeros(1)), abar, 0.25, prediction_type="noise")


def test_the_fingerprint_of_a_diffusion_denoiser_covers_its_timestep_and_settings():
    abar, unet = hand_schedule(), nn.Conv2d(1, 1, 1)
    base = fingerprint(DiffusionDenoiser(unet, abar, 0.25, (-1, 1)))
    assert fingerprint(DiffusionDenoiser(unet, abar, 0.25, (-1, 1))) == base
    assert fingerprint(DiffusionDenoiser(unet, abar, 0.5, (-1, 1))) != base          # another t*
    assert fingerprint(DiffusionDenoiser(unet, abar, 0.5, (0, 1))) != base
    assert fingerprint(DiffusionDenoiser(unet, abar, 0.25, (-1, 1), prediction_type="sample")) != base


# -- a real (tiny) diffusers model, saved and loaded back with no network -----------------------------------------
def tiny_ddpm():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
                                 up_block_types=("UpBlock2D",) * 2).eval()
    return unet, diffusers.DDPMScheduler(num_train_timesteps=100)


@pytest.mark.parametrize("layout", ["flat", "pipeline"])
def test_a_saved_unet2dmodel_loads_back_and_denoises_like_the_original(tmp_path, no_network, layout):
    import diffusers
    unet, scheduler = tiny_ddpm()
    if layout == "flat":
        unet.save_pretrained(tmp_path)
        scheduler.save_pretrained(tmp_path)
    else:
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path)
        assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    den = load_diffusion(tmp_path, 0.25, (-1, 1))
    assert den.t == diffusion_timestep(scheduler.alphas_cumprod, 0.25, 2.0) and not den.training
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        expected = DiffusionDenoiser(unet, scheduler.alphas_cumprod, 0.25, (-1, 1))(x)
        assert torch.allclose(den(x), expected, atol=1e-6)
    assert fingerprint(den) == fingerprint(DiffusionDenoiser(unet, scheduler.alphas_cumprod, 0.25, (-1, 1)))
    composed = Denoised(build("digits-cnn"), load_denoiser(f"diffusion:{tmp_path}", sigma=0.25))
    c = Smooth(composed, Gaussian(0.25)).certify(x[0], 10, 50, 0.01, batch_size=32, seed=0)
    assert c.samples == 50


def test_a_diffusers_folder_is_refused_in_one_line_when_it_cannot_be_used(tmp_path, no_network):
    unet, scheduler = tiny_ddpm()
    with pytest.raises(SmoothcertError, match="folder not found"):
        load_diffusion(tmp_path / "missing", 0.25)
    unet.save_pretrained(tmp_path)
    with pytest.raises(SmoothcertError) as exc:                   # no scheduler
        load_diffusion(tmp_path, 0.25)
    assert "has no scheduler" in one_line(exc)
    scheduler.save_pretrained(tmp_path)
    with pytest.raises(SmoothcertError) as exc:                   # 100 linear steps reach (2 sigma)^2 <= ~28
        load_diffusion(tmp_path, 5.0)
    assert "beyond the diffusion schedule" in one_line(exc)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"UNet2DModel"', '"UNet2DConditionModel"'))
    with pytest.raises(SmoothcertError, match="holds a UNet2DConditionModel, not a UNet2DModel"):
        load_diffusion(tmp_path, 0.25)
    # a config that would build a UNet far larger than its weights (memory exhausted before they are read)
    (tmp_path / "config.json").write_text(json.dumps({**json.loads(config), "block_out_channels": [1024, 2048]}))
    with pytest.raises(SmoothcertError, match=r"builds [\d,]+ parameters but its weights hold 41,609 numbers"):
        load_diffusion(tmp_path, 0.25)
    (tmp_path / "config.json").write_text(config)
    schedule = (tmp_path / "scheduler_config.json").read_text()
    (tmp_path / "scheduler_config.json").write_text(json.dumps({**json.loads(schedule), "num_train_timesteps": 10**10}))
    with pytest.raises(SmoothcertError, match="num_train_timesteps must be an integer in 1..100,000"):
        load_diffusion(tmp_path, 0.25)
    (tmp_path / "scheduler_config.json").write_text(schedule)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(SmoothcertError, match="has no UNet weights"):
        load_diffusion(tmp_path, 0.25)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/smoothcert-denoise-pickle-ran"


def test_pickled_bin_weights_are_read_as_tensors_only(tmp_path, no_network):
    unet, scheduler = tiny_ddpm()
    unet.save_pretrained(tmp_path, safe_serialization=False)       # diffusion_pytorch_model.bin
    scheduler.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.bin").is_file()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(load_diffusion(tmp_path, 0.25)(x),
                              DiffusionDenoiser(unet, scheduler.alphas_cumprod, 0.25)(x), atol=1e-6)
    if os.path.exists(MARKER):
        os.remove(MARKER)
    torch.save({"conv_in.weight": _RunsCode()}, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(SmoothcertError) as exc:
        load_diffusion(tmp_path, 0.25)
    assert "pickled objects beyond tensors" in one_line(exc)
    assert not os.path.exists(MARKER)


def test_importing_smoothcert_denoise_does_not_import_diffusers():
    code = "import sys, smoothcert, smoothcert.denoise; assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


# -- soundness: the composition is certified against its own exact ground truth -----------------------------------
class Affine(nn.Module):
    """A 'denoiser' z -> a z + b that moves the threshold classifier's boundary: Threshold(a (x + d) + b) votes 1 iff
    x + d > -b / a, so the composition is a threshold classifier at -b / a = 0.15, with pA = Phi((x - 0.15) / s)
    and exact l2 radius |x - 0.15| (Cohen et al. 2019, Thm 1, tight for linear classifiers). Near the boundary it
    changes the class: inputs in (0, 0.15) are class 1 for the classifier alone, class 0 composed."""

    a, b = 2.0, -0.3

    def forward(self, z):
        return self.a * z + self.b


BOUNDARY, SIGMA = 0.15, 0.5


def composed_failures(p_a, n0, n, alpha, p, noise_after=False, seed=0):
    """CERTIFY the composition p.reps times at the x where its P(class 1) = p_a, and count the wrong certificates
    (as tests/test_soundness.py does for the threshold classifier alone). noise_after=True is the negative control:
    the noise added after the denoiser, Threshold(D(x) + d), a realistic bug, which doubles the radius here."""
    m = SIGMA * stats.norm.ppf(p_a)                               # the exact radius
    x = BOUNDARY + m
    if noise_after:
        model, xs = Threshold(), torch.full((p.reps, 1), Affine.a * x + Affine.b, dtype=torch.float64)
    else:
        model, xs = Denoised(Threshold(), Affine()), torch.full((p.reps, 1), x, dtype=torch.float64)
    fails = 0
    for c in Smooth(model, Gaussian(SIGMA)).certify_many(xs, n0, n, alpha, 20_000, seed=seed):
        if c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > m * (1 + 1e-12) or c.p_lower > p_a):
            fails += 1
    return fails


CASE = (0.9, 10, 100, 0.05)


def test_a_denoiser_that_moves_the_boundary_gets_exactly_the_composed_radius():
    x = torch.tensor([[-0.2], [0.02], [0.05], [0.4], [0.9]], dtype=torch.float64)
    smoothed = Smooth(Denoised(Threshold(), Affine()), Gaussian(SIGMA))
    # n0 = 1000 selection samples pick the top class but with probability < 1e-6 at these pA (>= 0.579)
    for c, xi in zip(smoothed.certify_many(x, 1000, 1_000_000, 0.001, 100_000, seed=3), x[:, 0].tolist()):
        p_a = stats.norm.cdf(abs(xi - BOUNDARY) / SIGMA)
        assert c.prediction == (1 if xi > BOUNDARY else 0)        # 0.02 and 0.05: class 1 alone, class 0 composed
        p_hat = c.counts[c.prediction] / c.samples
        assert abs(p_hat - p_a) < 5 * math.sqrt(p_a * (1 - p_a) / c.samples)
        assert c.p_lower <= p_a and c.radius <= abs(xi - BOUNDARY)
        assert c.radius > abs(xi - BOUNDARY) - 0.01               # and close to it: Clopper-Pearson at n = 10^6
    p = plan(CASE[3], reps=4000)
    assert_sound(composed_failures(*CASE, p), p)


def test_the_harness_catches_noise_added_after_the_denoiser():
    p = plan(CASE[3], reps=4000)
    assert_caught(composed_failures(*CASE, p, noise_after=True), p)
