"""The exact (test-inversion) lower confidence bound on the margin from trinomial counts (000 §4, corrected)."""
from __future__ import annotations

import heapq
import math

import numpy as np
from scipy.special import bdtr as _bdtr
from scipy.special import bdtrc as _bdtrc
from scipy.special import ndtri as _ndtri
from scipy.stats import binom as _binom

from ..errors import check, check_alpha

# ----------------------------------------------------------------------------------------------------------------
# Exact (test-inversion) lower confidence bound on the margin from trinomial counts.
# Formula source: Moutaouakil, §4 eqs 7–9, corrected per shared/papers/ERRATA.md (section 000): the p-value uses
# P_q(θ̂ >= θ̃) (the atom at the observed value included), frequencies are clipped before Φ⁻¹, and the inner
# minimisation is global (branch and bound below), never a local or Taylor-approximated solve.

_TIE_TOL = 1e-12       # θ̂ >= θ̃ − _TIE_TOL counts as ">=": float ties go to the tail, which can only enlarge P
_P_SLACK = 1e-12       # a is certified infeasible only if P + _P_SLACK <= alpha: absorbs rounding in P
_A_TOL = 1e-12         # width of the final bracket on a*(s); only its LOWER end enters the bound
_WINDOW_SD = 8.0       # X_A is summed over n*a ± (8 sd + 10) (mass outside < 1e-13), added whole: over-estimates P
MAX_N = 10 ** 7        # the inversion holds arrays of n + 1 floats (32 bytes a sample: 320 MB and ~12 s at the cap)
_MAX_S_POINTS = 150    # cap on the splits s at which a*(s) is solved; the bound stays valid when it stops early
_STAIRS = 1024         # steps of the staircase that minimises the explicit bound in _refined_lower
_DERIV_SLACK = 1e-9    # relative: the bound on ∂P/∂a is raised and that on −∂P/∂s lowered against pmf rounding
_RESULT_SLACK = 1e-9   # subtracted from the result: covers rounding in ndtri and in a + step, (1 − a)·s


def _margin_cutoffs(x_a: int, x_b: int, x_rest: int, h: str):
    """n and m(k) for k = 0..n: the largest M with θ̂(k, M) = H[k] − H[M] >= θ̃ (−1 if none), H[j] = h(c(j/n))."""
    n = x_a + x_b + x_rest
    freq = np.arange(n + 1) / n
    H = _ndtri(np.clip(freq, 0.5 / n, 1.0 - 0.5 / n)) if h == "probit" else freq  # nondecreasing in j
    theta_obs = H[x_a] - H[max(x_b, x_rest)]
    return n, np.searchsorted(H, H - theta_obs + _TIE_TOL, side="right") - 1


def _conditional_tail(n: int, m, k, s: float):
    """P(max(X_B, N − X_B) <= m) for X_B ~ Bin(N, s), N = n − k, vectorised over k and its cut-off m."""
    N = n - k
    out = (m >= N).astype(float)                  # every outcome passes (also N = 0, m >= 0)
    some = (2 * m >= N) & (m < N)                 # otherwise 0: M >= ceil(N/2) always
    if some.any():
        Ns, ms = N[some], m[some]
        out[some] = _bdtr(ms, Ns, s) - _bdtr(Ns - ms - 1, Ns, s)   # N − m <= X_B <= m
    return out


def _window(n: int, a_lo: float, a_hi: float, width: float = _WINDOW_SD):
    """The k range n*a ± (width·sd + 10) for every a in [a_lo, a_hi] (sd is largest at the a nearest 1/2)."""
    a_mid = min(max(0.5, a_lo), a_hi)
    sd = math.sqrt(n * a_mid * (1.0 - a_mid))
    return max(0, math.floor(n * a_lo - width * sd - 10)), min(n, math.ceil(n * a_hi + width * sd + 10))


def _tail_at_split(n: int, cutoffs, s: float, width: float = _WINDOW_SD):
    """For a fixed split s, the function a -> (P_{a,s}(θ̂ >= θ̃) or an over-estimate of it, d/da of its summed part).

    Conditional on X_A = k the tail is _conditional_tail (independent of a, so it is cached per s); X_A ~ Bin(n, a)
    is summed over a window of k around n*a and the exact mass outside the window is added in full (as if every
    outcome there passed), which can only over-estimate P: conservative, it enlarges the confidence set.
    """
    cache = np.full(n + 1, np.nan)

    def tail(a: float):
        lo, hi = _window(n, a, a, width)
        k = np.arange(lo, hi + 1)
        c = cache[lo:hi + 1]                      # a view: filling it fills the cache
        miss = np.isnan(c)
        if miss.any():
            c[miss] = _conditional_tail(n, cutoffs[lo:hi + 1][miss], k[miss], s)
        wc = _binom.pmf(k, n, a) * c
        outside = (_bdtr(lo - 1, n, a) if lo > 0 else 0.0) + (_bdtrc(hi, n, a) if hi < n else 0.0)
        slope = float(wc @ (k - n * a)) / (a * (1.0 - a)) if 0.0 < a < 1.0 else math.nan
        return float(wc.sum()) + outside, slope

    return tail


def _exact_margin_tail(x_a: int, x_b: int, x_rest: int, a: float, s: float, h: str = "probit",
                       width: float = _WINDOW_SD) -> float:
    """P_q(θ̂ >= θ̃) at q = (a, (1−a)s, (1−a)(1−s)) for the observed counts (over-estimated if the window drops
    mass)."""
    n, cutoffs = _margin_cutoffs(x_a, x_b, x_rest, h)
    return _tail_at_split(n, cutoffs, s, width)(a)[0]


def _first_feasible_a(tail, alpha: float, lo: float, hi: float, start: float):
    """(lo, hi, P at lo): a bracket of a*(s) = inf{a : P_{a,s} > alpha} with hi − lo <= _A_TOL (unless the iteration
    cap stops it first; lo stays valid). Needs lo <= a*(s) <= hi on entry; P at lo is None if never evaluated.

    P is nondecreasing in a, so a point with P + slack <= alpha certifies a*(s) >= it and becomes the new lo; any
    other point becomes hi. Safeguarded Newton: each step aims a quarter tolerance past the root on the side not
    yet certified, so the bracket closes from both ends; steps leaving the bracket become bisection.
    """
    x, p_lo = min(max(start, lo), hi), None
    for _ in range(200):
        if hi - lo <= _A_TOL:
            break
        p, slope = tail(x)
        if p + _P_SLACK <= alpha:
            lo, p_lo = x, p
        else:
            hi = x
        step = (alpha - _P_SLACK - p) / slope if slope > 1e-300 else math.nan   # root of the certification test
        x = x + step + (0.25 if x == lo else -0.25) * _A_TOL
        if not lo < x < hi:                       # also catches nan
            x = 0.5 * (lo + hi)
    return lo, hi, p_lo


def _margin_fn(hfun, tv: float = 0.0):
    """g(a, b) = h(a) - h(b), or with tv > 0, h(a - tv) - h(b + tv) clipped to [0, 1] (exact_margin_lower, tv)."""
    if tv == 0:
        return lambda a, b: hfun(a) - hfun(b)
    return lambda a, b: hfun(np.clip(a - tv, 0.0, 1.0)) - hfun(np.clip(b + tv, 0.0, 1.0))


def _refined_lower(n: int, cutoffs, hfun, alpha: float, s1: float, s2: float, lo1: float, p1: float, A: float,
                   tv: float = 0.0):
    """A lower bound on inf{g(a, s) : P_{a,s} > alpha, s in [s1, s2]} that is second order in s2 − s1.

    lo1 <= a*(s1) was certified with P-estimate p1 <= alpha − slack. For a' in [lo1, A], σ in [s1, s2] take
    Da >= ∂P/∂a(a', s1) and Ds <= −∂P/∂s(a', σ). Then for a in [lo1, A], s in [s1, s2]
        P(a, s) <= P(a, s1) − (s − s1)·Ds <= p1 + (a − lo1)·Da − (s − s1)·Ds,
    which is <= alpha while a <= ℓ(s) = lo1 + (alpha − slack − p1 + (s − s1)·Ds)/Da; as P is nondecreasing in a,
    a*(s) >= λ(s) = min(ℓ(s), A), nondecreasing in s, and g >= h(λ(t_i)) − h((1 − λ(t_i))·t_{i+1}) for s in
    [t_i, t_{i+1}] on a fine staircase t_i. Each pmf below is unimodal in its probability parameter, so its
    maximum (minimum) over an interval is at the mode clipped to the interval (at an endpoint).
    """
    klo, khi = _window(n, lo1, A)
    k = np.arange(klo, khi + 1)
    m = cutoffs[klo:khi + 1]
    j = k[:-1]
    some = (2 * m >= n - k) & (m < n - k)
    ks, ms = k[some], m[some]
    N = n - ks
    # all pmfs in one call (scipy's per-call overhead dominates otherwise): the peak over [lo1, A] of
    # Bin(j; n−1, ·), Bin(k; n, ·) at lo1 and A, Bin(m; N−1, ·) at s1 and s2, and the peak over [s1, s2] of
    # Bin(N−m−1; N−1, ·)
    jo = N - ms - 1
    segments = [(j, n - 1, np.clip(j / (n - 1), lo1, A)), (ks, n, lo1), (ks, n, A), (ms, N - 1, s1),
                (ms, N - 1, s2), (jo, N - 1, np.clip(jo / np.maximum(N - 1, 1), s1, s2))]
    args = [np.concatenate([np.broadcast_to(seg[i], seg[0].shape) for seg in segments]) for i in range(3)]
    peak, w_lo, w_hi, b_s1, b_s2, b_other = np.split(_binom.pmf(*args),
                                                     np.cumsum([len(seg[0]) for seg in segments])[:-1])
    # ∂P/∂a = n Σ_j Bin(j; n−1, a)(c_{j+1} − c_j): the pmf at its maximum over [lo1, A], negative differences
    # (rounding) dropped, and the j outside the window bounded by their whole tail mass (monotone in a).
    steps = np.maximum(np.diff(_conditional_tail(n, m, k, s1)), 0.0)
    out = (_bdtr(klo - 1, n - 1, lo1) if klo > 0 else 0.0) + (_bdtrc(khi - 1, n - 1, A) if khi < n else 0.0)
    Da = n * (float(peak @ steps) + out) * (1.0 + _DERIV_SLACK)
    # −∂P/∂s = Σ_k Bin(k; n, a)·N[Bin(m; N−1, σ) − Bin(N−m−1; N−1, σ)], every term >= 0 for σ >= 1/2: each factor
    # at its minimum, negative termwise bounds raised to 0 (the truth is >= 0), and the k outside the window dropped.
    w_min, b_min = np.minimum(w_lo, w_hi), np.minimum(b_s1, b_s2)
    Ds = float(w_min @ (N * np.maximum(b_min - b_other, 0.0))) * (1.0 - _DERIV_SLACK)
    t = np.linspace(s1, s2, _STAIRS + 1)
    lam = np.clip(lo1 + (alpha - _P_SLACK - p1 + (t - s1) * Ds) / Da, lo1, A) if Da > 0 else np.full_like(t, A)
    return float(np.min(_margin_fn(hfun, tv)(lam[:-1], (1.0 - lam[:-1]) * t[1:])))


def exact_margin_lower(x_a: int, x_b: int, x_rest: int, alpha: float, h: str = "probit",
                       tol: float = 1e-6, tv: float = 0.0) -> float:
    """(1 − alpha) lower confidence bound on h(p_A) − h(max(p_B, p_rest)) from trinomial counts, by test inversion.

    x_a, x_b, x_rest: votes for the top class A, the runner-up B (both chosen on independent selection samples)
    and all other classes together, out of n = x_a + x_b + x_rest fresh samples; pass x_rest = 0 with two classes.
    h: "probit" (Φ⁻¹, the Gaussian margin radius is σ/2 times the result) or "identity". The result also bounds
    h(p_A) − h(max_{c≠A} p_c) from below, because every single class has p_c <= max(p_B, p_rest). It is −inf for
    probit when the data give no evidence (a*(1/2) = 0); the caller abstains.

    Source: Moutaouakil, §4 eqs 7–9, corrected per shared/papers/ERRATA.md. Derivation, with q = (a, b, r) the
    reduced trinomial, g(q) = h(a) − h(max(b, r)), statistic θ̂ = h(c(x_A/n)) − h(c(max(x_B, x_R)/n)), where c clips
    to [1/(2n), 1 − 1/(2n)] for probit (unclipped, the bound is vacuous) and θ̃ its observed value:
      LCB = inf{g(q) : P_q(θ̂ >= θ̃) > alpha}   (valid: the true q is in the set with prob. >= 1 − alpha).
    Write b = (1−a)s, r = (1−a)(1−s); by the B ↔ R symmetry take s in [1/2, 1], so g = h(a) − h((1−a)s).
    1. Given X_A = k, N = n−k and X_B ~ Bin(N, s); θ̂ >= θ̃ iff M = max(X_B, N−X_B) <= m(k), so the tail is
       Σ_k Bin(k; n, a)·[F_N(m(k)) − F_N(N−m(k)−1)], summed over k near n·a plus the whole mass outside (O(√n)).
    2. P is nondecreasing in a (moving trials from B/R to A raises x_A and can only lower M) and g is increasing
       in a, so for fixed s the infimum is at a*(s) = inf{a : P_{a,s} > alpha}, a monotone 1-D root; the lower
       end of a certified bracket is used.
    3. For s >= 1/2, M grows stochastically with s, so P is nonincreasing in s and a*(s) is nondecreasing.
    4. Hence on [s1, s2] every feasible point has g >= h(a*(s1)) − h((1 − a*(s1))·s2): branch and bound on s
       splits the interval with the smallest bound until it is within tol of the best attained value
       g(a*(s), s), or _MAX_S_POINTS splits are used, and returns the smallest lower bound, never an attained value.
    5. Before a narrow interval is split, its bound is tightened with rigorous bounds on ∂P/∂a and ∂P/∂s over
       the box (_refined_lower): a*(s) then grows at least linearly across it, and the bound's error falls from
       O(s2 − s1) to O((s2 − s1)²). Typical counts reach tol = 1e-6 within the cap; near ties at large n, where
       the margin is almost constant along the boundary a*(s), the cap stops the search first and the result
       lies up to ~2e-3 below the infimum (still a valid bound, just less tight).
    Every approximation (window, ties, slacks, bracket ends, derivative bounds, staircase) moves the result down.

    tv: the samples come from a law within total variation tv of the law the margin is wanted for (float-sound
    sampling, smoothcert.noises.sound step 3): then g(q) = h(a - tv) - h(max(b, r) + tv) (clipped to [0, 1]), a lower
    bound on the margin of every law within tv of q (each class's probability moves by at most tv). g is still
    increasing in a and decreasing in b and r, all that steps 2-5 use, so the infimum over the same confidence set
    is a (1 - alpha) lower bound on the wanted law's margin. tv = 0 is the plain bound.
    """
    for name, value in (("x_a", x_a), ("x_b", x_b), ("x_rest", x_rest)):
        check(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0,
              f"{name} must be an integer >= 0, got {value!r}")
    x_a, x_b, x_rest = int(x_a), int(x_b), int(x_rest)
    check(x_a + x_b + x_rest >= 1, "x_a + x_b + x_rest (the number of samples) must be >= 1, got 0")
    check(x_a + x_b + x_rest <= MAX_N, f"the exact margin bound takes memory in proportion to the number of samples: "
                                       f"at most {MAX_N:,}, got {x_a + x_b + x_rest:,}")
    alpha = check_alpha(alpha)
    check(h in ("probit", "identity"), f"h must be 'probit' or 'identity', got {h!r}")
    check(isinstance(tol, (int, float)) and tol > 0, f"tol must be > 0, got {tol!r}")
    check(isinstance(tv, (int, float)) and 0 <= tv < 1, f"tv must lie in [0, 1), got {tv!r}")
    hfun = _ndtri if h == "probit" else (lambda x: x)
    g = _margin_fn(hfun, tv)                              # see tv above
    n, cutoffs = _margin_cutoffs(x_a, x_b, x_rest, h)
    brackets = {}                                 # s -> (lo, hi, P at lo) with lo <= a*(s) <= hi

    def solve(s, lo, hi, start):
        tail = _tail_at_split(n, cutoffs, s)
        if lo == 0.0 and tail(0.0)[0] + _P_SLACK > alpha:
            brackets[s] = (0.0, 0.0, None)        # a*(s) = 0 (as far as rounding can tell)
        else:
            brackets[s] = _first_feasible_a(tail, alpha, lo, hi, start)

    def lower(s1, s2):                            # a >= a*(s) >= a*(s1) >= lo(s1) and (1 − a)s <= (1 − lo)s2
        a = brackets[s1][0]
        return float(g(a, (1.0 - a) * s2))

    def attained(s):                              # g at the feasible end of the bracket: >= the infimum
        a = brackets[s][1]
        return float(g(a, (1.0 - a) * s))

    solve(1.0, 0.0, 1.0, x_a / n)
    solve(0.5, 0.0, brackets[1.0][1], x_a / n)
    if h == "probit" and brackets[0.5][0] == 0.0:
        return -math.inf                          # a*(1/2) = 0: Φ⁻¹(0) = −inf, no evidence
    heap = [(lower(0.5, 1.0), 0.5, 1.0, False)]   # (lower bound, s1, s2, refined?)
    best = min(attained(0.5), attained(1.0))
    while best - heap[0][0] >= tol and len(brackets) < _MAX_S_POINTS:
        bound, s1, s2, refined = heapq.heappop(heap)
        lo1, p1 = brackets[s1][0], brackets[s1][2]
        A = max(brackets[s2][1], lo1)
        # the derivative bounds only help over a box in a narrower than ~0.3 sd of X_A/n: skip wider ones
        if not refined and p1 is not None and n > 1 and n * (A - lo1) <= 0.3 * math.sqrt(n * lo1 * (1 - lo1)) + 1:
            heapq.heappush(heap, (max(bound, _refined_lower(n, cutoffs, hfun, alpha, s1, s2, lo1, p1, A, tv)),
                                  s1, s2, True))
            continue
        sm = 0.5 * (s1 + s2)
        hi2 = brackets[s2][1]                     # a*(s1) <= a*(sm) <= a*(s2) by step 3
        solve(sm, lo1, hi2, 0.5 * (lo1 + hi2))
        best = min(best, attained(sm))
        heapq.heappush(heap, (lower(s1, sm), s1, sm, False))
        heapq.heappush(heap, (lower(sm, s2), sm, s2, False))
    return heap[0][0] - _RESULT_SLACK
