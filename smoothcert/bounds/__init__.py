"""Confidence bounds, all in one place, one module per family. Each takes statistics and alpha and knows
nothing of models or noise; every bound holds with probability >= 1 - alpha over the samples it reads.

    binomial   Clopper-Pearson lower/upper bounds, the exact binomial test
    margin     the exact trinomial lower bound on the Phi^-1 margin (000 §4, corrected per ERRATA)
"""
from .binomial import binomial_test_pvalue, clopper_pearson_lower, clopper_pearson_upper
from .margin import exact_margin_lower
from . import sequential as sequential  # anytime-valid under optional stopping: UnionBound, BetaMixture, decide

__all__ = ["binomial_test_pvalue", "clopper_pearson_lower", "clopper_pearson_upper", "exact_margin_lower"]
