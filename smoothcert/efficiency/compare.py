"""Sample efficiency, the comparisons: fixed-n files that differ only in n against the prediction from theory
(`versus_n`), the samples an adaptive run spent per input (`samples_summary`), and its speed-up over the fixed-n run
at its n_max (`speedup`). Pure functions of loaded certify files."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import planning
from ..analysis.metrics import DEFAULT_RADII, average_certified_radius, certified_accuracy, check_radii
from ..analysis.reading import Results, frozen_arrays
from ..errors import SmoothcertError, check
from ..noises.record import base_name, is_float_sound

KEYS = ("noise", "scale", "certificate", "norm", "alpha", "n0", "seed", "model")   # what compared runs share
ADAPTIVE = ("input-n", "target")          # modes whose rows used a data-dependent number of samples


def _int(res: Results, column: str) -> int | None:
    try:
        return int(res.settings[column])
    except (KeyError, ValueError):
        return None


def _key(res: Results) -> tuple | None:
    """The settings (as written) that files compared with each other must share; None if any is unknown."""
    values = tuple(res.settings.get(k) for k in KEYS)
    return None if None in values else values


def run_kind(res: Results) -> str | None:
    """'fixed', 'input-n' or 'target' for a smoothcert certify file with its settings; None for any other file."""
    if not isinstance(res, Results) or res.kind != "certify" or _key(res) is None or _int(res, "n") is None:
        return None
    mode = res.settings.get("mode", "")
    if mode == "fixed":
        return "fixed"
    kind = mode.partition(":")[0]
    return kind if kind in ADAPTIVE and res.samples is not None else None


def _where(res: Results) -> str:
    return res.path or res.name


def _inputs(res: Results) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((res.label, res.idx))
    return res.idx[order], res.label[order]


def _same_inputs(a: Results, b: Results) -> bool:
    """The same inputs: equal idx and, input by input, equal labels (so not the same indices of other data)."""
    return all(np.array_equal(x, y) for x, y in zip(_inputs(a), _inputs(b)))


def _comparable(a: Results, b: Results, what: str) -> None:
    """Raise unless a and b share KEYS and inputs."""
    differ = [k for k in KEYS if a.settings[k] != b.settings[k]]
    check(not differ, f"{_where(a)} and {_where(b)} differ in {', '.join(differ)}: {what}")
    check(_same_inputs(a, b), f"{_where(a)} and {_where(b)} hold different inputs (idx or labels): {what}")


def float_radii(radii) -> tuple[float, ...]:
    radii = tuple(float(r) for r in np.atleast_1d(check_radii(radii)))
    check(radii, "give at least one radius")
    return radii


# ---- against n ----

def fixed_n_sets(results: Sequence[Results]) -> list[tuple[Results, ...]]:
    """Fixed-n certify files that agree in every setting but n (KEYS) and hold the same inputs: one tuple per
    set, ordered by n, only sets of two or more n. A second file at an n already in its set is left out (the same
    file given twice); files without smoothcert's settings columns (Cohen et al.'s) are never in a set."""
    sets: list[list[Results]] = []
    for res in results:
        if run_kind(res) != "fixed":
            continue
        home = next((s for s in sets if _key(s[0]) == _key(res) and _same_inputs(s[0], res)), None)
        if home is None:
            sets.append([res])
        elif all(_int(r, "n") != _int(res, "n") for r in home):
            home.append(res)
    return [tuple(sorted(s, key=lambda r: _int(r, "n"))) for s in sets if len(s) > 1]


@dataclass(frozen=True, eq=False)
class VersusN:
    """One set of fixed-n runs against n: the measured ACR and certified accuracy, and their prediction.

    prediction (a planning.Prediction at ns and radii) comes from the largest-n file, each input at its plug-in
    pA; it is None where planning cannot predict: a certificate other than the one-sided Clopper-Pearson one
    (cohen, teng-binary, yang, gaussian-l1) or n beyond planning.MAX_N. run is that file's planning.Run (predict at
    other n with planning.predict(run, ns, radii)).
    """
    name: str                             # the shared settings
    results: tuple[Results, ...]          # the files, in the order of ns
    ns: tuple[int, ...]
    radii: tuple[float, ...]
    acr: np.ndarray                       # (len(ns),) measured
    certified_accuracy: np.ndarray        # (len(ns), len(radii)) measured
    prediction: planning.Prediction | None
    run: planning.Run | None


def _set_name(res: Results) -> str:
    s = res.settings
    symbol = {"gaussian": "σ", "laplace": "λ", "uniform": "λ"}.get(base_name(s["noise"]), "scale")
    sound = " float-sound" if is_float_sound(s["noise"]) else ""
    return f"{s['certificate']} {symbol}={s['scale']}{sound} {s['norm']}, n0={s['n0']}, alpha={s['alpha']}, seed={s['seed']}"


def _run(res: Results) -> planning.Run | None:
    """planning's per-input pA of a file, or None where planning does not predict it (a certificate other than the
    one-sided ones, n beyond planning.MAX_N: planning.load_run refuses those). load_results read the file with the
    reader and row checks load_run uses, so load_run refuses nothing else of a file analyze accepted."""
    if not res.path:
        return None
    try:
        run = planning.load_run(res.path)
    except SmoothcertError:
        return None
    check(len(run.p_hat) == res.n, f"{res.path}: changed while it was read")
    return run


def versus_n(results: Sequence[Results], radii=DEFAULT_RADII) -> VersusN:
    """Measured ACR and certified accuracy of fixed-n runs that differ only in n, with the values predicted from
    the largest-n run (003 Fig. 4's comparison, with exact expectations in place of 003's approximations).

    Args:
        results: two or more fixed-n certify files (load_results) sharing KEYS and inputs, at distinct n; one set
            of fixed_n_sets.
        radii: radii of the certified accuracy.
    """
    results = list(results)
    check(len(results) > 1 and all(isinstance(r, Results) for r in results),
          "versus_n needs two or more Results (from load_results) at different n")
    for res in results:
        check(run_kind(res) == "fixed", f"{_where(res)}: not a fixed-n smoothcert certify file (its settings columns "
                                     "and mode fixed, one value in every row)")
    for res in results[1:]:
        _comparable(res, results[0], "against n compares runs that differ only in n")
    results.sort(key=lambda r: _int(r, "n"))
    ns = tuple(_int(r, "n") for r in results)
    check(len(set(ns)) == len(ns), f"two files at the same n ({', '.join(map(str, ns))}); give one per n")
    radii = float_radii(radii)
    acr = np.array([average_certified_radius(r) for r in results])
    acc = np.array([certified_accuracy(r, radii) for r in results]).reshape(len(ns), len(radii))
    run = _run(results[-1])
    prediction = None if run is None else planning.predict(run, ns, radii)
    return VersusN(_set_name(results[0]), tuple(results), ns, radii, **frozen_arrays(acr=acr, certified_accuracy=acc),
                   prediction=prediction, run=run)


# ---- samples per input ----

@dataclass(frozen=True, eq=False)
class SamplesSummary:
    """The estimation samples per input of one file (each input also drew n0 selection samples).

    The histogram's bins are [edges[i], edges[i + 1]) on the 1-2-5 series (1, 2, 5, 10, 20, ...), from the bin
    of the fewest samples to that of the most.
    """
    name: str
    mode: str
    n_max: int | None                     # the file's n (None if not recorded)
    n0: int | None
    samples: np.ndarray                   # per input
    mean: float
    median: float
    edges: np.ndarray
    counts: np.ndarray                    # inputs per bin
    max = property(lambda self: int(self.samples.max()), doc="the most samples an input used")


def _edges(low: int, high: int) -> np.ndarray:
    """1-2-5 series from the largest value <= low to the smallest value > high."""
    series = np.array([m * 10 ** e for e in range(len(str(high)) + 1) for m in (1, 2, 5)])
    return series[np.searchsorted(series, low, side="right") - 1:np.searchsorted(series, high, side="right") + 1]


def samples_summary(res: Results) -> SamplesSummary:
    """Mean, median, most and a histogram of the estimation samples per input of a file with a samples column.

    Args:
        res: a certify file from load_results (an adaptive run's: `certify --n-max` with --max-loss or
            --target-radius; a fixed-n file's samples are all n).
    """
    check(isinstance(res, Results), f"samples_summary expects Results (from load_results), got {type(res).__name__}")
    check(res.samples is not None, f"{_where(res)}: no samples column (files of certify --n-max have one)")
    s = res.samples
    edges = _edges(int(s.min()), int(s.max()))
    return SamplesSummary(res.name, res.settings.get("mode", "unknown"), _int(res, "n"), _int(res, "n0"), s,
                          float(s.mean()), float(np.median(s)),
                          **frozen_arrays(edges=edges, counts=np.histogram(s, edges)[0]))


# ---- speed-up against the fixed-n run ----

@dataclass(frozen=True, eq=False)
class Speedup:
    """An adaptive run against the fixed-n run at its n_max, with the same settings and inputs.

    For 'target' runs radii is (r0,): the question the run decides (its radius is >= r0 exactly when it certified
    r0; larger radii it does not try for), and acr, acr_fixed are None. For 'input-n' runs radii are the table's.
    """
    adaptive: str
    fixed: str
    mode: str                             # 'target' or 'input-n'
    n: int                                # the fixed run's n = the adaptive run's n_max
    n0: int
    mean_samples: float                   # estimation samples per input of the adaptive run
    radii: tuple[float, ...]
    certified_accuracy: tuple[float, ...]         # adaptive run
    certified_accuracy_fixed: tuple[float, ...]
    acr: float | None
    acr_fixed: float | None

    @property
    def speedup(self) -> float:
        """(n0 + n) / (n0 + mean samples): all samples drawn per input, fixed over adaptive."""
        return (self.n0 + self.n) / (self.n0 + self.mean_samples)

    @property
    def speedup_estimation(self) -> float:
        """n / mean samples: the estimation samples alone."""
        return self.n / self.mean_samples

    @property
    def accuracy_difference(self) -> tuple[float, ...]:
        """Certified accuracy of the adaptive run minus the fixed run's, per radius."""
        return tuple(a - b for a, b in zip(self.certified_accuracy, self.certified_accuracy_fixed))

    @property
    def acr_difference(self) -> float | None:
        """ACR of the adaptive run minus the fixed run's (None for target runs)."""
        return None if self.acr is None else self.acr - self.acr_fixed

    @property
    def acr_relative(self) -> float | None:
        """acr_difference / acr_fixed (None for target runs or a fixed ACR of 0)."""
        return None if self.acr is None or self.acr_fixed == 0 else self.acr_difference / self.acr_fixed


def _target_radius(res: Results) -> float:
    """r0 from a target run's mode ('target:r0=0.25:futility=...'; written at full precision)."""
    parts = [p for p in res.settings["mode"].split(":") if p.startswith("r0=")]
    try:
        r0 = float(parts[0][3:])
    except (IndexError, ValueError):
        r0 = math.nan
    check(math.isfinite(r0) and r0 > 0, f"{_where(res)}: no target radius r0 in mode {res.settings['mode']!r}")
    return r0


def speedup(adaptive: Results, fixed: Results, radii=DEFAULT_RADII) -> Speedup:
    """How much fewer samples an adaptive run drew than the fixed-n run at its n_max, and what it cost.

    Args:
        adaptive: a certify file of `certify --n-max` with --max-loss (mode input-n) or --target-radius (target).
        fixed: a fixed-n certify file with the same KEYS and inputs and n = the adaptive run's n_max.
        radii: radii of the certified accuracy for an input-n run (a target run is compared at its r0).
    """
    check(isinstance(adaptive, Results) and isinstance(fixed, Results), "speedup expects two Results (load_results)")
    kind = run_kind(adaptive)
    check(kind in ADAPTIVE, f"{_where(adaptive)}: not an adaptive run (mode input-n:... or target:..., a samples "
                            "column and its settings columns)")
    check(run_kind(fixed) == "fixed", f"{_where(fixed)}: not a fixed-n smoothcert certify file")
    _comparable(adaptive, fixed, "a speed-up compares runs with the same settings and inputs")
    n = _int(adaptive, "n")
    check(_int(fixed, "n") == n, f"{_where(fixed)}: n = {_int(fixed, 'n')}, but the adaptive run's n_max is {n}")
    radii = (_target_radius(adaptive),) if kind == "target" else float_radii(radii)
    acr = (None, None) if kind == "target" else (average_certified_radius(adaptive), average_certified_radius(fixed))
    return Speedup(adaptive.name, fixed.name, kind, n, _int(adaptive, "n0"), float(adaptive.samples.mean()), radii,
                   tuple(certified_accuracy(adaptive, radii).tolist()),
                   tuple(certified_accuracy(fixed, radii).tolist()), *acr)


def matching_fixed(adaptive: Results, results: Sequence[Results]) -> Results | None:
    """The first fixed-n file in results that speedup can compare the adaptive file with, or None."""
    if run_kind(adaptive) not in ADAPTIVE:
        return None
    return next((r for r in results if run_kind(r) == "fixed" and _key(r) == _key(adaptive)
                 and _int(r, "n") == _int(adaptive, "n") and _same_inputs(r, adaptive)), None)


# ---- all of it, as analyze prints it ----
