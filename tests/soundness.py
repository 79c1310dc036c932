"""How every soundness test is sized, in one place.

A soundness test repeats a certificate `reps` times on ground truth whose answer is known exactly, counts the
failures (a wrong class certified, or a radius/bound beyond the true one) and passes iff failures <= limit.
`plan(alpha)` picks the smallest reps, and its limit, such that

  * a sound certificate (true failure rate <= alpha) passes with probability >= 1 - 1e-4:
        P(Bin(reps, alpha) > limit) <= 1e-4;
  * a certificate that fails at rate `bad` (default 2 alpha) is caught with probability >= 0.99:
        P(Bin(reps, bad) > limit) >= 0.99.

Both probabilities are exact binomial tails (scipy.stats.binom), and the failure count of a sound certificate
is stochastically below Bin(reps, alpha), so the first holds for every sound certificate whatever its true
rate. Every negative control (a realistic unsound variant) is run through the same plan and must be caught;
pass `bad` = its true failure rate at that case (computed exactly where the test can) when it is below 2 alpha.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from scipy import stats

SOUND_MISS = 1e-4      # P(a sound certificate fails the test)
POWER = 0.99           # P(a certificate failing at rate `bad` is caught)


@dataclass(frozen=True)
class Plan:
    reps: int
    limit: int          # pass iff failures <= limit
    alpha: float
    bad: float

    def passes(self, failures: int) -> bool:
        return failures <= self.limit

    def describe(self, failures: int) -> str:
        return (f"{failures} failures in {self.reps} repetitions (limit {self.limit}; alpha = {self.alpha}, "
                f"expected <= {self.alpha * self.reps:.1f}; a rate of {self.bad:.4g} would give "
                f"{self.bad * self.reps:.1f})")


def _limit(reps: int, alpha: float) -> int:
    """The smallest t with P(Bin(reps, alpha) > t) <= SOUND_MISS."""
    t = max(0, int(stats.binom.isf(SOUND_MISS, reps, alpha)) - 1)
    while stats.binom.sf(t, reps, alpha) > SOUND_MISS:
        t += 1
    return t


def _caught(reps: int, alpha: float, bad: float) -> bool:
    return stats.binom.sf(_limit(reps, alpha), reps, bad) >= POWER


@lru_cache(maxsize=None)
def plan(alpha: float, bad: float | None = None, reps: int | None = None) -> Plan:
    """The smallest number of repetitions (and its pass limit) meeting both conditions of the module docstring.

    alpha: the failure rate a sound certificate may have.
    bad: the failure rate that must be caught (default 2 alpha).
    reps: use this many repetitions instead of the smallest (a test kept at a larger size); it must meet both
        conditions too, and gets the limit of that size.
    """
    bad = 2 * alpha if bad is None else bad
    assert 0 < alpha < bad < 1, (alpha, bad)
    if reps is not None:
        assert _caught(reps, alpha, bad), f"{reps} repetitions do not catch a failure rate of {bad} (alpha = {alpha})"
        return Plan(reps, _limit(reps, alpha), alpha, bad)
    hi = 16
    while not _caught(hi, alpha, bad):
        hi *= 2
    lo = hi // 2                                  # _caught(lo) may be false; binary search the smallest true
    while hi - lo > max(1, hi // 200):            # within 0.5 %: plans stay cheap to compute
        mid = (lo + hi) // 2
        if _caught(mid, alpha, bad):
            hi = mid
        else:
            lo = mid
    return Plan(hi, _limit(hi, alpha), alpha, bad)


def assert_sound(failures: int, p: Plan) -> None:
    assert p.passes(failures), "unsound: " + p.describe(failures)


def assert_caught(failures: int, p: Plan) -> None:
    """For negative controls: the unsound variant must fail the same test."""
    assert not p.passes(failures), "the harness did not catch the unsound variant: " + p.describe(failures)
