"""Exact-value tests of the bounds and radius formulas against independent computations."""
import math

import numpy as np
import pytest
from scipy import optimize, special, stats

from smoothcert import Gaussian, Laplace, SmoothcertError
from smoothcert.bounds import binomial_test_pvalue, clopper_pearson_lower, clopper_pearson_upper


def cp_lower_by_root(k, n, alpha):
    """The p at which P(Bin(n, p) >= k) = alpha: Clopper-Pearson's defining equation, solved numerically."""
    if k == 0:
        return 0.0
    return optimize.brentq(lambda p: stats.binom.sf(k - 1, n, p) - alpha, 1e-300, 1 - 1e-16, xtol=1e-15, rtol=1e-14)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (99, 100), (100, 100),
                                 (9_000, 10_000), (99_990, 100_000), (100_000, 100_000), (50, 100)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_lower_matches_its_defining_equation(k, n, alpha):
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(cp_lower_by_root(k, n, alpha), abs=1e-10)


def test_clopper_pearson_closed_forms():
    # k = n: the bound solves p^n = alpha; k = 0: upper bound solves (1-p)^n = alpha.
    assert clopper_pearson_lower(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-12)
    assert clopper_pearson_upper(0, 100, 0.001) == pytest.approx(1 - 0.001 ** (1 / 100), rel=1e-12)
    assert clopper_pearson_upper(100, 100, 0.001) == 1.0
    assert clopper_pearson_lower(0, 100, 0.001) == 0.0


def test_clopper_pearson_upper_mirrors_lower():
    for k in range(0, 21):
        assert clopper_pearson_upper(k, 20, 0.01) == pytest.approx(1 - clopper_pearson_lower(20 - k, 20, 0.01), abs=1e-12)


def test_clopper_pearson_vectorised():
    k = np.array([3, 7, 10])
    out = clopper_pearson_lower(k, 10, 0.05)
    assert out.shape == (3,)
    assert out[1] == pytest.approx(cp_lower_by_root(7, 10, 0.05), abs=1e-10)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan")])
def test_bounds_reject_bad_alpha(bad):
    with pytest.raises(SmoothcertError, match="alpha"):
        clopper_pearson_lower(5, 10, bad)


def test_bounds_reject_bad_counts():
    with pytest.raises(SmoothcertError):
        clopper_pearson_lower(11, 10, 0.05)
    with pytest.raises(SmoothcertError):
        clopper_pearson_lower(0, 0, 0.05)


def test_binomial_test_pvalue_matches_direct_sum():
    # two-sided exact test at p = 1/2 is symmetric: p-value = 2 * P(X >= max(k, n-k)), capped at 1
    for k, n in [(60, 100), (50, 100), (0, 5), (9, 10), (530, 1000)]:
        m = max(k, n - k)
        direct = min(1.0, 2 * stats.binom.sf(m - 1, n, 0.5)) if m * 2 != n else 1.0
        assert binomial_test_pvalue(k, n) == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("p", [0.5000001, 0.6, 0.9, 0.99, 0.999999])
@pytest.mark.parametrize("sigma", [0.12, 0.25, 1.0])
def test_gaussian_radius_is_sigma_times_inverse_normal_cdf(p, sigma):
    assert Gaussian(sigma).radius(p) == pytest.approx(sigma * math.sqrt(2) * special.erfinv(2 * p - 1), rel=1e-9)


def test_gaussian_radius_is_never_negative():
    g = Gaussian(0.5)
    for p in [0.0, 0.1, 0.49999, 0.5]:
        assert g.radius(p) == 0.0


@pytest.mark.parametrize("bad", [0, -0.25, float("nan"), float("inf")])
def test_gaussian_rejects_bad_sigma(bad):
    with pytest.raises(SmoothcertError, match="sigma"):
        Gaussian(bad)


def test_noises_reject_norms_they_cannot_certify():
    with pytest.raises(SmoothcertError, match="cannot certify the 'linf' norm"):
        Gaussian(0.25).radius(0.9, norm="linf")
    with pytest.raises(SmoothcertError, match="laplace noise cannot certify the 'l2' norm"):
        Laplace(0.25).radius(0.9, norm="l2")
    with pytest.raises(SmoothcertError, match="cannot certify"):
        Laplace(0.25).margin_radius(0.9, 0.05, norm="l2")
    # a Gaussian l2 radius is also an l1 radius (the l1 ball sits inside the l2 ball)
    assert Gaussian(0.25).radius(0.9, norm="l1") == Gaussian(0.25).radius(0.9, norm="l2")


def test_gaussian_sampling_is_reproducible_and_has_the_right_scale():
    import torch
    g = Gaussian(0.5)
    a = g.sample(torch.empty(200_000), torch.Generator().manual_seed(1))
    b = g.sample(torch.empty(200_000), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert abs(float(a.mean())) < 0.01
    assert float(a.std()) == pytest.approx(0.5, rel=0.01)
    half = g.sample(torch.empty(10, dtype=torch.float64), torch.Generator().manual_seed(1))
    assert half.dtype == torch.float64
