"""The built-in architectures (`ARCHITECTURES`, `build`): a small CNN for the digits and He et al.'s CIFAR ResNets.

Noise is added in the model's input space (pixels in [0, 1] for the built-in data sets), *before*
normalisation, as Cohen et al. do: every built-in architecture starts with its own `Normalize` layer, so a
saved model carries its normalisation with it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import SmoothcertError, check

MAX_CLASSES = 100_000            # a label (or a weights file) beyond this is an error, not a 10^9-output layer to allocate

class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def digits_cnn(num_classes: int = 10, in_channels: int = 1, mean=(0.3,), std=(0.4,)) -> nn.Module:
    """A small CNN for 8x8 images (scikit-learn's digits)."""
    return nn.Sequential(
        Normalize(mean * in_channels if len(mean) == 1 else mean, std * in_channels if len(std) == 1 else std),
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),  # strided, not max-pooled: 6x faster on CPU
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


def cifar_resnet(depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)) -> nn.Module:
    """He et al.'s CIFAR ResNet (depth 6k+2; 20 has 0.27M parameters; Cohen et al. use 110)."""
    check((depth - 2) % 6 == 0, f"CIFAR ResNet depth must be 6k+2, got {depth}")
    k = (depth - 2) // 6
    layers, cin = [], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(k):
            layers.append(_Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    if len(mean) != in_channels and len(mean) == 3:      # e.g. one-channel digits: one channel's statistics
        mean, std = (sum(mean) / 3,) * in_channels, (sum(std) / 3,) * in_channels
    return nn.Sequential(Normalize(mean, std), nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


ARCHITECTURES = {
    "digits-cnn": digits_cnn,
    "cifar-resnet20": lambda **kw: cifar_resnet(20, **kw),
    "cifar-resnet110": lambda **kw: cifar_resnet(110, **kw),
}


def build(arch: str, **kwargs) -> nn.Module:
    """A fresh built-in architecture by name."""
    if arch not in ARCHITECTURES:
        raise SmoothcertError(f"unknown architecture {arch!r} (built in: {', '.join(ARCHITECTURES)})")
    classes = kwargs.get("num_classes", 1)
    check(not isinstance(classes, int) or classes <= MAX_CLASSES,
          f"{arch} with {classes:,} classes: the built-in architectures take at most {MAX_CLASSES:,}")
    return ARCHITECTURES[arch](**kwargs)
