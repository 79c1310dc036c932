"""Soft prediction certificates (000 §2.4-2.5, §3.1.2, §3.3.2): the smoothed SOFT classifier E[F(x + delta)],
delta ~ N(0, sigma^2 I), F the softmax scores, predicts the class with the largest expected score; these
certify it from the stored score statistics, as pure vectorised functions (like hard.py for votes).

Inputs: the selection stage's per-class score sums (G, K) choose A = argmax; the n fresh estimation samples'
per-class sums and sums of squares (G, K) bound E_A from below and max_{c != A} E_c from above.

Why the radii hold (Salman et al. 2019, "Provably robust deep learning via adversarially trained smoothed
classifiers", Lemma 2): for any g: R^d -> [0, 1], x -> Phi^-1(E[g(x + delta)]) is 1/sigma-Lipschitz. With
p_a <= E_A(x) and p_b >= max_{c != A} E_c(x), for ||d||_2 < R2 = sigma/2 (Phi^-1(p_a) - Phi^-1(p_b)):
Phi^-1(E_A(x+d)) >= Phi^-1(p_a) - ||d||/sigma > Phi^-1(p_b) + ||d||/sigma >= Phi^-1(E_c(x+d)) for every c != A,
so A stays the argmax (000 eq. 3 on expected scores). One-sided: E_A(x+d) > 1/2 for ||d|| < sigma Phi^-1(p_a),
and scores summing to 1 leave every other class below 1/2. These are the radii Gaussian.radius/.margin_radius
compute, so they apply to [0, 1]-valued scores unchanged (an l2 radius is also an l1 radius, and r / sqrt(D) an
l-inf radius: noises/norms.py).

alpha split (mode 'margin', the default): alpha/2 to the lower bound on E_A and alpha/2 to the upper bound on
max_{c != A} E_c, which is the MAX over c != A of each class's upper bound: if c* is the truly largest other
class, its bound fails with probability <= alpha/2 and is <= that max, so no union over classes is needed;
on the event E_A >= p_a no other class exceeds 1 - p_a, so the upper bound is capped there. The classes are
functions of the selection samples only, independent of the estimation samples, so conditional on them these
are plain confidence bounds for fixed classes. Mode 'one-sided': all of alpha to E_A, radius sigma Phi^-1(p_a).

Float-sound noise (smoothcert.noises.sound) samples a law within total variation tv of the one the radius is proved
for, and a [0, 1]-valued score's expectation moves by at most tv between two such laws: E_A >= p_a - tv and
E_c <= p_b + tv. The noise's radius methods apply this; the decision to certify and soft_lipschitz apply it here.
"""
from __future__ import annotations

import math

import numpy as np

from ..bounds.mean import bernstein_lower, bernstein_upper, hoeffding_lower, hoeffding_upper
from ..errors import SmoothcertError, check, check_alpha
from ..noises import norms, tv_of
from .verdict import ABSTAIN, Verdict

MODES = ("margin", "one-sided")
# x -> E_A(x) - E_c(x), the smoothing of a [-1, 1]-valued function, is LIPSCHITZ_MARGIN/sigma-Lipschitz in l2, and
# no less (proof in soft_lipschitz; Salman et al. 2019, Lemma 1 gives this constant for [0, 1], where it is loose)
LIPSCHITZ_MARGIN = math.sqrt(2 / math.pi)


def _check(noise, norm: str, mode: str) -> None:
    if getattr(noise, "name", None) != "gaussian":
        raise SmoothcertError("soft certificates need Gaussian noise (Salman et al. Lemma 2 is for Gaussians)")
    noise._check_norm(norm)
    check(mode in MODES, f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def _stats(sums_selection, sums, squares, n):
    sel = np.atleast_2d(np.asarray(sums_selection, dtype=np.float64))
    sums = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    squares = np.atleast_2d(np.asarray(squares, dtype=np.float64))
    check(sel.shape == sums.shape == squares.shape and sums.shape[1] >= 2,
          f"selection sums, sums and squares must share one (inputs, classes >= 2) shape, got "
          f"{sel.shape}, {sums.shape}, {squares.shape}")
    n = np.asarray(n, dtype=np.float64).reshape(-1, 1) if np.ndim(n) else np.float64(n)
    return sel, sums, squares, n


def choose(sums_selection) -> np.ndarray:
    """A for each input: the class with the largest selection score sum (ties to the lowest index)."""
    return np.atleast_2d(np.asarray(sums_selection, dtype=np.float64)).argmax(axis=1)


def from_bounds(c_a, p_a, p_other, noise, norm: str = "l2", mode: str = "margin") -> Verdict:
    """The Verdict for class A (G,) from bounds p_a <= E_A and p_other >= max_{c != A} E_c (nan in 'one-sided'),
    each at the level the mode's alpha split gives. Abstains where nothing is certified."""
    _check(noise, norm, mode)
    p_a = np.atleast_1d(np.asarray(p_a, dtype=np.float64))
    tv = tv_of(noise)                                      # the module doc's tv
    if mode == "one-sided":
        ok = p_a - tv > 0.5
        radius = np.where(ok, noise.radius(p_a, norm), 0.0)
        p_b = np.full(len(p_a), np.nan)
    else:
        p_b = np.minimum(np.atleast_1d(np.asarray(p_other, dtype=np.float64)), 1.0 - p_a)
        ok = p_a - tv > p_b + tv
        radius = np.where(ok, noise.margin_radius(p_a, p_b, norm), 0.0)
    return Verdict(np.where(ok, np.asarray(c_a), ABSTAIN), radius, p_a, p_b)


def _soft(lower, upper, sums_selection, sums, squares, n, noise, alpha, norm, mode) -> Verdict:
    alpha = check_alpha(alpha)
    _check(noise, norm, mode)
    sel, sums, squares, n = _stats(sums_selection, sums, squares, n)
    c_a = choose(sel)
    rows = np.arange(len(c_a))
    level = alpha if mode == "one-sided" else alpha / 2
    p_a = lower(sums, squares, n, level)[rows, c_a]
    p_other = np.nan
    if mode == "margin":
        up = upper(sums, squares, n, level)
        up[rows, c_a] = -np.inf
        p_other = up.max(axis=1)
    return from_bounds(c_a, p_a, p_other, noise, norm, mode)


def _hoeffding(which):
    return lambda sums, squares, n, a: np.broadcast_to(which(sums, n, a), sums.shape).copy()


def soft_hoeffding(sums_selection, sums, squares, n, noise, alpha: float, norm: str = "l2",
                   mode: str = "margin") -> Verdict:
    """Hoeffding bounds (mean -/+ sqrt(ln(1/level) / 2n)) on the expected scores; radius as in the module doc.
    sums_selection: (G, K) selection score sums; sums, squares: (G, K) estimation score sums and sums of
    squares (squares unused here); n: fresh samples per input (scalar or (G,)); noise: Gaussian."""
    return _soft(_hoeffding(hoeffding_lower), _hoeffding(hoeffding_upper), sums_selection, sums, squares, n,
                 noise, alpha, norm, mode)


def soft_bernstein(sums_selection, sums, squares, n, noise, alpha: float, norm: str = "l2",
                   mode: str = "margin") -> Verdict:
    """Empirical Bernstein bounds (Maurer & Pontil 2009, Thm 4, ln(2/level); bounds.bernstein_lower) on the
    expected scores; arguments as `soft_hoeffding`."""
    return _soft(bernstein_lower, bernstein_upper, sums_selection, sums, squares, n, noise, alpha, norm, mode)


def soft_lipschitz(sums_selection, sums, squares, n, noise, alpha: float, norm: str = "l2") -> Verdict:
    """000 eq. 2's Lipschitz-margin radius R1 = M sigma / sqrt(2/pi) = M sigma sqrt(pi/2), M = p_a - p_b from the
    empirical Bernstein pair (alpha/2 each).

    Why: for g: R^d -> [a, b] and delta ~ N(0, sigma^2 I), h(x) = E[g(x + delta)] is smooth with
    <grad h(x), u> = E[g(x + delta) <delta, u>] / sigma^2 for a unit u (differentiate the Gaussian density);
    E[<delta, u>] = 0, so g may be replaced by g - (a + b)/2, of absolute value <= (b - a)/2, and with
    W = <delta, u>/sigma ~ N(0, 1): |<grad h, u>| <= (b - a)/(2 sigma) E|W| = (b - a)/(sigma sqrt(2 pi)). So h is
    (b - a)/(sigma sqrt(2 pi))-Lipschitz in l2, exactly: g = b 1{<x, u> > 0} + a 1{<x, u> <= 0} attains it at 0
    (Salman et al. 2019, Lemma 1 states sqrt(2/pi)/sigma for [0, 1]: valid, twice the exact constant there).
    F_A - F_c has values in [-1, 1], so E_A - E_c is sqrt(2/pi)/sigma-Lipschitz (LIPSCHITZ_MARGIN): with
    E_A >= p_a and E_c <= p_b for every c != A, E_A - E_c >= M - sqrt(2/pi) ||d|| / sigma > 0 at x + d for
    ||d|| < R1, and A stays the argmax. (Bounding E_A and E_c separately, sqrt(2/pi)/sigma each by Lemma 1 as
    stated, gives half this radius; the tight [0, 1] constant 1/(sigma sqrt(2 pi)) applied to the [-1, 1]
    difference gives twice it, which is not valid: tests/test_tie_soundness.py catches it.)
    R1 is never larger than R2 = sigma/2 (Phi^-1(p_a) - Phi^-1(p_b)): Phi^-1 has slope >= sqrt(2 pi), so
    R2 >= sigma sqrt(pi/2) M = R1, with equality only as p_a and p_b tend to 1/2. Kept for comparison, as 000
    offers it. Float-sound noise: M = (p_a - tv) - (p_b + tv) (the module doc's tv; F_A and F_c are [0, 1]-valued).
    Under norm 'linf:d=D' the l2 radius is read as R1 / sqrt(D) (noises/norms.py)."""
    alpha = check_alpha(alpha)
    v = soft_bernstein(sums_selection, sums, squares, n, noise, alpha, norm, "margin")
    sel = np.atleast_2d(np.asarray(sums_selection, dtype=np.float64))
    margin = (v.p_lower - tv_of(noise)) - (v.p_upper + tv_of(noise))
    ok = margin > 0
    radius = norms.read(np.where(ok, margin * noise.sigma / LIPSCHITZ_MARGIN, 0.0), norm)
    return Verdict(np.where(ok, choose(sel), ABSTAIN), radius, v.p_lower, v.p_upper)


def soft_betting(sums_selection, betting_a, betting_other, noise, alpha: float, norm: str = "l2",
                 mode: str = "margin") -> Verdict:
    """Betting bounds (Waudby-Smith & Ramdas 2023; bounds.Betting) read from accumulators the engine fed during
    the estimation stage, A having been chosen on the selection sums first:

        betting_a      G rows: per fresh sample, the score of A (sides "lower" suffices);
        betting_other  either G rows: per sample, the largest score of the other classes, max_{c != A} F_c,
                       whose mean E[max_{c != A} F_c] >= max_{c != A} E_c bounds every other class at once;
                       or G * K rows (row g * K + c: the score of class c of input g): one bound per class, the
                       max over c != A taken here (K times the cost, tighter: no Jensen gap) (sides "upper").

    alpha split as in the module doc: lower(alpha/2) and upper(alpha/2) in 'margin' mode, lower(alpha) in
    'one-sided' mode. Tune the accumulators' bets at that level.
    sums_selection: (G, K) selection sums (to name A)."""
    alpha = check_alpha(alpha)
    sel = np.atleast_2d(np.asarray(sums_selection, dtype=np.float64))
    c_a = choose(sel)
    G, K = sel.shape
    check(betting_a.rows == G, "betting_a needs one row per input")
    level = alpha if mode == "one-sided" else alpha / 2
    p_other = np.nan
    if mode == "margin":
        check(betting_other.rows in (G, G * K), "betting_other needs one row per input or per input and class")
        p_other = betting_other.upper(level)
        if betting_other.rows == G * K:
            per_class = p_other.reshape(G, K).copy()
            per_class[np.arange(G), c_a] = -np.inf
            p_other = per_class.max(axis=1)
    return from_bounds(c_a, betting_a.lower(level), p_other, noise, norm, mode)


CERTIFICATES = {"soft-hoeffding": soft_hoeffding, "soft-bernstein": soft_bernstein,
                "soft-lipschitz": soft_lipschitz, "soft-betting": soft_betting}
