"""The floating-point attack on randomized smoothing (after Voracek & Hein, ICLR 2023, §3): a base classifier that
reads the rounding pattern of its input, and the pair of points it breaks.

Mechanism, exact for float32 (Sterbenz's lemma): let c > 0 be a float, t <= c/2 a power of two and q the unit in
the last place of the binade holding c - t. If noise delta (any float) is added to x_i = c and the rounded sum
z_i = fl(c + delta) has |z_i| < t, then |c + delta| < t, so c/2 <= -delta <= 2c and the subtraction is exact:
z_i = c + delta, a multiple of q (both c and delta are). Added to x_i = 0 instead, z_i = delta exactly, and a
Gaussian draw below t in magnitude carries bits below q (its binade is finer) most of the time. So

    f(z) = 1  if some coordinate has |z_i| < t and z_i not a multiple of q,  else 0

is never 1 near the gray image x' = c (every coordinate), and almost always 1 near the black image x = 0 when
the input has enough coordinates: CIFAR-sized inputs (3072) at sigma = 0.25 see about 30 such coordinates per
sample. Default sampling certifies class 1 at x with pA ~ 1 (radius sigma Phi^-1(pA_lower), 0.80 at
n = 10,000), yet the smoothed classifier at x' = 2/255 everywhere, at l2 distance 2/255 sqrt(3072) = 0.43, is 0.
One coordinate alone carries little: the pattern shows only where fl(c + delta) cancels below c/2, with
probability of order c/sigma (0.01 a sample here), too little in our analysis to fake a certificate at
distances like the paper's 0.8 in one dimension; the attack needs the many coordinates of an image. (The paper's
own 1-D construction could not be checked: only its abstract and introduction were available to us.)
Float-sound sampling (smoothcert.noises.sound) adds noise exactly in grid units, so the model sees a function of the
exact x + delta and f reads nothing it could not read from that point (the tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import check


class RoundingReader(nn.Module):
    """f(z) = 1 iff some coordinate has |z_i| < below and is not a multiple of quantum (both powers of two); the
    logits are (1 - hit, hit). The multiple test is exact: a power-of-two scaling and frac."""

    def __init__(self, below: float, quantum: float):
        super().__init__()
        self.below, self.quantum = float(below), float(quantum)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(z.shape[0], -1)
        hit = ((z.abs() < self.below) & (torch.frac(z * (1.0 / self.quantum)) != 0)).any(dim=1)
        return torch.stack([~hit, hit], dim=1).to(torch.float32)


@dataclass(frozen=True)
class Attack:
    """The reader, the point certified (x, black) and the adversarial point (x_adv, gray) at l2 `distance`."""

    model: RoundingReader
    x: torch.Tensor
    x_adv: torch.Tensor
    distance: float
    level: float          # c, the gray level (a float32)


def rounding_attack(shape=(3, 32, 32), level: int = 2, grid: int = 255) -> Attack:
    """The attack on inputs of `shape`: x = 0 and x_adv = fl32(level / grid) everywhere (on the grid k / grid, so
    float-sound sampling accepts both)."""
    check(isinstance(level, int) and level >= 1, f"level must be an integer >= 1, got {level!r}")
    c = float(np.float32(level / grid))
    below = 2.0 ** math.floor(math.log2(c / 2))                   # t <= c/2
    quantum = float(np.spacing(np.float32(c - below)))             # ulp of the binade of c - t (exact: t, c floats)
    x = torch.zeros(shape)
    x_adv = torch.full(shape, c)
    return Attack(RoundingReader(below, quantum), x, x_adv, float(torch.linalg.vector_norm((x_adv - x).double())), c)
