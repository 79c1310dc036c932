"""A denoiser in front of a classifier: the composition that smoothing certifies (Salman et al. 2020, §3: the base
classifier is f(D(x + noise)), so every certificate holds for it unchanged), its shape check, and loading a denoiser
from a spec (a built-in architecture with weights, a model file or factory, or a diffusers folder)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import SmoothcertError, check, first_line
from ..models import eval_mode, load_model, read_state_dict
from .dncnn import DENOISERS, build_denoiser, dncnn_config

DIFFUSION_PREFIX = "diffusion:"
DEFAULT_DIFFUSION_RANGE = (-1.0, 1.0)      # diffusers' DDPM models (e.g. google/ddpm-cifar10-32) see data in [-1, 1]


def _shape_error(x_shape, out_shape) -> SmoothcertError:
    return SmoothcertError(f"the denoiser must return a tensor of its input's shape: for inputs of shape "
                           f"{tuple(x_shape)} it returned {out_shape}")


class Denoised(nn.Module):
    """classifier(denoiser(x)): the base classifier of denoised smoothing, one module whose state dict holds both
    (so `smoothcert.models.fingerprint` tells apart two compositions that differ in either). Noise is added to
    its input, before the denoiser. Every forward pass checks that the denoiser kept the input's shape."""

    def __init__(self, classifier: nn.Module, denoiser: nn.Module):
        super().__init__()
        for part, name in ((classifier, "classifier"), (denoiser, "denoiser")):
            check(isinstance(part, nn.Module), f"the {name} must be a torch.nn.Module, got {type(part).__name__}")
        self.classifier = classifier
        self.denoiser = denoiser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.denoiser(x)
        if not isinstance(z, torch.Tensor) or z.shape != x.shape:
            raise _shape_error(x.shape, tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__)
        return self.classifier(z)

    def train(self, mode: bool = True) -> "Denoised":
        """Sets each part's mode; a part loaded from a torch.export program keeps the mode it was exported in."""
        self.training = mode
        for part in (self.classifier, self.denoiser):
            if mode:
                try:
                    part.train(True)
                except NotImplementedError:
                    pass
            else:
                eval_mode(part)
        return self


def probe_denoiser(denoiser, x: torch.Tensor) -> None:
    """Run the denoiser on the first two inputs (no gradients) and check it returns their shape, in one line."""
    x = x[:2]
    with torch.inference_mode():
        try:
            z = denoiser(x)
        except SmoothcertError:
            raise
        except Exception as exc:
            raise SmoothcertError(f"the denoiser cannot take inputs of shape {tuple(x.shape[1:])}: "
                                  f"{first_line(exc)}") from None
    if not isinstance(z, torch.Tensor) or z.shape != x.shape:
        raise _shape_error(x.shape, tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__)
    check(bool(torch.isfinite(z).all()), "the denoiser output non-finite values (NaN or inf)")


def load_denoiser(spec: str, weights: str | None = None, device="cpu", *, trust: bool = False,
                  sigma: float | None = None, diffusion_range=None, **arch_kwargs) -> nn.Module:
    """Load a denoiser from a spec, in eval mode on `device`.

    Args:
        spec: diffusion:DIR (a local diffusers folder, see `load_diffusion`), a built-in denoiser architecture
            (dncnn, with `weights`; its channels, depth and width are read from them), or anything
            `smoothcert.models.load_model` takes (a .pt2 or TorchScript file, package.module:factory with weights).
        weights: a state dict file, for an architecture or a factory.
        device: where it goes.
        trust: as for load_model (a .pt2 may unpickle arbitrary objects).
        sigma: the smoothing noise's standard deviation: needed by a diffusion denoiser (it picks its timestep).
        diffusion_range: the data range the diffusion model was trained on (default (-1, 1), as diffusers' DDPM
            models).
        arch_kwargs: passed to a built-in architecture (override what the weights say).
    """
    check(isinstance(spec, str) and spec.strip() != "", f"a denoiser spec must be a non-empty string, got {spec!r}")
    if spec.startswith(DIFFUSION_PREFIX):
        from .diffusion import load_diffusion
        check(weights is None, "--denoiser-weights goes with a denoiser architecture or factory, not diffusion:DIR")
        check(sigma is not None, "a diffusion denoiser needs the smoothing sigma to pick its timestep")
        return load_diffusion(spec[len(DIFFUSION_PREFIX):], sigma, diffusion_range or DEFAULT_DIFFUSION_RANGE,
                              device=device)
    if spec in DENOISERS:
        check(weights is not None, f"--denoiser {spec} needs --denoiser-weights (a state dict file)")
        state = read_state_dict(weights)
        model = build_denoiser(spec, **{**(dncnn_config(state) if spec == "dncnn" else {}), **arch_kwargs})
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise SmoothcertError(f"denoiser weights {weights} do not fit {spec}: {first_line(exc)} ...") from None
        return eval_mode(model.to(device))
    return load_model(spec, weights, device, trust=trust)
