"""Noise distributions: each knows how to sample itself and what radius a probability bound buys.

A noise knows nothing of Monte Carlo estimation; the estimator knows nothing of radii (rs4a's split).
Noise is added in the model's *input space*, before any normalisation layer (as Cohen et al. do); a
normalisation layer belongs inside the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import numpy as np
from scipy.special import ndtri

from .errors import SmoothcertError, check


@dataclass(frozen=True)
class Gaussian:
    """Isotropic Gaussian noise N(0, sigma^2 I); certifies the l2 norm."""

    sigma: float
    name = "gaussian"
    norms = ("l2",)

    def __post_init__(self):
        check(isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma > 0,
              f"sigma must be a finite number > 0, got {self.sigma!r}")

    @property
    def scale(self) -> float:
        return float(self.sigma)

    def sample(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill `out` (on its own device and dtype) with fresh noise drawn from `generator`."""
        torch.randn(out.shape, generator=generator, out=out)
        return out.mul_(self.sigma)

    def radius(self, p_lower, norm: str = "l2"):
        """Certified radius sigma * Phi^-1(p_lower) for a lower bound p_lower > 1/2 (Cohen et al. 2019, Thm 1).

        Vectorised; 0 where p_lower <= 1/2 (the caller abstains there): a radius is never negative.
        """
        self._check_norm(norm)
        p = np.asarray(p_lower, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.where(p > 0.5, self.sigma * ndtri(np.maximum(p, 0.5)), 0.0)[()]

    def _check_norm(self, norm: str) -> None:
        if norm not in self.norms:
            raise SmoothcertError(f"{self.name} noise certifies the {'/'.join(self.norms)} norm, not {norm!r}")

    def describe(self) -> str:
        return f"gaussian(sigma={self.sigma:g})"


def make_noise(name: str, *, sigma: float | None = None, lam: float | None = None):
    """Build a noise from its CLI name and parameter."""
    if name == "gaussian":
        check(sigma is not None, "gaussian noise needs --sigma")
        return Gaussian(sigma)
    raise SmoothcertError(f"unknown noise {name!r} (known: gaussian)")
