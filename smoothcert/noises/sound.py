"""Float-sound Gaussian smoothing (Voracek & Hein, "Sound Randomized Smoothing in Floating-Point Arithmetic",
ICLR 2023): the noise `SoundGaussian` and the exact integer table it is drawn from.

Why: Cohen et al.'s certificate (Thm 1) is a statement about x + eps with eps ~ N(0, sigma^2 I) in exact
arithmetic. The engine computes fl(x + fl(eps)), which is not a function of x + eps alone, so a base classifier
can read the rounding pattern and tell noise added to x from noise added to x' (smoothcert.noises.rounding_attack).

Design (the paper's remedy, in integer form; the authors' certifier.py draws the same rounded normal; the
paper's text past its introduction was not available to us, so no equation of it is cited here):
  * Inputs lie on a declared grid k / `grid` (8-bit images: grid 255; scikit-learn digits: 16). The engine works
    in *grid units*: `encode` turns x into the integers k (refusing an input off its grid), the noise is drawn in
    grid units on the finer grid of steps h = 2^-bits, and `decode` gives the model (x_u + delta_u) / grid. The
    division is part of the (deterministic) base classifier; a radius in input units is sigma Phi^-1(.) with the
    sigma given (sigma_u = sigma * grid in grid units, divided back by grid).
  * The noise is the *rounded* normal, delta = Q(eps) with Q rounding to the nearest multiple of h:
    P(delta = j h) = Phi((j + 1/2) h / sigma_u) - Phi((j - 1/2) h / sigma_u). (Not the discrete Gaussian with
    pmf ~ exp(-j^2 h^2 / 2 sigma_u^2): for the rounded normal the certificate is Cohen's, unchanged.)
  * It is drawn from integers only: one torch `random_()` per coordinate gives 63 fair bits u (int64
    random_() is random64 % 2^63, on CPU and CUDA); an integer alias table (Walker/Vose) with 2^k columns maps
    u to an atom: column u >> (63 - k), own atom if the low 63 - k bits fall below the column's threshold, else
    its alias. No float operation touches the random bits. The table realises exactly the law
    q_j = c_j / 2^63, with integers c_j = round(2^63 P(eps > (j - 1/2) h)) - round(2^63 P(eps > (j + 1/2) h))
    (computed with mpmath at 50 digits; the mass beyond the last atom J = ceil(9.6 sigma_u / h), < 2^-70, goes
    to it), and `build_table` recomputes the law from the finished table and refuses any difference.
  * x_u + delta_u is exact: both are multiples of h, so the sum is j h with |j| <= max|k| 2^bits + J; binary
    floating point with p significand bits (float32 24, float64 53; the engine adds in float32 or wider)
    represents every such number iff max|k| 2^bits + J <= 2^p, which `encode` checks. IEEE addition returns
    the exact sum whenever it is representable, on any device.

The certificate (proof; step numbers are referred to in the code):
  1. Let H be the noise grid (multiples of h, per coordinate; it contains the input grid because h = 2^-bits
     <= 1) and f~ = f o Q, where f is the base classifier on exact points of H. For x in H, Q(x + eps) =
     x + Q(eps) (rounding commutes with shifts by grid vectors), so P(f~(x + eps) = c) = P(f(x + delta) = c)
     with delta the rounded normal above: sampling f(x + delta) samples the *continuous* Gaussian smoothing
     g~ of the fixed classifier f~.
  2. Cohen et al. 2019, Thm 1 (with p_B = 1 - p_A for CERTIFY; 000 eq. 3 for the margin form) holds for every
     base classifier, so for f~: if P(A) >= p_A and max_{c != A} P(c) <= p_B, then g~(x') = A for every real
     x' with ||x' - x||_2 < sigma_u/2 (Phi^-1(p_A) - Phi^-1(p_B)) in grid units, i.e. sigma/2 (...) in input
     units (distances and sigma both scale by grid). For x' on the input grid, g~(x') is exactly what this
     noise samples at x' (up to step 3's tv).
  3. The engine draws q, not p. With d coordinates per input, TV(q^d, p^d) <= d TV(q, p) <= `tv`, computed as
     max_dims * TV(q, p) (exact mpmath sum, rounded up), so |P_q(E) - P_p(E)| <= tv for every event E. A
     (1 - alpha) lower bound L on P_q(A) is a (1 - alpha) lower bound L - tv on P_p(A), and an upper bound U
     on P_q(B) gives U + tv: `radius` and `margin_radius` apply exactly this (tv is about 1e-9 for
     max_dims = 2^24). Certificates that read sigma directly instead of these methods (exact-margin, soft
     Lipschitz, certified confidence) must subtract tv themselves.
  4. Assumption (the paper's "fair coin"): the generator's bits are independent and fair.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import torch

from ..errors import SmoothcertError, check
from . import Gaussian, _Noise, _positive

RANDOM_BITS = 63            # int64 random_(): uniform on [0, 2^63)
TAIL = 9.6                  # atoms up to J = ceil(TAIL sigma_u / h): P(|eps| > 9.6 sigma) < 2^-70
STEPS_PER_SIGMA = 8         # the noise step h must be <= sigma_u / 8 (variance of Q(eps) within 0.13 % of sigma^2)
MAX_ATOMS = 1 << 18         # table size limit (sigma_u / h up to about 13,000)
MAX_DIMS = 1 << 24          # coordinates per input that `tv` covers
GRID_TOLERANCE = 2.0 ** -10  # an input within this many grid steps of k / grid is read as k / grid
SIGNIFICAND = {torch.float32: 24, torch.float64: 53}
CHUNK = 1 << 20             # coordinates drawn per random_() call


@dataclass(frozen=True)
class Table:
    """The rounded normal on atoms j h, j = -half..half, as an exact dyadic law and its alias table."""

    bits: int                   # h = 2^-bits grid units
    half: int                   # J
    counts: tuple[int, ...]     # c_j for j = -J..J: q_j = c_j / 2^63, sum 2^63
    tv: float                   # TV(q, p) for one coordinate, rounded up
    column_bits: int            # k: 2^k columns
    packed: tuple[int, ...]     # per column: alias << (63 - k) | threshold (full columns: threshold 0, alias itself)


def auto_bits(sigma: float, grid: int) -> int:
    """The coarsest noise step 2^-bits (bits >= 0, so the noise grid contains the input grid) with
    step <= sigma_u / STEPS_PER_SIGMA, sigma_u = sigma * grid."""
    bits = 0
    while 2.0 ** -bits > sigma * grid / STEPS_PER_SIGMA:
        bits += 1
    return bits


def alias_table(counts: list[int], total_bits: int = RANDOM_BITS) -> tuple[int, tuple[int, ...]]:
    """Vose's alias method in integers: 2^k columns of 2^(total_bits - k) units each, for weights summing to
    2^total_bits. Returns (k, packed columns)."""
    k = max(1, (len(counts) - 1).bit_length())
    cap = 1 << (total_bits - k)
    w = list(counts) + [0] * ((1 << k) - len(counts))
    assert sum(w) == cap << k, "weights must sum to 2^total_bits"
    threshold, alias = [0] * len(w), list(range(len(w)))
    small = [i for i, v in enumerate(w) if v < cap]
    large = [i for i, v in enumerate(w) if v >= cap]
    while small and large:
        s, big = small.pop(), large.pop()
        threshold[s], alias[s] = w[s], big
        w[big] -= cap - w[s]
        (small if w[big] < cap else large).append(big)
    for i in small + large:      # what is left is exactly full (the total is exact): always its own atom
        assert w[i] == cap, "alias construction lost mass"
        threshold[i], alias[i] = 0, i
    return k, tuple((a << (total_bits - k)) | t for a, t in zip(alias, threshold))


def table_law(k: int, packed, size: int, total_bits: int = RANDOM_BITS) -> list[int]:
    """The exact law (units of 2^-total_bits) an alias table samples, atom by atom: the own atom of column c
    takes `threshold` units, its alias the rest of the column."""
    cap = 1 << (total_bits - k)
    law = [0] * (1 << k)
    for column, entry in enumerate(packed):
        threshold, alias = entry & (cap - 1), entry >> (total_bits - k)
        if alias == column:                 # a full column (threshold 0): always its own atom
            law[column] += cap
        else:
            law[column] += threshold
            law[alias] += cap - threshold
    assert all(v == 0 for v in law[size:]), "the table samples a padding atom"
    return law[:size]


@lru_cache(maxsize=64)
def build_table(sigma: float, grid: int, bits: int) -> Table:
    """The table of the rounded normal of standard deviation sigma * grid grid units on steps of 2^-bits."""
    one = 1 << RANDOM_BITS
    with mpmath.workdps(50):
        z = mpmath.mpf(sigma) * grid * mpmath.ldexp(1, bits)        # sigma in noise steps, exactly
        half = int(mpmath.ceil(TAIL * z))
        check(2 * half + 1 <= MAX_ATOMS,
              f"the float-sound table for sigma = {sigma:g} on noise steps of 2^-{bits}/{grid} would need "
              f"{2 * half + 1:,} atoms, more than {MAX_ATOMS:,} "
              f"({'use fewer noise bits' if bits else 'sigma is too large'})")
        above = [mpmath.ncdf(-(j - mpmath.mpf(1) / 2) / z) for j in range(1, half + 2)]   # P(eps > (j - 1/2) h)
        tail = [int(mpmath.nint(mpmath.ldexp(a, RANDOM_BITS))) for a in above[:-1]] + [0]
        side = [tail[i] - tail[i + 1] for i in range(half)]          # c_j, j = 1..J (c_J takes the tail beyond)
        counts = side[::-1] + [one - 2 * tail[0]] + side
        exact = [above[i] - above[i + 1] for i in range(half)]        # p_j, j = 1..J
        tv = (abs(mpmath.mpf(counts[half]) / one - (1 - 2 * above[0]))
              + 2 * sum(abs(mpmath.mpf(c) / one - p) for c, p in zip(side, exact)) + 2 * above[-1]) / 2
        tv = math.nextafter(float(tv + mpmath.mpf(10) ** -40), math.inf)
    assert min(counts) >= 0 and sum(counts) == one
    k, packed = alias_table(counts)
    if table_law(k, packed, len(counts)) != counts:      # the table must realise exactly the law it was built for
        raise AssertionError("alias table does not reproduce its law")
    return Table(bits, half, tuple(counts), tv, k, packed)


def lookup(u: torch.Tensor, packed: torch.Tensor, shift: int) -> torch.Tensor:
    """Atom indices for random integers u in [0, 2^63) (consumed): column u >> shift; its own atom if the low
    `shift` bits are below the column's threshold, else its alias. Integer operations only."""
    column = u >> shift
    low = u.bitwise_and_((1 << shift) - 1)
    entry = torch.index_select(packed, 0, column)
    own = low < entry.bitwise_and((1 << shift) - 1)
    return torch.where(own, column, entry.bitwise_right_shift_(shift))


@lru_cache(maxsize=64)
def _device_tables(sigma: float, grid: int, bits: int, device: torch.device, dtype: torch.dtype):
    """The packed alias table (int64) and atom values j h (dtype, exact) on `device`."""
    t = build_table(sigma, grid, bits)
    values = torch.zeros(1 << t.column_bits, dtype=torch.float64)
    values[:2 * t.half + 1] = torch.arange(-t.half, t.half + 1, dtype=torch.float64) * 2.0 ** -bits
    return (torch.tensor(t.packed, dtype=torch.int64, device=device), values.to(device=device, dtype=dtype))


@dataclass(frozen=True)
class SoundGaussian(_Noise):
    """Gaussian smoothing made sound in floating point (module docstring): the rounded normal of standard
    deviation sigma on steps of 2^-bits / grid, inputs on the grid k / grid, added exactly in grid units.

    The Sampler calls `encode` on its inputs and `decode` on each noisy batch before the model (the hook in
    smoothcert.engine); `sample` fills a buffer with noise in grid units. Certifies l2, and l1 as the l2 ball
    contains the l1 ball, like Gaussian.

    Args:
        sigma: standard deviation in input units (as for Gaussian).
        grid: inputs are k / grid for integers k (255 for 8-bit images).
        bits: noise step 2^-bits grid units; None: the coarsest step <= sigma * grid / 8 (`auto_bits`).
        max_dims: the most coordinates an input may have; `tv` covers that many.
    """

    sigma: float
    grid: int
    bits: int | None = None
    max_dims: int = MAX_DIMS
    name = "gaussian"            # Gaussian smoothing of f o Q: every Gaussian certificate applies (step 2)
    norms = ("l2", "l1")
    float_sound = True

    def __post_init__(self):
        _positive(self, "sigma")
        check(self.grid is not None, "float-sound sampling needs the input grid: inputs are k / grid (e.g. "
                                     "--input-grid 255 for 8-bit images)")
        check(isinstance(self.grid, int) and not isinstance(self.grid, bool) and self.grid >= 1,
              f"the input grid must be an integer >= 1 (inputs k / grid), got {self.grid!r}")
        check(isinstance(self.max_dims, int) and not isinstance(self.max_dims, bool) and self.max_dims >= 1,
              f"max_dims must be an integer >= 1, got {self.max_dims!r}")
        if self.bits is None:
            object.__setattr__(self, "bits", auto_bits(self.sigma, self.grid))
        check(isinstance(self.bits, int) and not isinstance(self.bits, bool) and 0 <= self.bits <= 48,
              f"noise bits must be an integer in [0, 48] (step 2^-bits grid units), got {self.bits!r}")
        check(2.0 ** -self.bits <= self.sigma * self.grid / STEPS_PER_SIGMA,
              f"sigma = {self.sigma:g} is too small for a noise step of 2^-{self.bits}/{self.grid}: the step must be "
              f"at most sigma/{STEPS_PER_SIGMA} (use bits >= {auto_bits(self.sigma, self.grid)})")
        table = build_table(self.sigma, self.grid, self.bits)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_gaussian", Gaussian(self.sigma))
        object.__setattr__(self, "tv", min(1.0, math.nextafter(self.max_dims * table.tv, math.inf)))

    @property
    def scale(self) -> float:
        return float(self.sigma)

    @property
    def step(self) -> float:
        """The noise step in grid units."""
        return 2.0 ** -self.bits

    @property
    def table(self) -> Table:
        return self._table

    # -- the engine's side ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (N, *shape) on the grid -> the integers k = grid * x (same dtype and device), checked: every
        value within GRID_TOLERANCE steps of its k / grid, at most max_dims coordinates, and every x_u + delta_u
        exact in x's dtype (max|k| 2^bits + J <= 2^p)."""
        check(x.dtype in SIGNIFICAND, f"float-sound sampling adds noise in float32 or float64, not {x.dtype}")
        if x.numel() == 0:
            return x
        units = x.double() * self.grid            # exact: a float32 times an integer < 2^29 fits in 53 bits
        k = units.round()
        off = float((units - k).abs().max())
        check(off <= GRID_TOLERANCE, f"an input is off its grid: a value lies {off:.3g} grid steps from the nearest "
                                     f"k/{self.grid} (float-sound sampling certifies inputs on the declared grid)")
        dims = x[0].numel() if x.dim() >= 1 else 1
        check(dims <= self.max_dims, f"inputs have {dims:,} coordinates, more than the {self.max_dims:,} the "
                                     "float-sound noise covers (raise max_dims)")
        top = int(k.abs().max())
        need = top * (1 << self.bits) + self._table.half
        p = SIGNIFICAND[x.dtype]
        check(need <= 1 << p, f"x + noise cannot be exact in {str(x.dtype).replace('torch.', '')}: inputs up to "
                              f"{top}/{self.grid} plus noise up to {self._table.half * self.step:g} grid steps on "
                              f"steps of 2^-{self.bits} need {need.bit_length()} significant bits, it has {p} (sigma "
                              f"= {self.sigma:g} is too small for this grid and dtype: a larger sigma, float64, or fewer "
                              "noise bits)")
        return k.to(x.dtype)

    def off_grid(self, x: torch.Tensor) -> int | None:
        """The position of the first input (x: (N, ...)) with a value more than GRID_TOLERANCE steps off k / grid,
        or None when every input is on the grid (checked a few inputs at a time: no copy of the whole data)."""
        step = max(1, (1 << 22) // max(1, x[0].numel())) if x.numel() else 1
        for start in range(0, len(x), step):
            units = x[start:start + step].double().reshape(min(step, len(x) - start), -1) * self.grid
            bad = ((units - units.round()).abs() > GRID_TOLERANCE).any(dim=1).nonzero()
            if len(bad):
                return start + int(bad[0])
        return None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Noisy inputs in grid units -> the model's input z / grid (part of the base classifier)."""
        return z / self.grid

    def sample(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill `out` (float32 or float64, on its device) with noise in grid units, from 63 random bits a coordinate
        through the alias table (module docstring)."""
        check(out.dtype in SIGNIFICAND, f"float-sound noise is drawn in float32 or float64, not {out.dtype}")
        packed, values = _device_tables(self.sigma, self.grid, self.bits, out.device, out.dtype)
        flat = out.view(-1) if out.is_contiguous() else torch.empty(out.numel(), dtype=out.dtype, device=out.device)
        for start in range(0, flat.numel(), CHUNK):          # bounded int64 temporaries (5 of CHUNK elements)
            part = flat[start:start + CHUNK]
            u = torch.empty(part.numel(), dtype=torch.int64, device=out.device).random_(generator=generator)
            torch.index_select(values, 0, lookup(u, packed, RANDOM_BITS - self._table.column_bits), out=part)
        return out if flat.data_ptr() == out.data_ptr() else out.copy_(flat.view(out.shape))

    # -- the certificate's side (module docstring, steps 2-3) ----------------------------------------------------
    def radius(self, p_a, norm: str = "l2"):
        """sigma Phi^-1(p_a - tv) (Cohen et al. 2019, Thm 1 for f o Q, with p_B = 1 - p_A; step 3's tv)."""
        return self._gaussian.radius(np.asarray(p_a, dtype=np.float64) - self.tv, norm)

    def margin_radius(self, p_a, p_b, norm: str = "l2"):
        """sigma/2 (Phi^-1(p_a - tv) - Phi^-1(p_b + tv)) (Cohen et al. 2019, Thm 1; 000 eq. 3; step 3's tv)."""
        return self._gaussian.margin_radius(np.asarray(p_a, dtype=np.float64) - self.tv,
                                            np.minimum(np.asarray(p_b, dtype=np.float64) + self.tv, 1.0), norm)

    def describe(self) -> str:
        return (f"gaussian(sigma={self.sigma:g}, float-sound: inputs k/{self.grid}, "
                f"noise step 2^-{self.bits}/{self.grid})")


def float_sound(noise, grid: int | None, bits: int | None = None) -> SoundGaussian:
    """The float-sound version of `noise` for inputs on the grid k / grid (what Smooth(..., float_sound=True)
    and --float-sound --input-grid build)."""
    if isinstance(noise, SoundGaussian):
        check(grid is None or grid == noise.grid, f"the noise is already float-sound on grid 1/{noise.grid}")
        return noise
    if not isinstance(noise, Gaussian):
        raise SmoothcertError(f"float-sound sampling is for Gaussian noise (the rounded normal of Voracek & Hein), "
                              f"not {getattr(noise, 'name', type(noise).__name__)}")
    return SoundGaussian(noise.sigma, grid, bits)
