"""Realistic unsound variants of the certificates and of PREDICT, for the negative controls of the soundness tests.

Each takes pytest's monkeypatch and swaps one piece of smoothcert for the variant until the test ends; the control
then runs the variant through the same harness and plan as the sound case and asserts it is caught.
"""
from dataclasses import replace

import numpy as np
import pytest

import smoothcert.bounds
from smoothcert import certificates as C


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
    monkeypatch.setattr(C, "margin", dropped(C.margin))


def selection_reused(monkeypatch):
    """The top class chosen on the estimation counts, the same counts that then bound its probability."""
    def top(counts_selection, counts):
        counts_selection, counts = C._as_counts(counts_selection), C._as_counts(counts)
        return counts_selection, counts, np.arange(len(counts)), counts.argmax(axis=1)
    monkeypatch.setattr(C, "_top", top)


def runner_up_reused(monkeypatch):
    """exact-margin with the runner-up B chosen on the estimation counts (the top class still from the selection)."""
    exact_margin, runner_up = C.CERTIFICATES["exact-margin"].fn, C.runner_up

    def reused(counts_selection, counts, noise, alpha, norm):
        estimation = C._as_counts(counts)
        with pytest.MonkeyPatch.context() as inner:
            inner.setattr(C, "runner_up", lambda _, c_a: runner_up(estimation, c_a))
            return exact_margin(counts_selection, counts, noise, alpha, norm)
    _swap(monkeypatch, "exact-margin", reused)


def best_of_both(monkeypatch):
    """best taking whichever of the one- and two-sided certificates gives the larger radius on the estimation counts
    (both at the full alpha, with no union bound over the choice)."""
    def larger(counts_selection, counts, noise, alpha, norm):
        one = C.one_sided(counts_selection, counts, noise, alpha, norm)
        two = C.margin(counts_selection, counts, noise, alpha, norm)
        use_two = two.radius > one.radius
        return C.Verdict(*(np.where(use_two, getattr(two, f), getattr(one, f))
                           for f in ("prediction", "radius", "p_lower", "p_upper")))
    _swap(monkeypatch, "best", larger)


def predict_at_twice_alpha(monkeypatch):
    """PREDICT abstaining only when the binomial test's p-value exceeds 2 alpha."""
    pvalue = smoothcert.bounds.binomial_test_pvalue
    monkeypatch.setattr(smoothcert.bounds, "binomial_test_pvalue", lambda *args: pvalue(*args) / 2)
