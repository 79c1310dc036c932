"""The built-in denoiser: DnCNN (Zhang et al. 2017), as Salman et al. 2020 put it in front of a classifier, and the
registry that builds a denoiser by name (as `smoothcert.models.ARCHITECTURES` builds a classifier)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import SmoothcertError, check_count


class DnCNN(nn.Module):
    """Residual denoiser: conv-ReLU, (conv-BN-ReLU) x (depth - 2), conv predicts the noise; the output is the input
    minus the predicted noise (Zhang et al. 2017, §3; Salman et al. 2020 use depth 17, width 64 on CIFAR-10).

    The last convolution starts at zero, so an untrained DnCNN is the identity and training starts from "no
    denoising" (Salman et al.'s code does the same; the other convolutions are initialised orthogonally)."""

    def __init__(self, channels: int = 1, depth: int = 5, width: int = 16):
        super().__init__()
        check_count("DnCNN channels", channels)
        check_count("DnCNN depth", depth, 2)
        check_count("DnCNN width", width)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def dncnn(channels: int = 1, depth: int = 5, width: int = 16) -> DnCNN:
    """A DnCNN; the defaults suit the built-in 8x8 one-channel digits (7,300 parameters; on a CPU its forward pass
    costs about four times the digits CNN's, and width 16 runs several times faster than 24 or 32).
    For CIFAR-sized inputs Salman et al. use dncnn(3, depth=17, width=64)."""
    return DnCNN(channels, depth, width)


def dncnn_config(state) -> dict:
    """channels, depth and width of a DnCNN's state dict (so its weights alone say what to build); {} when the
    state dict is not a DnCNN's (loading it then says what does not fit)."""
    convs = sorted((int(k.split(".")[1]), v) for k, v in state.items()
                   if k.startswith("body.") and k.endswith(".weight") and getattr(v, "ndim", 0) == 4
                   and k.split(".")[1].isdigit())
    if len(convs) < 2:
        return {}
    first = convs[0][1]
    return {"channels": int(first.shape[1]), "width": int(first.shape[0]), "depth": len(convs)}


DENOISERS = {"dncnn": dncnn}


def build_denoiser(arch: str, **kwargs) -> nn.Module:
    """A fresh built-in denoiser by name (keyword arguments go to its factory, e.g. channels, depth, width)."""
    if arch not in DENOISERS:
        raise SmoothcertError(f"unknown denoiser architecture {arch!r} (built in: {', '.join(DENOISERS)})")
    try:
        return DENOISERS[arch](**kwargs)
    except TypeError as exc:
        raise SmoothcertError(f"denoiser {arch!r}: {exc}") from None
