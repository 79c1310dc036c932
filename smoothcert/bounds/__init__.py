"""Confidence bounds, all in one place, one module per family. Each takes statistics and alpha and knows
nothing of models or noise; every bound holds with probability >= 1 - alpha over the samples it reads.

    binomial   Clopper-Pearson lower/upper bounds, the exact binomial test
    margin     the exact trinomial lower bound on the Phi^-1 margin (000 §4, corrected per ERRATA)
    mean       bounded means: Hoeffding, empirical Bernstein (Maurer & Pontil), betting (Waudby-Smith & Ramdas)
    cdf        the DKW band with Massart's constant, one- or two-sided
    sequential anytime-valid lower bounds for a binomial proportion (early stopping): a Clopper-Pearson union
               over a fixed schedule of looks, a beta-binomial mixture
"""
from .binomial import binomial_test_pvalue, clopper_pearson_lower, clopper_pearson_upper
from .cdf import cdf_band, dkw_epsilon, tail_lower, tail_upper
from .margin import exact_margin_lower
from .mean import Betting, bernstein_lower, bernstein_upper, hoeffding_lower, hoeffding_upper
from . import sequential as sequential  # anytime-valid under optional stopping: UnionBound, BetaMixture, decide

__all__ = ["binomial_test_pvalue", "clopper_pearson_lower", "clopper_pearson_upper", "exact_margin_lower",
           "hoeffding_lower", "hoeffding_upper", "bernstein_lower", "bernstein_upper", "Betting",
           "dkw_epsilon", "tail_lower", "tail_upper", "cdf_band"]
