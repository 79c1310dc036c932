"""Hard-vote certificates: pure, vectorised functions of the stored class counts -> (class, radius, bounds).

A certificate never sees the model: it reads the class counts of the selection stage (n0 samples, which choose
the top class A, and where needed the runner-up B) and of the estimation stage (n fresh samples, which bound
the probabilities), so any run can be re-certified later from its results file. The statistics decide which
probabilities are bounded and at which level; the noise turns the bounds into a radius.

Why each is sound (failure probability <= alpha): A (and B) are functions of the selection samples only,
which are independent of the estimation samples, so conditional on them every bound below is a plain
confidence bound for fixed classes.

Float-sound noise (smoothcert.noises.sound) samples a law within total variation tv = tv_of(noise) of the one the
certificate is proved for, so every class's probability under it is within tv of the sampled one: P(A) >= p_A - tv
and P(c) <= p_B + tv. The radius methods apply this; where a certificate decides to certify, or reads sigma itself,
it applies it here (tv = 0 for every other noise: the same numbers as without).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import bounds
from ..noises import norms, tv_of
from .verdict import ABSTAIN, Verdict, _as_counts, _why


def _top(counts_selection, counts):
    counts_selection, counts = _as_counts(counts_selection), _as_counts(counts)
    c_a = counts_selection.argmax(axis=1)      # ties go to the lowest class, as in Cohen et al.'s code
    rows = np.arange(len(counts))
    return counts_selection, counts, rows, c_a


def one_sided(counts_selection, counts, noise, alpha: float, norm: str) -> Verdict:
    """Cohen et al. 2019, Alg. CERTIFY: one-sided Clopper-Pearson lower bound on P(A) at level alpha from the
    fresh counts; abstain below 1/2, else noise.radius(bound) (sigma Phi^-1(pA) for Gaussian noise,
    -lam log 2(1 - pA) for Laplace noise, Teng et al. Thm 2; 2 lam (pA - 1/2) for uniform noise, Yang et al. 2020)."""
    _, counts, rows, c_a = _top(counts_selection, counts)
    p_a = np.atleast_1d(bounds.clopper_pearson_lower(counts[rows, c_a], counts.sum(axis=1), alpha))
    certified = p_a - tv_of(noise) >= 0.5                 # P(A) >= p_A - tv (module doc)
    radius = np.where(certified, noise.radius(p_a, norm), 0.0)
    return Verdict(np.where(certified, c_a, ABSTAIN), radius, p_a, np.full(len(p_a), np.nan), c_a,
                   _why(certified, "pA_lower < 1/2"))


def _two_sided(radius_of: Callable) -> Callable:
    def certificate(counts_selection, counts, noise, alpha: float, norm: str) -> Verdict:
        """Bonferroni pair (000 eqs 4-5): a lower bound on P(A) and an upper bound on max_{c != A} P(c), each at
        alpha/2. The upper bound is the Clopper-Pearson bound of the largest other count: if c* is the truly
        most likely other class, its bound is exceeded with prob <= alpha/2 and is <= the bound of the largest
        count, so no union over classes is needed. It is also capped at 1 - p_A: on the event P(A) >= p_A, no
        other class has more than 1 - p_A."""
        _, counts, rows, c_a = _top(counts_selection, counts)
        n = counts.sum(axis=1)
        p_a = np.atleast_1d(bounds.clopper_pearson_lower(counts[rows, c_a], n, alpha / 2))
        others = counts.copy()
        others[rows, c_a] = -1
        p_b = np.minimum(np.atleast_1d(bounds.clopper_pearson_upper(others.max(axis=1).clip(0), n, alpha / 2)), 1 - p_a)
        certified = p_a - tv_of(noise) > p_b + tv_of(noise)      # the module doc's tv
        radius = np.where(certified, radius_of(noise)(p_a, p_b, norm), 0.0)
        return Verdict(np.where(certified, c_a, ABSTAIN), radius, p_a, p_b, c_a, _why(certified, "pA_lower <= pB_upper"))
    certificate.__doc__ = f"{radius_of.__doc__}\n{certificate.__doc__}"
    return certificate


def _margin(noise):
    """Two-sided margin radius: Gaussian sigma/2 (Phi^-1(pA) - Phi^-1(pB)); Laplace Teng et al. Thm 1; uniform
    lam (pA - pB) (Uniform.margin_radius)."""
    return noise.margin_radius


def _lecuyer(noise):
    """Lecuyer et al. 2019's lam/2 log(pA/pB) (Teng et al., Table 1)."""
    return noise.lecuyer_radius


margin = _two_sided(_margin)
lecuyer = _two_sided(_lecuyer)


def runner_up(counts_selection: np.ndarray, c_a: np.ndarray) -> np.ndarray:
    """The most frequent class other than A in the selection counts (lowest index on ties or all-zero)."""
    others = counts_selection.copy()
    others[np.arange(len(c_a)), c_a] = -1
    return others.argmax(axis=1)


def exact_margin(counts_selection, counts, noise, alpha: float, norm: str) -> Verdict:
    """The exact trinomial lower confidence bound L on Phi^-1(P(A)) - Phi^-1(max(P(B), P(rest))) (000 §4,
    corrected per ERRATA; see bounds.exact_margin_lower), radius sigma/2 * L, abstain unless L > 0. A and B come
    from the selection samples, so the trinomial (A, B, rest) of the fresh counts has fixed classes, and
    max(P(B), P(rest)) >= max_{c != A} P(c) keeps the radius valid whatever the other classes do. Under float-sound
    noise the bound is on Phi^-1(P(A) - tv) - Phi^-1(max(P(B), P(rest)) + tv) of the sampled law, a lower bound on the
    margin of the law the radius is proved for (bounds.exact_margin_lower, tv; the module doc). Under norm
    'linf:d=D' the l2 radius is read as r_2 / sqrt(D) (noises/norms.py)."""
    noise._check_norm(norm)
    counts_selection, counts, rows, c_a = _top(counts_selection, counts)
    c_b = runner_up(counts_selection, c_a)
    x_a = counts[rows, c_a]
    x_b = np.where(c_b == c_a, 0, counts[rows, c_b])      # a one-class model has no runner-up
    x_r = counts.sum(axis=1) - x_a - x_b
    lower = np.array([bounds.exact_margin_lower(int(a), int(b), int(r), alpha, "probit", tv=tv_of(noise))
                      for a, b, r in zip(x_a, x_b, x_r)])
    certified = lower > 0
    radius = norms.read(np.where(certified, 0.5 * noise.sigma * np.where(certified, lower, 0.0), 0.0), norm)
    nan = np.full(len(lower), np.nan)
    return Verdict(np.where(certified, c_a, ABSTAIN), radius, nan, nan, c_a, _why(certified, "margin lower bound <= 0"))


def best(counts_selection, counts, noise, alpha: float, norm: str) -> Verdict:
    """The one-sided or the two-sided (margin) certificate, whichever the *selection* counts predict gives the
    larger radius, computed at the full alpha on the estimation counts.

    Soundness: the choice is a function of the selection samples alone, which are independent of the
    estimation samples. Conditional on the selection samples, each candidate fails with probability <= alpha,
    so the chosen one does too, and so unconditionally. (Taking the larger of both radii computed on the
    estimation counts would not be sound: it fails when either fails, up to 2 alpha.) The prediction plugs the
    selection frequencies, scaled to n, into both certificates."""
    counts_selection, counts = _as_counts(counts_selection), _as_counts(counts)
    n0 = counts_selection.sum(axis=1, keepdims=True)
    n = counts.sum(axis=1, keepdims=True)
    pseudo = np.floor(counts_selection * (n / n0)).astype(np.int64)     # floors: the sum stays <= n
    top = counts_selection.argmax(axis=1)
    pseudo[np.arange(len(pseudo)), top] += (n - pseudo.sum(axis=1, keepdims=True))[:, 0]
    use_margin = margin(counts_selection, pseudo, noise, alpha, norm).radius > \
        one_sided(counts_selection, pseudo, noise, alpha, norm).radius
    a = one_sided(counts_selection, counts, noise, alpha, norm)
    b = margin(counts_selection, counts, noise, alpha, norm)
    return Verdict(*(np.where(use_margin, getattr(b, f), getattr(a, f)) for f in
                     ("prediction", "radius", "p_lower", "p_upper", "candidate", "reason")))


def single_stage(counts_selection, counts, noise, alpha: float, norm: str) -> Verdict:
    """002's Alg. 1 (Lemma C.1): the SAME samples choose the class and bound it (the selection counts are
    ignored; run it with n0 = 0). A labelled option for evaluation against labels, NOT a sound certificate of the
    predicted class: near ties its failure rate reaches about 2 alpha (ERRATA; measured in tests/test_modes.py),
    because the class is picked as the one whose count came out largest. Where the prediction equals the
    label the claim is sound: the bound is then a Clopper-Pearson bound on the label, a class fixed before
    sampling, so certified accuracy against labels keeps level alpha per input."""
    counts = _as_counts(counts)
    return one_sided(counts, counts, noise, alpha, norm)
