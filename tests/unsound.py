"""Realistic unsound variants of the certificates and of PREDICT, for the negative controls of the soundness tests.

Each takes pytest's monkeypatch and swaps one piece of smoothcert for the variant until the test ends; the control
then runs the variant through the same harness and plan as the sound case and asserts it is caught.
"""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import smoothcert.bounds
import smoothcert.engine.streams
from smoothcert import certificates as C
from smoothcert.certificates import confidence, soft
from smoothcert.certificates import hard as H
from smoothcert.bounds.mean import Betting
from smoothcert.bounds.sequential import UnionBound
from smoothcert.engine import SELECTION


def _swap(monkeypatch, name, fn):
    """Make certificate `name` run `fn` (a Spec is frozen and holds its function)."""
    monkeypatch.setitem(C.CERTIFICATES, name, replace(C.CERTIFICATES[name], fn=fn))


def bounds_at_twice_alpha(monkeypatch):
    """Clopper-Pearson bounds at level 2 alpha (e.g. a two-sided alpha read as one-sided): every certificate built on
    them (cohen, gaussian-l1, teng-binary, margin, teng, lecuyer, best)."""
    lower, upper = smoothcert.bounds.clopper_pearson_lower, smoothcert.bounds.clopper_pearson_upper
    monkeypatch.setattr(smoothcert.bounds, "clopper_pearson_lower", lambda k, n, alpha: lower(k, n, 2 * alpha))
    monkeypatch.setattr(smoothcert.bounds, "clopper_pearson_upper", lambda k, n, alpha: upper(k, n, 2 * alpha))


def bonferroni_dropped(monkeypatch):
    """The pair certificates (margin, teng, lecuyer, and best's two-sided branch) with each bound at alpha, not
    alpha / 2."""
    def dropped(fn):
        return lambda counts_selection, counts, noise, alpha, norm: fn(counts_selection, counts, noise, 2 * alpha, norm)
    for name in ("margin", "teng", "lecuyer"):
        _swap(monkeypatch, name, dropped(C.CERTIFICATES[name].fn))
    monkeypatch.setattr(H, "margin", dropped(H.margin))


def selection_reused(monkeypatch):
    """The top class chosen on the estimation counts, the same counts that then bound its probability."""
    def top(counts_selection, counts):
        counts_selection, counts = C._as_counts(counts_selection), C._as_counts(counts)
        return counts_selection, counts, np.arange(len(counts)), counts.argmax(axis=1)
    monkeypatch.setattr(H, "_top", top)


def runner_up_reused(monkeypatch):
    """exact-margin with the runner-up B chosen on the estimation counts (the top class still from the selection)."""
    exact_margin, runner_up = C.CERTIFICATES["exact-margin"].fn, H.runner_up

    def reused(counts_selection, counts, noise, alpha, norm):
        estimation = C._as_counts(counts)
        with pytest.MonkeyPatch.context() as inner:
            inner.setattr(H, "runner_up", lambda _, c_a: runner_up(estimation, c_a))
            return exact_margin(counts_selection, counts, noise, alpha, norm)
    _swap(monkeypatch, "exact-margin", reused)


def best_of_both(monkeypatch):
    """best taking whichever of the one- and two-sided certificates gives the larger radius on the estimation counts
    (both at the full alpha, with no union bound over the choice)."""
    def larger(counts_selection, counts, noise, alpha, norm):
        one = H.one_sided(counts_selection, counts, noise, alpha, norm)
        two = H.margin(counts_selection, counts, noise, alpha, norm)
        use_two = two.radius > one.radius
        return C.Verdict(*(np.where(use_two, getattr(two, f), getattr(one, f))
                           for f in ("prediction", "radius", "p_lower", "p_upper")))
    _swap(monkeypatch, "best", larger)


def predict_at_twice_alpha(monkeypatch):
    """PREDICT abstaining only when the binomial test's p-value exceeds 2 alpha."""
    pvalue = smoothcert.bounds.binomial_test_pvalue
    monkeypatch.setattr(smoothcert.bounds, "binomial_test_pvalue", lambda *args: pvalue(*args) / 2)


# -- the engine's modes (tests/test_tie_soundness.py) --------------------------------------------------------------
def estimation_from_selection_stream(monkeypatch):
    """Every mode's estimation stream drawn as its selection stream: the first n0 'fresh' samples replay the
    selection samples that chose the class (issue 13's bug (a), there in early stopping)."""
    monkeypatch.setattr(smoothcert.engine.streams, "ESTIMATION", SELECTION)


def pilot_votes_added(monkeypatch):
    """The selection (pilot) votes added to the estimation counts before the bound, as Chen et al.'s code does
    for input-specific n (issue 13's bug (b)); applies to every vote certificate the engine computes."""
    certify = C.certify
    monkeypatch.setattr(C, "certify", lambda name, c0, c1, *args: certify(name, c0, C._as_counts(c0)
                                                                          + C._as_counts(c1), *args))


def alpha_at_every_look(monkeypatch):
    """Early stopping with Clopper-Pearson at the full alpha at every look (no split of alpha over the looks)."""
    monkeypatch.setattr(UnionBound, "lower", lambda self, k, t: smoothcert.bounds.clopper_pearson_lower(k, t,
                                                                                                        self.alpha))


def lipschitz_constant_of_a_unit_range(monkeypatch):
    """soft-lipschitz with the exact constant of a [0, 1]-valued function, 1/(sigma sqrt(2 pi)), applied to the
    margin E_A - E_c, whose range is [-1, 1]: twice the valid radius."""
    monkeypatch.setattr(soft, "LIPSCHITZ_MARGIN", 1 / math.sqrt(2 * math.pi))


def layers_weighted_by_the_width_above(monkeypatch):
    """Certified confidence (001 Thm 2) with each layer's tail weighted by the width ABOVE its threshold (the
    upper bound's layer cake used for the lower bound): off by one layer, which coarse thresholds make large."""
    terms = confidence._terms

    def above(layers, g, alpha, upper, tv=0.0):      # tv: the float-sound slack (0 for the Gaussian noise here)
        if upper:
            return terms(layers, g, alpha, upper, tv)
        widths = np.diff(np.append(layers.thresholds[g], layers.high))
        q = np.atleast_1d(confidence.tail_lower(layers.count_ge[g], layers.m[g], alpha))
        keep = (widths > 0) & (q > 0)
        return layers.low, widths[keep], confidence.ndtri(q[keep])
    monkeypatch.setattr(confidence, "_terms", above)


def bets_from_their_own_block(monkeypatch):
    """Betting whose bet on a block of values is taken in the direction the block's OWN mean points (on K+(m)
    only where that mean is >= m, on K-(m) only where it is < m): the sign of a mean-adaptive (GRAPA-like) bet
    computed with the values it is placed on, so bet i depends on value i and later ones. Not predictable."""
    step = Betting._step

    def own_block(self, x, owner):
        count = torch.zeros(self.rows, dtype=torch.float64).index_add_(0, owner, torch.ones_like(x))
        mean = torch.zeros(self.rows, dtype=torch.float64).index_add_(0, owner, x) / count.clamp(min=1)
        up = mean[:, None] >= self.grid
        caps = self._cap_plus, self._cap_minus
        self._cap_plus, self._cap_minus = torch.where(up, caps[0], 0.0), torch.where(up, 0.0, caps[1])
        try:
            step(self, x, owner)
        finally:
            self._cap_plus, self._cap_minus = caps
    monkeypatch.setattr(Betting, "_step", own_block)
