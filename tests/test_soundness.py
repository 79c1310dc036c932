"""Soundness: on classifiers whose smoothed probabilities are known exactly, a certificate overstates the true
radius (or certifies a wrong class) with probability at most alpha; PREDICT returns a wrong class with
probability at most alpha. Each test also shows it can fail, by running an unsound estimator through it."""
import numpy as np
import pytest
import torch
from scipy import stats

from conftest import Threshold
from smoothcert import Gaussian, Smooth
from smoothcert.certificates import ABSTAIN, Verdict

# With a true failure rate <= alpha, observing more than this many failures in `reps` happens with prob <= 1e-6.
def failure_limit(reps, alpha):
    return int(stats.binom.isf(1e-6, reps, alpha))


def certify_failures(margin, sigma, n0, n, alpha, reps, certificate="cohen", seed=0):
    """Certify the threshold classifier at x = margin `reps` times (independent streams) and count certificates
    that are wrong: a certified class other than the true smoothed class, or a radius beyond the true one."""
    smooth = Smooth(Threshold(), Gaussian(sigma))
    true_class = 1 if margin > 0 else 0
    true_radius = abs(margin)  # = sigma * Phi^-1(pA), pA = Phi(|margin| / sigma)
    xs = torch.full((reps, 1), float(margin), dtype=torch.float64)
    fails = 0
    for c in smooth.certify_many(xs, n0, n, alpha, 20_000, seed=seed, certificate=certificate):
        if c.prediction != ABSTAIN and (c.prediction != true_class or c.radius > true_radius * (1 + 1e-12)):
            fails += 1
    return fails


@pytest.mark.parametrize("pA,n,alpha", [(0.9, 100, 0.05), (0.99, 1000, 0.01), (0.6, 1000, 0.05)])
def test_cohen_certificate_fails_at_most_alpha(pA, n, alpha):
    sigma = 0.5
    reps = 4000
    fails = certify_failures(sigma * stats.norm.ppf(pA), sigma, 10, n, alpha, reps)
    assert fails <= failure_limit(reps, alpha)


@pytest.mark.slow
@pytest.mark.parametrize("pA", [0.51, 0.75, 0.95, 0.999])
def test_cohen_certificate_fails_at_most_alpha_many_repetitions(pA):
    sigma, alpha, reps = 0.25, 0.05, 40_000
    fails = certify_failures(sigma * stats.norm.ppf(pA), sigma, 20, 200, alpha, reps, seed=11)
    assert fails <= failure_limit(reps, alpha)
    # Clopper-Pearson is conservative but not absurdly so: at pA = 0.95 with n = 200 it fails often enough
    # that a bound which never fails (e.g. one that always abstains) would be caught.
    if pA == 0.95:
        assert fails > 0.2 * alpha * reps


def _point_estimate(counts_selection, counts, noise, alpha, norm="l2"):
    """UNSOUND on purpose: the radius of the point estimate of pA."""
    c = np.argmax(counts_selection, axis=1)
    p = counts[np.arange(len(c)), c] / counts.sum(axis=1)
    ok = p > 0.5
    return Verdict(np.where(ok, c, ABSTAIN), np.where(ok, noise.radius(np.minimum(p, 1 - 1e-12)), 0.0), p, p * np.nan)


def test_the_soundness_check_catches_an_unsound_certificate(monkeypatch):
    from smoothcert import certificates
    monkeypatch.setitem(certificates.CERTIFICATES, "point",
                        certificates.Spec("point", _point_estimate, ("gaussian",), {"gaussian": "l2"}, "unsound"))
    reps, alpha = 2000, 0.05
    fails = certify_failures(0.5 * stats.norm.ppf(0.9), 0.5, 10, 100, alpha, reps, certificate="point")
    assert fails > failure_limit(reps, alpha)


@pytest.mark.parametrize("pA,n", [(0.55, 1000), (0.6, 200)])
def test_predict_returns_a_wrong_class_at_most_alpha(pA, n):
    sigma, alpha, reps = 1.0, 0.05, 3000
    smooth = Smooth(Threshold(), Gaussian(sigma))
    xs = torch.full((reps, 1), sigma * stats.norm.ppf(pA), dtype=torch.float64)
    wrong = sum(p.prediction == 0 for p in smooth.predict_many(xs, n, alpha, 20_000, seed=4))
    assert wrong <= failure_limit(reps, alpha)
