"""Noise distributions: each knows how to sample itself and what radius probability bounds buy.

A noise knows nothing of Monte Carlo estimation; the estimator knows nothing of radii (rs4a's split).
Noise is added in the model's *input space*, before any normalisation layer (as Cohen et al. do); a
normalisation layer belongs inside the model.

Every radius method is vectorised over numpy arrays, returns 0 where the bounds certify nothing (never a
negative radius), and takes the norm the radius is measured in; a noise that cannot certify a norm says so.

Here: Gaussian and Laplace, the registry of noises by name (NOISES, make_noise). Beside them: sound.py, the
float-sound Gaussian (drawn exactly on a grid), and rounding_attack.py, the floating-point attack it defeats.
A new noise is a class with sample and its radius per norm, and an entry in NOISES.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtri

from ..errors import SmoothcertError, check


def _positive(obj, name: str) -> None:
    """Check obj.<name> is a finite number > 0 and store it as a float (a 0-d tensor or numpy scalar is fine)."""
    value = getattr(obj, name)
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)) and value.ndim == 0 and value.dtype != bool:
        value = value.item()
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
          f"{name} must be a finite number > 0, got {value!r}")
    object.__setattr__(obj, name, float(value))


class _Noise:
    name: str
    norms: tuple[str, ...]

    def _check_norm(self, norm: str) -> None:
        if norm not in self.norms:
            raise SmoothcertError(f"{self.name} noise cannot certify the {norm!r} norm (it certifies: "
                                  f"{', '.join(self.norms)})")


@dataclass(frozen=True)
class Gaussian(_Noise):
    """Isotropic Gaussian noise N(0, sigma^2 I). Certifies l2; an l2 ball contains the l1 ball of the same
    radius (||d||_2 <= ||d||_1), so its l2 radius is also an l1 radius (the 'gaussian-l1' baseline of Teng et
    al., Table 1)."""

    sigma: float
    name = "gaussian"
    norms = ("l2", "l1")

    def __post_init__(self):
        _positive(self, "sigma")

    @property
    def scale(self) -> float:
        return float(self.sigma)

    def sample(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill `out` (on its own device and dtype) with fresh noise drawn from `generator`."""
        return out.normal_(0.0, self.sigma, generator=generator)

    def radius(self, p_a, norm: str = "l2"):
        """sigma * Phi^-1(p_a) for a lower bound p_a on the top class (Cohen et al. 2019, Thm 1 with p_B = 1 - p_A)."""
        self._check_norm(norm)
        p = np.asarray(p_a, dtype=np.float64)
        return np.where(p > 0.5, self.sigma * ndtri(np.clip(p, 0.5, 1.0)), 0.0)[()]

    def margin_radius(self, p_a, p_b, norm: str = "l2"):
        """sigma/2 * (Phi^-1(p_a) - Phi^-1(p_b)) for p_a >= P(A), p_b <= ... (Cohen et al. 2019, Thm 1; 000 eq. 3)."""
        self._check_norm(norm)
        p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = 0.5 * self.sigma * (ndtri(p_a) - ndtri(p_b))
        return np.where(p_a > p_b, np.nan_to_num(r, nan=0.0, posinf=np.inf), 0.0)[()]

    def describe(self) -> str:
        return f"gaussian(sigma={self.sigma:g})"


@dataclass(frozen=True)
class Laplace(_Noise):
    """Isotropic Laplace noise, density (2 lam)^-d exp(-||z||_1 / lam); certifies l1 (Teng et al. 2020).
    Its per-coordinate standard deviation is sqrt(2) lam: lam = sigma / sqrt(2) matches Gaussian(sigma)."""

    lam: float
    name = "laplace"
    norms = ("l1",)

    def __post_init__(self):
        _positive(self, "lam")

    @classmethod
    def matching(cls, sigma: float) -> "Laplace":
        """The Laplace noise with the variance of Gaussian(sigma): lam = sigma / sqrt(2) (ERRATA: not sqrt(2 lam))."""
        return cls(sigma / math.sqrt(2.0))

    @property
    def scale(self) -> float:
        return float(self.lam)

    def sample(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill `out` with Laplace(0, lam) noise: lam * (E1 - E2) for independent Exp(1) draws (exact)."""
        out.exponential_(generator=generator)
        out.sub_(torch.empty_like(out).exponential_(generator=generator))
        return out.mul_(self.lam)

    def radius(self, p_a, norm: str = "l1"):
        """-lam * log(2 (1 - p_a)) for a lower bound p_a > 1/2 (Teng et al., Thm 2; also Thm 1 with p_B = 1 - p_A,
        so it holds with any number of classes; tight for two, Thm 3)."""
        self._check_norm(norm)
        p = np.clip(np.asarray(p_a, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            r = -self.lam * np.log(2.0 * (1.0 - p))
        return np.where(p > 0.5, r, 0.0)[()]

    def margin_radius(self, p_a, p_b, norm: str = "l1"):
        """max{lam/2 log(p_a/p_b), -lam log(1 - p_a + p_b)} (Teng et al., Thm 1); the second term wins exactly
        when p_b >= (1 - p_a)^2 / p_a (ERRATA)."""
        self._check_norm(norm)
        p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.maximum(0.5 * self.lam * np.log(p_a / p_b), -self.lam * np.log((1.0 - p_a) + p_b))  # 1 - p_a is exact
        return np.where(p_a > p_b, np.nan_to_num(r, nan=0.0, posinf=np.inf), 0.0)[()]

    def lecuyer_radius(self, p_a, p_b, norm: str = "l1"):
        """lam/2 * log(p_a / p_b): the differential-privacy bound of Lecuyer et al. 2019 (Teng et al., Table 1)."""
        self._check_norm(norm)
        p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = 0.5 * self.lam * np.log(p_a / p_b)
        return np.where(p_a > p_b, np.nan_to_num(r, nan=0.0, posinf=np.inf), 0.0)[()]

    def describe(self) -> str:
        return f"laplace(lam={self.lam:g})"


NOISES = {"gaussian": Gaussian, "laplace": Laplace}


def make_noise(name: str, *, sigma: float | None = None, lam: float | None = None):
    """Build a noise from its CLI name and parameter (--sigma for gaussian, --lam for laplace)."""
    if name == "gaussian":
        check(sigma is not None, "gaussian noise needs --sigma")
        check(lam is None, "--lam goes with --noise laplace")
        return Gaussian(sigma)
    if name == "laplace":
        check(lam is not None, "laplace noise needs --lam (lam = sigma / sqrt(2) matches Gaussian sigma's variance)")
        check(sigma is None, "--sigma goes with --noise gaussian; laplace takes --lam")
        return Laplace(lam)
    raise SmoothcertError(f"unknown noise {name!r} (known: {', '.join(NOISES)})")
