"""Named certificates: pure functions of the stored statistics -> (class, radius, probability bound).

A certificate never sees the model: it reads the class counts of the selection stage (n0 samples) and of the
estimation stage (n fresh samples), so any run can be re-certified later from its results file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bounds
from .errors import SmoothcertError, check_alpha

ABSTAIN = -1


@dataclass(frozen=True)
class Verdict:
    """What a certificate concludes for each of G inputs: class (ABSTAIN = -1), radius, and the bound used."""

    prediction: np.ndarray   # (G,) int
    radius: np.ndarray       # (G,) float, 0 where it abstains, never negative
    p_lower: np.ndarray      # (G,) float


def _as_counts(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    return counts[None, :] if counts.ndim == 1 else counts


def cohen(counts_selection, counts, noise, alpha: float, norm: str = "l2") -> Verdict:
    """Cohen et al. 2019, Alg. CERTIFY: top class of the selection counts, one-sided Clopper-Pearson lower bound
    on its probability from the *fresh* estimation counts, abstain below 1/2, else noise.radius(bound).

    Counts are (G, K) arrays (or one (K,) vector); the verdict is vectorised over the G inputs."""
    alpha = check_alpha(alpha)
    counts_selection, counts = _as_counts(counts_selection), _as_counts(counts)
    rows = np.arange(len(counts))
    c_a = counts_selection.argmax(axis=1)          # ties go to the lowest class, as in Cohen et al.'s code
    p_lower = np.atleast_1d(bounds.clopper_pearson_lower(counts[rows, c_a], counts.sum(axis=1), alpha))
    certified = p_lower >= 0.5
    radius = np.where(certified, noise.radius(p_lower, norm), 0.0)
    return Verdict(np.where(certified, c_a, ABSTAIN), radius, p_lower)


CERTIFICATES = {"cohen": cohen}


def get(name: str):
    try:
        return CERTIFICATES[name]
    except KeyError:
        raise SmoothcertError(f"unknown certificate {name!r} (known: {', '.join(CERTIFICATES)})") from None
