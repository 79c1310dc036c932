"""What a certificate concludes (`Verdict`, `ABSTAIN`), shared by the hard-vote and soft certificates, and how a
conclusion is completed with the selection's candidate and the reason it abstained."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

ABSTAIN = -1


@dataclass(frozen=True)
class Verdict:
    """What a certificate concludes for each of G inputs."""

    prediction: np.ndarray   # (G,) int, ABSTAIN = -1
    radius: np.ndarray       # (G,) float, 0 where it abstains, never negative
    p_lower: np.ndarray      # (G,) lower bound on P(A) (nan where not used)
    p_upper: np.ndarray      # (G,) upper bound on max_{c != A} P(c) (nan where not used)
    candidate: np.ndarray | None = None   # (G,) the class the selection samples chose, abstained or not
    reason: np.ndarray | None = None      # (G,) why it abstained ('' where it certified)


def _why(certified: np.ndarray, reason: str) -> np.ndarray:
    return np.where(certified, "", reason).astype(object)


def _as_counts(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    return counts[None, :] if counts.ndim == 1 else counts


def complete(v: Verdict, candidate) -> Verdict:
    """Fill a Verdict's candidate (the selection's top class) and reason where a certificate did not say."""
    if v.candidate is None or v.reason is None:
        v = replace(v, candidate=np.asarray(candidate) if v.candidate is None else v.candidate,
                    reason=_why(v.prediction != ABSTAIN, "abstained") if v.reason is None else v.reason)
    return v
