"""Named certificates: the table of every name (`CERTIFICATES`: its function, the noises it is valid for, its norm,
what statistic it reads), and `certify`, which applies a hard-vote one to stored counts.

Hard-vote certificates (hard.py) read class counts; soft certificates (soft.py) read score sums; certified
confidence (confidence.py) reads a histogram of the measure. All are pure functions of statistics a results file
stores: nothing here samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import SmoothcertError, check, check_alpha
from ..noises.norms import with_dims
from .hard import best, exact_margin, lecuyer, margin, one_sided, single_stage
from .verdict import ABSTAIN, Verdict, _as_counts, complete


@dataclass(frozen=True)
class Spec:
    """A named certificate: its function, the noises it is valid for, the norm it reports by default, and
    whether it reads the selection samples (single-stage does not: n0 may be 0)."""

    name: str
    fn: Callable
    noises: tuple[str, ...]
    norm: dict  # noise name -> default norm
    summary: str
    uses_selection: bool = True
    statistic: str = "votes"      # what it reads: 'votes' (class counts) or 'scores' (soft scores, certificates/soft.py)


_G, _L, _U = "gaussian", "laplace", "uniform"
CERTIFICATES = {s.name: s for s in [
    Spec("cohen", one_sided, (_G,), {_G: "l2"}, "one-sided Clopper-Pearson, sigma Phi^-1(pA) (Cohen et al.)"),
    Spec("margin", margin, (_G,), {_G: "l2"}, "two-sided margin sigma/2 (Phi^-1 pA - Phi^-1 pB), Bonferroni"),
    Spec("exact-margin", exact_margin, (_G,), {_G: "l2"}, "exact trinomial bound on the Phi^-1 margin"),
    Spec("best", best, (_G, _L, _U), {_G: "l2", _L: "l1", _U: "l1"},
         "one- or two-sided, chosen on the selection samples"),
    Spec("teng", margin, (_L,), {_L: "l1"}, "Laplace l1, Teng et al. Thm 1 (Bonferroni pA, pB)"),
    Spec("teng-binary", one_sided, (_L,), {_L: "l1"}, "Laplace l1, Teng et al. Thm 2: -lam log 2(1 - pA)"),
    Spec("lecuyer", lecuyer, (_L,), {_L: "l1"}, "Laplace l1 baseline lam/2 log(pA/pB) (Lecuyer et al.)"),
    Spec("yang", one_sided, (_U,), {_U: "l1"}, "uniform l1, Yang et al. 2020: 2 lam (pA - 1/2)"),
    Spec("yang-margin", margin, (_U,), {_U: "l1"}, "uniform l1: lam (pA - pB), Bonferroni pA, pB"),
    Spec("gaussian-l1", one_sided, (_G,), {_G: "l1"}, "Gaussian l2 radius read as an l1 radius (baseline)"),
    Spec("single-stage", single_stage, (_G, _L, _U), {_G: "l2", _L: "l1", _U: "l1"},
         "002 Alg. 1, the same samples choose and bound: for evaluation against labels only", uses_selection=False),
    # soft certificates read score statistics; their functions are soft.CERTIFICATES[name]
    *[Spec(name, fn, (_G,), {_G: "l2"}, summary, statistic="scores") for name, fn, summary in [
        ("soft-hoeffding", None, "soft scores, Hoeffding bounds, margin radius (Salman et al. Lemma 2)"),
        ("soft-bernstein", None, "soft scores, empirical Bernstein (Maurer-Pontil), margin radius"),
        ("soft-betting", None, "soft scores, betting confidence bounds (Waudby-Smith & Ramdas), margin radius"),
        ("soft-lipschitz", None, "soft scores, Lipschitz-margin radius of 000 eq. 2 (constant sqrt(2/pi)/sigma)")]],
]}
DEFAULT = {_G: "cohen", _L: "teng", _U: "yang-margin"}   # yang-margin: measured ahead of yang (README, Uniform noise)
# each noise's one-sided Clopper-Pearson certificate: what early stopping certifies with, and what planning predicts
ONE_SIDED = {_G: "cohen", _L: "teng-binary", _U: "yang"}


def get(name: str | None, noise) -> Spec:
    """The certificate `name` (the noise's default when None), checked to be valid for `noise`."""
    name = DEFAULT[noise.name] if name is None else name
    if name not in CERTIFICATES:
        raise SmoothcertError(f"unknown certificate {name!r} (known: {', '.join(CERTIFICATES)})")
    spec = CERTIFICATES[name]
    if noise.name not in spec.noises:
        raise SmoothcertError(f"certificate {name!r} is for {' or '.join(spec.noises)} noise, not {noise.name}")
    return spec


def resolve(name: str | None, noise, norm: str | None = None, dims: int | None = None) -> tuple[Spec, str]:
    """The certificate `name` for `noise` (see `get`) and the norm it reports: `norm`, or the certificate's
    default, checked to be one the noise can certify; with `dims` (the inputs' number of coordinates) an l-inf
    norm gets its dimension, 'linf' -> 'linf:d=dims' (noises/norms.py)."""
    spec = get(name, noise)
    norm = spec.norm[noise.name] if norm is None else norm
    noise._check_norm(norm)
    return spec, with_dims(norm, dims)


def certify(name: str | None, counts_selection, counts, noise, alpha: float, norm: str | None = None) -> Verdict:
    """Apply certificate `name` to (G, K) count arrays (or single count vectors)."""
    alpha = check_alpha(alpha)
    spec, norm = resolve(name, noise, norm)
    check(spec.statistic == "votes", f"{spec.name} reads soft scores, not votes: use Smooth.certify_soft or "
                                     "smoothcert.certificates.soft")
    check((not spec.uses_selection or (_as_counts(counts_selection).sum(axis=1) >= 1).all())
          and (_as_counts(counts).sum(axis=1) >= 1).all(),
          "every input needs at least one selection and one estimation sample")
    return complete(spec.fn(counts_selection, counts, noise, alpha, norm), _as_counts(counts_selection).argmax(axis=1))
