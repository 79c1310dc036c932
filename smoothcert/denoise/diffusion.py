"""A diffusion model as a one-step denoiser (Carlini et al. 2023, "(Certified!!) Adversarial Robustness for Free!",
§3, Algorithm 1), and loading one from a local diffusers folder. diffusers is imported here only, inside
`load_diffusion` (the optional extra [diffusion]); `DiffusionDenoiser` itself takes any noise-prediction network.

The arithmetic, for an input z = x + d in the classifier's space [0, 1] with d ~ N(0, sigma^2 I), and a model
trained on data in [lo, hi] (s = hi - lo: 1 for [0, 1], 2 for [-1, 1]):
    u   = s * z + lo                    = x_m + s * d,  with x_m = s * x + lo the clean input in the model's range
    x_t = sqrt(abar_t*) * u             = sqrt(abar_t*) * x_m + sqrt(abar_t*) * s * d
which is the DDPM forward process x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4) when
sqrt(abar_t) * s * sigma = sqrt(1 - abar_t), i.e. (1 - abar_t) / abar_t = (s * sigma)^2. The model runs once at
t*, its one-step estimate of x_0 (Ho et al. eq. 15 for a noise prediction; the output itself for a 'sample'
prediction; sqrt(abar) x_t - sqrt(1 - abar) v for 'v_prediction') is clipped to [lo, hi] (Carlini et al.'s code
clips it, clip_denoised=True) and mapped back: (x0 - lo) / s.

t* is the timestep whose noise level is nearest on the log scale: argmin_t |log((1 - abar_t)/abar_t) - log((s
sigma)^2)| (Carlini et al.'s code takes the first t at or above the target instead; with 1000 steps the two
differ by at most one step). A sigma outside the schedule's range of (1 - abar_t)/abar_t is refused. The choice
of t* only affects accuracy, never soundness: the smoothing noise is added by the sampler at exactly sigma, and
whatever t* is, the denoiser is a fixed function, so classifier(denoiser(.)) is a valid base classifier.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import SmoothcertError, check, first_line
from ..models import read_state_dict

PREDICTIONS = ("epsilon", "sample", "v_prediction")
MAX_TIMESTEPS = 100_000     # a schedule is built in memory from num_train_timesteps: bounded before it is


def noise_levels(alphas_cumprod) -> torch.Tensor:
    """(1 - abar_t) / abar_t for every timestep, in float64: the variance of x_t / sqrt(abar_t) around x_0."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
    check(abar.ndim == 1 and len(abar) > 0,
          f"alphas_cumprod must be a non-empty 1-d sequence, got shape {tuple(abar.shape)}")
    check(bool(((abar > 0) & (abar <= 1)).all()), "alphas_cumprod must lie in (0, 1]")
    return (1 - abar) / abar


def diffusion_timestep(alphas_cumprod, sigma: float, scale: float = 1.0) -> int:
    """t* for smoothing noise `sigma` in [0, 1] input space and a model whose data range is `scale` times as wide:
    the timestep whose (1 - abar_t)/abar_t is nearest to (scale * sigma)^2 on the log scale (module docstring)."""
    check(isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0, f"sigma must be > 0, got {sigma!r}")
    levels = noise_levels(alphas_cumprod)
    target = (scale * sigma) ** 2
    lo_t, hi_t = int(levels.argmin()), int(levels.argmax())
    range_note = f" (= ({scale:g} sigma)^2 for a model on data {scale:g} wide)" if scale != 1 else ""
    if target > float(levels[hi_t]) or target < float(levels[lo_t]):
        edge = "largest" if target > float(levels[hi_t]) else "smallest"
        t = hi_t if edge == "largest" else lo_t
        raise SmoothcertError(f"sigma = {sigma:g} is beyond the diffusion schedule: it needs a noise level "
                              f"(1 - abar_t)/abar_t = {target:.4g}{range_note}, but the schedule's {edge} is "
                              f"{float(levels[t]):.4g} (t = {t})")
    with torch.no_grad():
        gap = (levels.clamp_min(1e-300).log() - math.log(target)).abs()
    return int(gap.argmin())


def _data_range(data_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise SmoothcertError(f"a data range is two numbers lo, hi (e.g. -1,1), got {data_range!r}") from None
    check(math.isfinite(lo) and math.isfinite(hi) and hi > lo, f"a data range needs lo < hi, got {lo:g},{hi:g}")
    return lo, hi


class DiffusionDenoiser(nn.Module):
    """One-step diffusion denoiser: [0, 1] inputs (noisy at `sigma`) -> the model's estimate of the clean input.

    Args:
        unet: called as unet(x_t, t) with t a (batch,) long tensor; returns a tensor (or an object with .sample,
            or a tuple whose first item is it) of x_t's shape, or twice its channels when the variance is learned.
        alphas_cumprod: the schedule's abar_t, t = 0 .. T-1, as the model was trained with.
        sigma: the smoothing noise's standard deviation in [0, 1] input space.
        data_range: (lo, hi) the model's data range: (-1, 1) for diffusers' DDPM models, (0, 1) otherwise.
        prediction_type: what the model predicts: 'epsilon', 'sample' or 'v_prediction'.
        clip: clip the x_0 estimate to the data range (as Carlini et al.'s code does).
        learned_variance: the model outputs noise and variance channels; the first half is the prediction.
    The timestep, the scaling and the settings are buffers, so a fingerprint of the module covers them.
    """

    def __init__(self, unet: nn.Module, alphas_cumprod, sigma: float, data_range=(-1.0, 1.0),
                 prediction_type: str = "epsilon", clip: bool = True, learned_variance: bool = False):
        super().__init__()
        check(prediction_type in PREDICTIONS,
              f"unknown prediction type {prediction_type!r} (choose from: {', '.join(PREDICTIONS)})")
        lo, hi = _data_range(data_range)
        self.unet = unet
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
        t = diffusion_timestep(abar, sigma, hi - lo)
        self.register_buffer("timestep", torch.tensor(t, dtype=torch.long))
        self.register_buffer("alpha_bar", abar[t].clone())
        self.register_buffer("data_range", torch.tensor([lo, hi], dtype=torch.float64))
        self.register_buffer("settings", torch.tensor([PREDICTIONS.index(prediction_type), bool(clip),
                                                       bool(learned_variance)], dtype=torch.long))
        self.sigma, self.prediction_type, self.clip, self.learned_variance = float(sigma), prediction_type, clip, \
            learned_variance
        self._lo, self._hi, self._a = lo, hi, float(abar[t])

    @property
    def t(self) -> int:
        return int(self.timestep)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lo, hi, a = self._lo, self._hi, self._a
        s = hi - lo
        x_t = math.sqrt(a) * (s * z + lo)
        out = self.unet(x_t, self.timestep.expand(z.shape[0]).to(z.device))
        out = getattr(out, "sample", out)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if self.learned_variance:
            out = out[:, : z.shape[1]]
        if self.prediction_type == "epsilon":      # Ho et al. 2020, eq. 15
            x0 = (x_t - math.sqrt(1 - a) * out) / math.sqrt(a)
        elif self.prediction_type == "sample":
            x0 = out
        else:                                      # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, §4)
            x0 = math.sqrt(a) * x_t - math.sqrt(1 - a) * out
        if self.clip:
            x0 = x0.clamp(lo, hi)
        return (x0 - lo) / s

    def extra_repr(self) -> str:
        return (f"sigma={self.sigma:g}, t={self.t}, alpha_bar={self._a:.6g}, data_range=({self._lo:g}, {self._hi:g}), "
                f"prediction_type={self.prediction_type!r}, clip={self.clip}")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmoothcertError(f"cannot read {what} {path}: {first_line(exc)}") from None
    check(isinstance(data, dict), f"{what} {path} is not a JSON object")
    return data


def _weights(unet_dir: Path) -> tuple[bool, int]:
    """(True, numbers stored) for safetensors weights (read from their headers only); (False, numbers) for pickled
    .bin weights, checked to hold plain tensors only (read with torch.load(weights_only=True), as diffusers then
    loads them); refused when there are neither."""
    files = sorted(unet_dir.glob("diffusion_pytorch_model*.safetensors"))
    if files:
        from safetensors import safe_open            # a dependency of diffusers
        total = 0
        for path in files:
            try:
                with safe_open(str(path), "pt") as f:
                    total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
            except Exception as exc:
                raise SmoothcertError(f"cannot read the weights {path}: {first_line(exc)}") from None
        return True, total
    bins = sorted(unet_dir.glob("diffusion_pytorch_model*.bin"))
    check(bool(bins), f"{unet_dir} has no UNet weights (diffusion_pytorch_model.safetensors)")
    return False, sum(sum(t.numel() for t in read_state_dict(str(path)).values()) for path in bins)


def _check_size(diffusers, config: dict, stored: int, unet_dir: Path) -> None:
    """Refuse a config that would build a UNet larger than its weights (it would exhaust memory before loading
    them): the model is built on the meta device (no memory) and its parameters counted."""
    try:
        with torch.device("meta"):
            probe = diffusers.UNet2DModel.from_config(config)
    except Exception as exc:
        raise SmoothcertError(f"the UNet2DModel config in {unet_dir} is not valid: {first_line(exc)}") from None
    needed = sum(p.numel() for p in probe.parameters())
    check(needed <= stored, f"the UNet2DModel config in {unet_dir} builds {needed:,} parameters but its weights hold "
                            f"{stored:,} numbers")


def load_diffusion(path, sigma: float, data_range=(-1.0, 1.0), *, prediction_type: str | None = None,
                   device="cpu") -> DiffusionDenoiser:
    """A DiffusionDenoiser from a local diffusers folder, on `device`, in eval mode. Nothing is downloaded.

    The folder is a pipeline's (`DDPMPipeline.save_pretrained`: model_index.json, unet/, scheduler/) or holds a
    UNet2DModel's config.json and weights beside a scheduler's scheduler_config.json (`save_pretrained` of each).
    The weights are safetensors, or a .bin checked to hold only tensors. The prediction type is the scheduler's
    unless given.
    """
    try:
        import diffusers
    except ImportError:
        raise SmoothcertError("diffusion denoisers need diffusers: pip install 'smoothcert[diffusion]'") from None
    root = Path(path).expanduser()
    check(root.is_dir(), f"diffusion model folder not found: {root}")
    unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
    sched_dir = root / "scheduler" if (root / "scheduler").is_dir() else root
    check((unet_dir / "config.json").is_file(),
          f"{root} holds no diffusers model (no config.json, no unet/config.json)")
    config = _read_json(unet_dir / "config.json", "model config")
    name = config.get("_class_name")
    check(name == "UNet2DModel", f"{unet_dir} holds a {name or 'model of unknown class'}, not a UNet2DModel")
    check(config.get("num_class_embeds") is None and config.get("class_embed_type") is None,
          f"{unet_dir} holds a class-conditional UNet2DModel (it needs class labels to denoise)")
    check((sched_dir / "scheduler_config.json").is_file(),
          f"{root} has no scheduler (scheduler_config.json, or scheduler/scheduler_config.json): the timestep "
          "cannot be chosen without the noise schedule")
    sched_config = _read_json(sched_dir / "scheduler_config.json", "scheduler config")
    steps = sched_config.get("num_train_timesteps", 1000)
    check(isinstance(steps, int) and 1 <= steps <= MAX_TIMESTEPS,
          f"{sched_dir / 'scheduler_config.json'}: num_train_timesteps must be an integer in 1..{MAX_TIMESTEPS:,}, "
          f"got {str(steps)[:40]}")
    sched_name = str(sched_config.get("_class_name", ""))
    sched_cls = getattr(diffusers, sched_name, None) if sched_name.endswith("Scheduler") else None
    check(isinstance(sched_cls, type) and issubclass(sched_cls, diffusers.SchedulerMixin),
          f"{sched_dir / 'scheduler_config.json'} names no diffusers scheduler ({sched_name or 'no _class_name'})")
    safetensors, stored = _weights(unet_dir)
    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()    # e.g. a page on installing accelerate; errors are raised
    try:
        _check_size(diffusers, config, stored, unet_dir)
        scheduler = sched_cls.from_pretrained(sched_dir, local_files_only=True)
        unet = diffusers.UNet2DModel.from_pretrained(unet_dir, local_files_only=True, use_safetensors=safetensors)
    except SmoothcertError:
        raise
    except Exception as exc:
        raise SmoothcertError(f"cannot load the diffusion model in {root}: {first_line(exc)}") from None
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
    abar = getattr(scheduler, "alphas_cumprod", None)
    check(isinstance(abar, torch.Tensor), f"the scheduler {sched_name} has no noise schedule (alphas_cumprod)")
    variance = str(scheduler.config.get("variance_type", ""))
    prediction = prediction_type or scheduler.config.get("prediction_type", "epsilon")
    denoiser = DiffusionDenoiser(unet, abar, sigma, data_range, prediction, clip=True,
                                 learned_variance=variance.startswith("learned"))
    channels = unet.config.in_channels * (2 if denoiser.learned_variance else 1)
    check(unet.config.out_channels == channels,
          f"the UNet outputs {unet.config.out_channels} channels for {unet.config.in_channels} input channels "
          f"(expected {channels} with variance type {variance or 'unknown'})")
    return denoiser.to(device).eval()
