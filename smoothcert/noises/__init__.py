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
from . import norms as _norms


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
        """Refuse a norm this noise cannot certify. A noise certifying l2 also gives the l-inf reading of its l2
        radius, 'linf' (its dimension still to be filled in) or 'linf:d=D' (norms.py)."""
        kind = _norms.kind(norm)
        if norm not in self.norms and not (kind == _norms.LINF and "l2" in self.norms):
            raise SmoothcertError(f"{self.name} noise cannot certify the {kind!r} norm (it certifies: "
                                  f"{', '.join(self.norms)})")


@dataclass(frozen=True)
class Gaussian(_Noise):
    """Isotropic Gaussian noise N(0, sigma^2 I). Certifies l2; an l2 ball contains the l1 ball of the same
    radius (||d||_2 <= ||d||_1), so its l2 radius is also an l1 radius (the 'gaussian-l1' baseline of Teng et
    al., Table 1), and the l-inf ball of radius r_2 / sqrt(D) for inputs of D coordinates ('linf:d=D', norms.py)."""

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
        return _norms.read(np.where(p > 0.5, self.sigma * ndtri(np.clip(p, 0.5, 1.0)), 0.0), norm)[()]

    def margin_radius(self, p_a, p_b, norm: str = "l2"):
        """sigma/2 * (Phi^-1(p_a) - Phi^-1(p_b)) for p_a >= P(A), p_b <= ... (Cohen et al. 2019, Thm 1; 000 eq. 3)."""
        self._check_norm(norm)
        p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = 0.5 * self.sigma * (ndtri(p_a) - ndtri(p_b))
        return _norms.read(np.where(p_a > p_b, np.nan_to_num(r, nan=0.0, posinf=np.inf), 0.0), norm)[()]

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


@dataclass(frozen=True)
class Uniform(_Noise):
    """Uniform noise on the cube [-lam, lam]^d; certifies l1 (Yang et al. 2020, "Randomized Smoothing of All Shapes
    and Sizes"; Lee et al. 2019). Its per-coordinate variance is lam^2 / 3: lam = sqrt(3) sigma matches Gaussian(sigma).

    Why the radii hold (and are tight): the noises centred at x and at x + delta differ in total variation by
    1 - prod_i (1 - |delta_i| / 2 lam)_+ <= ||delta||_1 / (2 lam), with equality when delta lies along one axis,
    so no class's probability moves by more than ||delta||_1 / (2 lam); a half-space x_1 > t moves by exactly that."""

    lam: float
    name = "uniform"
    norms = ("l1",)

    def __post_init__(self):
        _positive(self, "lam")

    @classmethod
    def matching(cls, sigma: float) -> "Uniform":
        """The uniform noise with the variance of Gaussian(sigma): lam = sqrt(3) sigma (variance lam^2 / 3)."""
        check(isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma) and sigma > 0,
              f"sigma must be a finite number > 0, got {sigma!r}")
        return cls(sigma * math.sqrt(3.0))

    @property
    def scale(self) -> float:
        return float(self.lam)

    def sample(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill `out` (on its own device and dtype) with U[-lam, lam] noise drawn from `generator` (torch's uniform_:
        the buffer dtype's uniform grid on [0, 1), scaled and shifted)."""
        return out.uniform_(-self.lam, self.lam, generator=generator)

    def radius(self, p_a, norm: str = "l1"):
        """2 lam (p_a - 1/2) for a lower bound p_a on the top class, 0 where p_a <= 1/2; at most lam (Yang et al.
        2020, uniform noise against l1, their rs4a Uniform.certify_l1; the total-variation bound with p_B = 1 - p_A)."""
        self._check_norm(norm)
        p = np.clip(np.asarray(p_a, dtype=np.float64), 0.0, 1.0)
        return np.where(p > 0.5, 2.0 * self.lam * (p - 0.5), 0.0)[()]

    def margin_radius(self, p_a, p_b, norm: str = "l1"):
        """lam (p_a - p_b) for p_a <= P(A) and p_b >= every other class's probability, 0 where p_a <= p_b (each moves
        by at most ||delta||_1 / (2 lam): see the class docstring; tight for a half-space, and equal to `radius` at
        p_b = 1 - p_a)."""
        self._check_norm(norm)
        p_a = np.clip(np.asarray(p_a, dtype=np.float64), 0.0, 1.0)
        p_b = np.clip(np.asarray(p_b, dtype=np.float64), 0.0, 1.0)
        return np.where(p_a > p_b, self.lam * (p_a - p_b), 0.0)[()]

    def describe(self) -> str:
        return f"uniform(lam={self.lam:g})"


def tv_of(noise) -> float:
    """The total-variation distance between the law `noise` samples and the law its certificates are proved for:
    0 for the noises here, `tv` for the float-sound Gaussian (sound.py, step 3). A certificate that reads the noise's
    scale directly, instead of its radius methods, must absorb it."""
    return float(getattr(noise, "tv", 0.0))


NOISES = {"gaussian": Gaussian, "laplace": Laplace, "uniform": Uniform}


def make_noise(name: str, *, sigma: float | None = None, lam: float | None = None):
    """Build a noise from its CLI name and parameter (--sigma for gaussian, --lam for laplace and uniform)."""
    if name == "gaussian":
        check(sigma is not None, "gaussian noise needs --sigma")
        check(lam is None, "--lam goes with --noise laplace or uniform")
        return Gaussian(sigma)
    if name == "laplace":
        check(lam is not None, "laplace noise needs --lam (lam = sigma / sqrt(2) matches Gaussian sigma's variance)")
        check(sigma is None, "--sigma goes with --noise gaussian; laplace takes --lam")
        return Laplace(lam)
    if name == "uniform":
        check(sigma is None, "uniform noise takes --lam, not --sigma (U[-lam, lam]; lam = sigma * sqrt(3) has the "
                             "variance of Gaussian sigma)")
        check(lam is not None, "uniform noise needs --lam (U[-lam, lam]; lam = sigma * sqrt(3) has the variance of "
                               "Gaussian sigma)")
        return Uniform(lam)
    raise SmoothcertError(f"unknown noise {name!r} (known: {', '.join(NOISES)})")
