"""Confidence bounds on the mean E[X] of i.i.d. X_1..X_n in [low, high] (default [0, 1]).

Every bound here is ONE-SIDED at level alpha: P(E[X] < lower) <= alpha, or P(E[X] > upper) <= alpha. A caller
that needs both sides at once pays alpha/2 each (or any split summing to alpha).

    hoeffding_lower/upper    from (sum, n): mean -/+ (b - a) sqrt(ln(1/alpha) / 2n)
    bernstein_lower/upper    from (sum, sum of squares, n): Maurer & Pontil 2009, Thm 4 (ln(2/alpha), ERRATA)
    Betting                  Waudby-Smith & Ramdas 2023 hedged capital, accumulated batch by batch

The (sum, sum of squares, n) functions are vectorised over any broadcastable shape (inputs x classes) and read
exactly what the engine's ScoreSums keeps. Arithmetic is float64; its rounding (~1e-12 relative on the sums
of 1e5 samples) is not charged to the bounds.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from ..errors import check, check_alpha


def _range(low: float, high: float) -> float:
    check(math.isfinite(low) and math.isfinite(high) and low < high,
          f"the value range must be finite with low < high, got [{low!r}, {high!r}]")
    return float(high - low)


def _moments(sums, n, low: float, high: float, squares=None):
    """(n, mean, unbiased variance or None) as float64 arrays, checked."""
    width = _range(low, high)
    n = np.asarray(n, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    check(np.all(np.isfinite(sums)), "score sums must be finite")
    check(np.all(n >= 1) and np.all(n == np.floor(n)), f"the number of samples must be an integer >= 1, got {n!r}")
    n = np.broadcast_to(n, np.broadcast_shapes(n.shape, sums.shape))
    slack = 1e-9 * width * n                                    # summation rounding
    check(np.all(sums >= n * low - slack) and np.all(sums <= n * high + slack),
          f"a sum of n values in [{low:g}, {high:g}] must lie in [n*{low:g}, n*{high:g}]")
    mean = np.clip(sums / n, low, high)
    if squares is None:
        return n, mean, None
    squares = np.asarray(squares, dtype=np.float64)
    check(np.all(np.isfinite(squares)), "sums of squares must be finite")
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (squares - sums * sums / n) / (n - 1)             # unbiased sample variance
    # sum (x - a)^2 <= (b - a) sum (x - a) for x in [a, b]: a looser check catches sums of squares of other data
    centred = squares - 2 * low * sums + n * low * low
    check(np.all(centred <= width * (sums - n * low) + 1e-6 * width * width * n),
          "sums of squares are inconsistent with the sums (values outside the range?)")
    return n, mean, np.where(n > 1, np.clip(var, 0.0, None), np.nan)


def hoeffding_lower(sums, n, alpha: float, low: float = 0.0, high: float = 1.0):
    """Lower (1 - alpha) confidence bound on E[X]: mean - (b - a) sqrt(ln(1/alpha) / 2n), at least `low`.

    Hoeffding 1963, Thm 2 (one-sided): P(mean - E[X] >= t) <= exp(-2 n t^2 / (b - a)^2).
    sums, n: the sum of the n values and n, broadcastable; returns an array of their broadcast shape."""
    alpha = check_alpha(alpha)
    n, mean, _ = _moments(sums, n, low, high)
    eps = (high - low) * np.sqrt(math.log(1 / alpha) / (2 * n))     # Hoeffding 1963, Thm 2
    return np.maximum(mean - eps, low)[()]


def hoeffding_upper(sums, n, alpha: float, low: float = 0.0, high: float = 1.0):
    """Upper (1 - alpha) confidence bound on E[X]: mean + (b - a) sqrt(ln(1/alpha) / 2n), at most `high`."""
    alpha = check_alpha(alpha)
    n, mean, _ = _moments(sums, n, low, high)
    eps = (high - low) * np.sqrt(math.log(1 / alpha) / (2 * n))     # Hoeffding 1963, Thm 2
    return np.minimum(mean + eps, high)[()]


def _bernstein_width(n, var, alpha: float, width: float):
    log_term = math.log(2 / alpha)
    # Maurer & Pontil 2009, Thm 4, ln(2/delta) (000 Prop. 2 prints ln(1/delta): ERRATA)
    return np.sqrt(2 * var * log_term / n) + 7 * width * log_term / (3 * (n - 1))


def bernstein_lower(sums, squares, n, alpha: float, low: float = 0.0, high: float = 1.0):
    """Lower (1 - alpha) empirical Bernstein bound on E[X] (Maurer & Pontil 2009, Thm 4, published form):

        E[X] >= mean - sqrt(2 V ln(2/alpha) / n) - 7 (b - a) ln(2/alpha) / (3 (n - 1))

    with V the unbiased sample variance (n - 1 in the denominator) from the sum and the sum of squares.
    Thm 4 bounds E[X] - mean for X in [0, 1]; applied to (b - X)/(b - a) it gives this lower bound, ONE-sided at
    level alpha (the 2 in ln(2/alpha) is the theorem's own union of a Bernstein bound and a bound on the sample
    standard deviation, not a second side). 000 Prop. 2 prints ln(1/delta): that is not the theorem (ERRATA).
    Needs n >= 2; with n = 1 it returns the trivial bound `low`."""
    alpha = check_alpha(alpha)
    n, mean, var = _moments(sums, n, low, high, squares)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = mean - _bernstein_width(n, var, alpha, high - low)
    return np.where(n >= 2, np.maximum(out, low), low)[()]


def bernstein_upper(sums, squares, n, alpha: float, low: float = 0.0, high: float = 1.0):
    """Upper (1 - alpha) empirical Bernstein bound on E[X], the mirror image of `bernstein_lower` (Maurer &
    Pontil 2009, Thm 4 as published); `high` when n = 1."""
    alpha = check_alpha(alpha)
    n, mean, var = _moments(sums, n, low, high, squares)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = mean + _bernstein_width(n, var, alpha, high - low)
    return np.where(n >= 2, np.minimum(out, high), high)[()]


def probit_grid(points: int, z_max: float = 6.0) -> np.ndarray:
    """Candidate means in [0, 1]: 0, 1 and Phi(z) for `points - 2` values of z evenly spaced on [-z_max, z_max].

    Even in z = Phi^-1(m), so a grid step costs the same on the radius scale sigma Phi^-1 wherever the bound
    falls, and it is fine near 0 and 1 where the scores of a confident model lie. Phi(-6) = 1e-9."""
    check(isinstance(points, int) and points >= 3, f"the grid needs >= 3 points, got {points!r}")
    return np.concatenate([[0.0], ndtr(np.linspace(-z_max, z_max, points - 2)), [1.0]])


def centred_grid(guess_low, guess_high=None, points: int = 1024, coarse: int = 128, pad: float = 1.5) -> np.ndarray:
    """(rows, points) per-row grids: `coarse` points of `probit_grid` plus the rest evenly spaced in z on
    [Phi^-1(guess_low) - pad, Phi^-1(guess_high) + pad], where the bound is expected (e.g. around the mean of
    the SELECTION samples: a grid fixed before the estimation samples are drawn keeps every guarantee, see
    Betting). guess_low, guess_high: (rows,) guesses of the mean in [0, 1] (guess_high defaults to guess_low)."""
    lo = np.atleast_1d(np.asarray(guess_low, dtype=np.float64))
    hi = lo if guess_high is None else np.atleast_1d(np.asarray(guess_high, dtype=np.float64))
    check(lo.shape == hi.shape and np.all((lo >= 0) & (lo <= hi) & (hi <= 1)), "guesses must satisfy 0 <= low <= high <= 1")
    check(isinstance(points, int) and isinstance(coarse, int) and 3 <= coarse < points, "need 3 <= coarse < points")
    z_lo = ndtri(np.clip(lo, 1e-9, 1 - 1e-9)) - pad
    z_hi = ndtri(np.clip(hi, 1e-9, 1 - 1e-9)) + pad
    fine = ndtr(z_lo[:, None] + (z_hi - z_lo)[:, None] * np.linspace(0, 1, points - coarse)[None, :])
    return np.sort(np.concatenate([np.broadcast_to(probit_grid(coarse), (len(lo), coarse)), fine], axis=1), axis=1)


DEFAULT_GRID = 1024


class Betting:
    """One-sided betting confidence bounds on the means of `rows` independent streams of values in [low, high],
    accumulated batch by batch (Waudby-Smith & Ramdas 2023, "Estimating means of bounded random variables by
    betting", JRSS-B: capital processes of §4 with predictable plug-in bets truncated at c/m and c/(1 - m)).

    Scaled to [0, 1], for each candidate mean m on a grid it keeps the log capital of two bettors:

        K+(m) = prod_i (1 + lam+_i(m) (X_i - m)),   lam+_i(m) = min(lam_i, c / m)          (bets the mean is > m)
        K-(m) = prod_i (1 - lam-_i(m) (X_i - m)),   lam-_i(m) = min(lam_i, c / (1 - m))    (bets the mean is < m)

    with c = 1/2 and lam_i = sqrt(2 ln(1/alpha) / (n s^2)), where s^2 = (1/4 + sum (X - Xbar)^2) / (t + 1) over
    the t values of the row's PREVIOUS blocks (WSR's predictable plug-in for a fixed n, with their prior 1/4).

    Why the bounds hold. Every value of a row in one block gets the same bet, fixed from the row's earlier
    blocks only (blocks are taken in the order the values arrive, never by value), so lam_i depends only on
    X_1..X_{i-1}: predictable. Under E[X] = m each factor has conditional mean 1 and
    is > 0 (c < 1), so K+(m) and K-(m) are nonnegative martingales and, by Ville's inequality,
    P(sup_t K+_t(mu) >= 1/alpha) <= alpha at the true mean mu. Hence {m : sup_t K+_t(m) >= 1/alpha} excludes mu
    with probability >= 1 - alpha; the running maximum over blocks is used (Ville covers every time at once).
    Grid: each factor of K+ is nonincreasing in m (for m <= c/lam it is 1 + lam (X - m); above, 1 - c + c X/m),
    so the rejected set is an interval [0, L*]. `lower` returns the largest grid point g whose grid prefix
    [0, g] is all rejected: g <= L* < mu, so taking the grid point loses at most one grid step and never
    overstates. `upper` mirrors this with K- (nondecreasing in m). Any bet, n or grid fixed before the values
    are seen (e.g. chosen from independent selection samples, `centred_grid`) keeps this guarantee; they only
    change how tight the bound is. `alpha` at construction tunes the bets; `lower(a)`/`upper(a)` may be asked
    at any level a (tightest near the tuned one).

    Args:
        rows: number of independent streams (e.g. inputs).
        n: planned number of values per row (tunes the bets).
        alpha: the level the bets are tuned for.
        grid: number of points of a shared `probit_grid`, a nondecreasing array of candidate means in [0, 1]
            shared by all rows, or a (rows, points) array of per-row grids (see `centred_grid`).
        low, high: the range of the values.
        device: where the capital is kept (torch device); values may be numpy or torch.
        block: a row's values are bet on in blocks, in the order given, with the bets refreshed between blocks
            (also inside one `update`, so one engine batch of 1,000 values of an input still adapts): 16 blocks
            of `block` values, then 16 blocks per doubling of the row's count (about 4 % of it each).
        sides: "both", or only "lower" (K+) or "upper" (K-) when one bound is all that is read (half the cost).
        chunk: values per piece when evaluating the (values x grid) log factors, to bound memory.
    """

    C = 0.5

    def __init__(self, rows: int, n: int, alpha: float, grid=DEFAULT_GRID, low: float = 0.0, high: float = 1.0,
                 device="cpu", block: int = 16, sides: str = "both", chunk: int = 4096):
        check(isinstance(rows, int) and rows >= 1, f"rows must be an integer >= 1, got {rows!r}")
        check(isinstance(n, int) and n >= 1, f"n must be an integer >= 1, got {n!r}")
        self.alpha = check_alpha(alpha)
        self.low, self.high, self.width = float(low), float(high), _range(low, high)
        g = probit_grid(grid) if isinstance(grid, int) else np.asarray(grid, dtype=np.float64)
        g = np.atleast_2d(g)
        check(g.ndim == 2 and g.shape[0] in (1, rows) and g.shape[1] >= 2 and np.all(np.diff(g, axis=1) >= 0)
              and np.all(g >= 0) and np.all(g <= 1),
              "the grid must be a nondecreasing array of candidate means in [0, 1], shared or one row per stream")
        self.device = torch.device(device)
        self.grid = torch.as_tensor(g, dtype=torch.float64, device=self.device)
        with np.errstate(divide="ignore"):
            self._cap_plus = torch.as_tensor(self.C / g, device=self.device)            # c / m (inf at 0)
            self._cap_minus = torch.as_tensor(self.C / (1 - g), device=self.device)     # c / (1 - m)
        check(isinstance(block, int) and block >= 1, f"block must be an integer >= 1, got {block!r}")
        check(sides in ("both", "lower", "upper"), f"sides must be both, lower or upper, got {sides!r}")
        self.plus, self.minus = sides in ("both", "lower"), sides in ("both", "upper")
        self.rows, self.n, self.block, self.chunk = rows, n, block, int(chunk)
        z = dict(dtype=torch.float64, device=self.device)
        self.count = torch.zeros(rows, **z)
        self.total = torch.zeros(rows, **z)
        self.squares = torch.zeros(rows, **z)
        self.log_plus = torch.zeros((rows, g.shape[1]), **z)
        self.log_minus = torch.zeros_like(self.log_plus)
        self.best_plus = torch.zeros_like(self.log_plus)      # running maxima over blocks (Ville)
        self.best_minus = torch.zeros_like(self.log_plus)

    def bets(self) -> torch.Tensor:
        """lam for each row's next block, from its previous blocks only."""
        t = self.count
        ss = torch.where(t > 0, self.squares - self.total ** 2 / t.clamp(min=1), torch.zeros_like(t)).clamp(min=0)
        var = (0.25 + ss) / (t + 1)                    # WSR §4 predictable plug-in variance, prior 1/4
        return torch.sqrt(2 * math.log(1 / self.alpha) / (self.n * var))

    def _row(self, table: torch.Tensor, rows):
        return table[0] if table.shape[0] == 1 else table[rows]

    def update(self, values, owner=None) -> None:
        """Add one batch. values: (rows, k) with `owner` None, or (B,) with owner (B,) the row of each value."""
        x = torch.as_tensor(values, dtype=torch.float64).to(self.device)
        if owner is None:
            check(x.ndim == 2 and x.shape[0] == self.rows, f"values must be (rows={self.rows}, k) without owner")
            owner = torch.arange(self.rows, device=self.device).repeat_interleave(x.shape[1])
            x = x.reshape(-1)
        else:
            owner = torch.as_tensor(owner, dtype=torch.int64).to(self.device)
            check(x.ndim == 1 and owner.shape == x.shape, "values and owner must be 1-D of the same length")
        if x.numel() == 0:
            return
        check(bool(torch.isfinite(x).all()), "values must be finite")
        check(bool((x >= self.low).all()) and bool((x <= self.high).all()),
              f"values must lie in [{self.low:g}, {self.high:g}]")
        check(int(owner.min()) >= 0 and int(owner.max()) < self.rows, "owner out of range")
        x = (x - self.low) / self.width
        # each row's values in blocks, in the order given, bets refreshed between blocks (see `block`)
        owner, order = torch.sort(owner, stable=True)
        x = x[order]
        first = torch.searchsorted(owner, owner, right=False)
        index = self.count[owner].long() + torch.arange(len(owner), device=self.device) - first
        key = self._block_key(index)
        local = key - key[first]
        for j in range(int(local.max()) + 1):
            take = local == j
            self._step(x[take], owner[take])

    def _block_key(self, index: torch.Tensor) -> torch.Tensor:
        """Block number of a row's value number `index` (0-based): blocks of `block` values up to 16 blocks,
        then 16 blocks per doubling of the index (each about 4 % of the values so far)."""
        b = self.block
        late = 16 + torch.floor(16 * torch.log2(index.clamp(min=16 * b).double() / (16 * b))).long()
        return torch.where(index < 16 * b, index // b, late)

    def _step(self, x: torch.Tensor, owner: torch.Tensor) -> None:
        lam = self.bets()[:, None]
        lam_plus = torch.minimum(lam, self._cap_plus)          # (rows, G): this block's bets
        lam_minus = torch.minimum(lam, self._cap_minus)
        rows = torch.unique_consecutive(owner)
        if len(rows) <= 8:                                     # the engine's usual case: a few inputs per batch
            for r in rows.tolist():
                d = x[owner == r][:, None] - self._row(self.grid, r)[None, :]
                if self.plus:
                    self.log_plus[r] += torch.log1p(lam_plus[r] * d).sum(0)       # WSR §4 capital, log scale
                if self.minus:
                    self.log_minus[r] += torch.log1p(-lam_minus[r] * d).sum(0)
        else:
            for s in range(0, x.numel(), self.chunk):
                xs, os = x[s:s + self.chunk], owner[s:s + self.chunk]
                d = xs[:, None] - self._row(self.grid, os)
                if self.plus:
                    self.log_plus.index_add_(0, os, torch.log1p(lam_plus[os] * d))
                if self.minus:
                    self.log_minus.index_add_(0, os, torch.log1p(-lam_minus[os] * d))
        torch.maximum(self.best_plus, self.log_plus, out=self.best_plus)
        torch.maximum(self.best_minus, self.log_minus, out=self.best_minus)
        self.count.index_add_(0, owner, torch.ones_like(x))
        self.total.index_add_(0, owner, x)
        self.squares.index_add_(0, owner, x * x)

    def _grid(self) -> np.ndarray:
        return np.broadcast_to(self.grid.cpu().numpy(), self.log_plus.shape)

    def lower(self, alpha: float) -> np.ndarray:
        """(rows,) lower (1 - alpha) confidence bounds on the means (`low` for a row with no values)."""
        check(self.plus, "this accumulator tracks only the upper side")
        rejected = (self.best_plus >= math.log(1 / check_alpha(alpha))).cpu().numpy()
        prefix = np.cumprod(rejected, axis=1).sum(axis=1)       # grid points 0..prefix-1 all rejected
        g = self._grid()[np.arange(self.rows), np.maximum(prefix - 1, 0)]
        return self.low + self.width * np.where(prefix > 0, g, 0.0)

    def upper(self, alpha: float) -> np.ndarray:
        """(rows,) upper (1 - alpha) confidence bounds on the means (`high` for a row with no values)."""
        check(self.minus, "this accumulator tracks only the lower side")
        rejected = (self.best_minus >= math.log(1 / check_alpha(alpha))).cpu().numpy()[:, ::-1]
        suffix = np.cumprod(rejected, axis=1).sum(axis=1)       # the last `suffix` grid points all rejected
        g = self._grid()[np.arange(self.rows), self.log_plus.shape[1] - np.maximum(suffix, 1)]
        return self.low + self.width * np.where(suffix > 0, g, 1.0)

    def mean(self) -> np.ndarray:
        """(rows,) the sample means (nan for a row with no values)."""
        with np.errstate(invalid="ignore"):
            return self.low + self.width * (self.total / self.count).cpu().numpy()


__all__ = ["hoeffding_lower", "hoeffding_upper", "bernstein_lower", "bernstein_upper", "Betting", "probit_grid",
           "centred_grid", "DEFAULT_GRID"]
