"""What the modes yield per input: `Certificate` (CERTIFY, in every mode that certifies a class), `Prediction`
(PREDICT) and `Confidence` (certified confidence), each with the statistics it was computed from."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..certificates.verdict import ABSTAIN


@dataclass(frozen=True)
class Certificate:
    """The outcome of CERTIFY for one input, with the statistics it was computed from."""

    index: int
    prediction: int            # certified class, ABSTAIN (-1) when it abstains
    radius: float              # certified radius (0.0 when it abstains; never negative)
    p_lower: float             # lower confidence bound on the top class's probability (nan if not used)
    p_upper: float             # upper bound on the runner-up's probability (nan if not used)
    counts_selection: np.ndarray   # class counts of the n0 selection samples
    counts: np.ndarray             # class counts of the n estimation samples
    alpha: float
    certificate: str
    norm: str
    seconds: float
    candidate: int = ABSTAIN   # the class the selection samples chose (kept when it abstains)
    reason: str = ""           # why it abstained, e.g. 'pA_lower < 1/2' ('' when certified)
    seed: int | None = None    # the run seed its streams came from (None when a generator was passed)
    scores: dict | None = None  # soft certificates: 'selection' (K,) score sums; 'sums', 'squares' (K,) estimation

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    @property
    def samples(self) -> int:
        """Estimation samples used."""
        return int(np.sum(self.counts))


@dataclass(frozen=True)
class Confidence:
    """Certified confidence (001) for one input: for each threshold c, the radii within which the expected
    measure of class A (the selection samples' top class by expected score) provably stays above c. The prediction
    is A only where the CDF band certifies A as the smoothed top class at radius 0, ABSTAIN (-1) elsewhere; the
    radii are about A either way."""

    index: int
    prediction: int                # A, or ABSTAIN (-1) where A is not certified as the top class
    thresholds: tuple[float, ...]
    cdf: np.ndarray                # (C,) radius of the CDF certificate (001 Thm 2, DKW) per threshold; 0: none
    baseline: np.ndarray           # (C,) radius of the baseline certificate (001 Thm 1, Hoeffding)
    histogram: np.ndarray          # (bins,) counts of the measure on fixed bins (measures.histogram_edges)
    measure_sum: float             # exact sum of the measure over the n samples
    scores_selection: np.ndarray   # (K,) selection score sums (A = argmax)
    counts_selection: np.ndarray   # (K,) selection votes
    alpha: float
    measure: str
    seconds: float
    seed: int | None = None
    candidate: int = ABSTAIN       # A, the class the selection samples chose (kept when it abstains)

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass(frozen=True)
class Prediction:
    """The outcome of PREDICT for one input."""

    index: int
    prediction: int            # ABSTAIN (-1) when the binomial test does not reject a tie
    pvalue: float              # two-sided binomial test of the top two counts
    counts: np.ndarray
    alpha: float
    seconds: float
    candidate: int = ABSTAIN   # the most frequent class (kept when it abstains)
    seed: int | None = None

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN
