"""Sample efficiency in `analyze` (issue 8): results against n, samples used per input, speed-ups of adaptive runs.

Pure functions of loaded certify files (analysis.load_results), nothing is sampled:
- `fixed_n_sets` finds fixed-n files that differ only in n (the files of `certify --n 100,1000,...`, or separate
  runs); `versus_n` gives a set's measured ACR and certified accuracy against n beside their prediction from the
  set's largest-n file (planning.predict: each input at its plug-in pA, exact binomial sums), as 003 Fig. 4.
- `samples_summary`: the estimation samples per input of an adaptive file (`certify --n-max` with `--max-loss` or
  `--target-radius`), with a histogram on log-spaced bins.
- `speedup`: an adaptive file against the fixed-n file at its n_max with the same settings and inputs.
`report` applies all three to a list of files (what `smoothcert analyze` prints); `plot_versus_n` and
`plot_samples` draw them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from . import planning
from .analysis import (DEFAULT_RADII, FORMATS, LINE_STYLES, Results, _colour, _display_names, _frozen, _percent,
                       _radii, _render, _save_figure, average_certified_radius, certified_accuracy)
from .errors import SmoothcertError, check

__all__ = ["ADAPTIVE", "KEYS", "Efficiency", "SamplesSummary", "Speedup", "VersusN", "fixed_n_sets", "matching_fixed",
           "plot_samples", "plot_versus_n", "report", "samples_figure", "samples_summary", "speedup",
           "versus_n", "versus_n_figure"]

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


def _kind(res: Results) -> str | None:
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


def _float_radii(radii) -> tuple[float, ...]:
    radii = tuple(float(r) for r in np.atleast_1d(_radii(radii)))
    check(radii, "give at least one radius")
    return radii


# ---- against n ----

def fixed_n_sets(results: Sequence[Results]) -> list[tuple[Results, ...]]:
    """Fixed-n certify files that agree in every setting but n (KEYS) and hold the same inputs: one tuple per
    set, ordered by n, only sets of two or more n. A second file at an n already in its set is left out (the same
    file given twice); files without smoothcert's settings columns (Cohen et al.'s) are never in a set."""
    sets: list[list[Results]] = []
    for res in results:
        if _kind(res) != "fixed":
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
    (cohen, teng-binary, gaussian-l1) or n beyond planning.MAX_N. run is that file's planning.Run (predict at other n
    with planning.predict(run, ns, radii)).
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
    symbol = {"gaussian": "σ", "laplace": "λ"}.get(s["noise"], "scale")
    return f"{s['certificate']} {symbol}={s['scale']} {s['norm']}, n0={s['n0']}, alpha={s['alpha']}, seed={s['seed']}"


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
        check(_kind(res) == "fixed", f"{_where(res)}: not a fixed-n smoothcert certify file (its settings columns "
                                     "and mode fixed, one value in every row)")
    for res in results[1:]:
        _comparable(res, results[0], "against n compares runs that differ only in n")
    results.sort(key=lambda r: _int(r, "n"))
    ns = tuple(_int(r, "n") for r in results)
    check(len(set(ns)) == len(ns), f"two files at the same n ({', '.join(map(str, ns))}); give one per n")
    radii = _float_radii(radii)
    acr = np.array([average_certified_radius(r) for r in results])
    acc = np.array([certified_accuracy(r, radii) for r in results]).reshape(len(ns), len(radii))
    run = _run(results[-1])
    prediction = None if run is None else planning.predict(run, ns, radii)
    return VersusN(_set_name(results[0]), tuple(results), ns, radii, **_frozen(acr=acr, certified_accuracy=acc),
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
                          **_frozen(edges=edges, counts=np.histogram(s, edges)[0]))


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
    kind = _kind(adaptive)
    check(kind in ADAPTIVE, f"{_where(adaptive)}: not an adaptive run (mode input-n:... or target:..., a samples "
                            "column and its settings columns)")
    check(_kind(fixed) == "fixed", f"{_where(fixed)}: not a fixed-n smoothcert certify file")
    _comparable(adaptive, fixed, "a speed-up compares runs with the same settings and inputs")
    n = _int(adaptive, "n")
    check(_int(fixed, "n") == n, f"{_where(fixed)}: n = {_int(fixed, 'n')}, but the adaptive run's n_max is {n}")
    radii = (_target_radius(adaptive),) if kind == "target" else _float_radii(radii)
    acr = (None, None) if kind == "target" else (average_certified_radius(adaptive), average_certified_radius(fixed))
    return Speedup(adaptive.name, fixed.name, kind, n, _int(adaptive, "n0"), float(adaptive.samples.mean()), radii,
                   tuple(certified_accuracy(adaptive, radii).tolist()),
                   tuple(certified_accuracy(fixed, radii).tolist()), *acr)


def matching_fixed(adaptive: Results, results: Sequence[Results]) -> Results | None:
    """The first fixed-n file in results that speedup can compare the adaptive file with, or None."""
    if _kind(adaptive) not in ADAPTIVE:
        return None
    return next((r for r in results if _kind(r) == "fixed" and _key(r) == _key(adaptive)
                 and _int(r, "n") == _int(adaptive, "n") and _same_inputs(r, adaptive)), None)


# ---- all of it, as analyze prints it ----

@dataclass(frozen=True, eq=False)
class Efficiency:
    """What `analyze` shows on sample efficiency for a list of files; str() (or format) is that text."""
    sets: tuple[VersusN, ...]
    samples: tuple[SamplesSummary, ...]
    speedups: tuple[Speedup, ...]
    unmatched: tuple[str, ...]            # adaptive files without a fixed-n file to compare with

    def format(self, fmt: str = "text") -> str:
        """The tables in text, markdown or latex ('' when none of the files is of these kinds)."""
        check(fmt in FORMATS, f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
        blocks = [_format_versus_n(v, fmt) for v in self.sets] + [_format_samples(s, fmt) for s in self.samples]
        blocks += [_format_speedups([s for s in self.speedups if s.mode == kind], fmt) for kind in ADAPTIVE]
        if self.unmatched:
            blocks.append(_note(f"no speed-up for {', '.join(self.unmatched)}: no fixed-n file among the inputs "
                                f"with the same settings ({', '.join(KEYS)}), inputs and n = its n_max", fmt))
        return "\n\n".join(b for b in blocks if b)

    __str__ = format


def report(results: Sequence[Results], radii=DEFAULT_RADII) -> Efficiency:
    """Every set of fixed-n files against n, the samples of every adaptive file and its speed-up where a fixed-n
    file matches it; files are named as in analyze's table.

    Args:
        results: loaded files (load_results); files of other kinds are passed over.
        radii: radii of the certified accuracy.
    """
    results = list(results)
    check(all(isinstance(r, Results) for r in results), "report expects Results (from load_results)")
    results = [replace(r, name=name) for r, name in zip(results, _display_names(results))]
    radii = _float_radii(radii)
    adaptive = [r for r in results if _kind(r) in ADAPTIVE]
    pairs = [(a, matching_fixed(a, results)) for a in adaptive]
    return Efficiency(tuple(versus_n(s, radii) for s in fixed_n_sets(results)),
                      tuple(samples_summary(a) for a in adaptive),
                      tuple(speedup(a, f, radii) for a, f in pairs if f is not None),
                      tuple(a.name for a, f in pairs if f is None))


def _note(text: str, fmt: str) -> str:
    return "% " + text if fmt == "latex" else text


def _titled(title: str, table: list[str], fmt: str) -> str:
    return "\n".join([title] + ([""] if fmt == "markdown" else []) + table)   # markdown: a table starts a block


def _format_versus_n(v: VersusN, fmt: str) -> str:
    p = v.prediction
    header = ["n", "ACR", "pred."] + [h for r in v.radii for h in (f"r={r:g}", "pred.")]
    rows = [[str(n), f"{v.acr[i]:.3f}", "" if p is None else f"{p.acr[i]:.3f}"]
            + [c for j in range(len(v.radii)) for c in (_percent(v.certified_accuracy[i, j]),
                                                         "" if p is None else _percent(p.certified_accuracy[i, j]))]
            for i, n in enumerate(v.ns)]
    why = (f"pred.: expected at n from the n = {v.ns[-1]} file, each input at its plug-in pA (planning.predict)"
           if p is not None else "no prediction: planning predicts the one-sided certificates (cohen, teng-binary, "
                                 "gaussian-l1) up to n = 1,000,000")
    title = _note(f"against n: {v.name} ({v.results[0].n} inputs; certified accuracy in %; {why})", fmt)
    return _titled(title, _render(header, rows, [[False] * len(header)] * len(rows), fmt), fmt)


def _format_samples(s: SamplesSummary, fmt: str) -> str:
    n_max = "" if s.n_max is None else f" of n_max {s.n_max}"
    n0 = "" if s.n0 is None else f"; each input also drew n0 = {s.n0} selection samples"
    lines = [f"samples per input: {s.name} ({s.mode}, {len(s.samples)} inputs): mean {s.mean:.1f}, median "
             f"{s.median:g}, max {s.max}{n_max}{n0}"]
    width, top = max(len(f"[{a}, {b})") for a, b in zip(s.edges, s.edges[1:])), max(int(s.counts.max()), 1)
    for a, b, k in zip(s.edges.tolist(), s.edges[1:].tolist(), s.counts.tolist()):
        lines.append(f"  {f'[{a}, {b})':<{width}}  {k:>{len(str(top))}}  {_percent(k / len(s.samples)):>5}%  "
                     f"{'#' * round(40 * k / top)}".rstrip())
    if fmt == "latex":
        return "\n".join(_note(line, fmt) for line in lines)
    return "\n".join(lines[:1] + (["```"] + lines[1:] + ["```"] if fmt == "markdown" else lines[1:]))


def _format_speedups(speedups: list[Speedup], fmt: str) -> str:
    if not speedups:
        return ""
    common = ["adaptive", "fixed", "n", "mean samples", "speed-up", "w/o n0"]
    row = lambda s: [s.adaptive, s.fixed, str(s.n), f"{s.mean_samples:.1f}", f"{s.speedup:.2f}x",
                     f"{s.speedup_estimation:.2f}x"]
    if speedups[0].mode == "target":
        header = common + ["r0", "cert. acc", "fixed", "diff"]
        rows = [row(s) + [f"{s.radii[0]:g}", _percent(s.certified_accuracy[0]),
                          _percent(s.certified_accuracy_fixed[0]), f"{s.accuracy_difference[0] * 100:+.1f}"]
                for s in speedups]
        what = "certified accuracy (%) at the target radius r0"
    else:
        radii = speedups[0].radii
        check(all(s.radii == radii for s in speedups), "speed-ups in one table need the same radii")
        header = common + ["ACR", "fixed", "diff", "rel."] + [f"r={r:g}" for r in radii]
        rows = [row(s) + [f"{s.acr:.3f}", f"{s.acr_fixed:.3f}", f"{s.acr_difference:+.3f}",
                          "" if s.acr_relative is None else f"{s.acr_relative * 100:+.1f}%"]
                + [f"{_percent(a)} ({d * 100:+.1f})" for a, d in zip(s.certified_accuracy, s.accuracy_difference)]
                for s in speedups]
        what = "ACR and certified accuracy (%; in brackets: minus the fixed run's)"
    title = _note(f"speed-up of {speedups[0].mode} runs against fixed n = n_max (speed-up = (n0 + n) / (n0 + mean "
                  f"samples); w/o n0: n / mean samples); {what}", fmt)
    return _titled(title, _render(header, rows, [[False] * len(header)] * len(rows), fmt), fmt)


# ---- plots ----

def versus_n_figure(sets: Sequence[VersusN], radius: float | None = None, title: str | None = None):
    """ACR and certified accuracy at one radius against n (log axis): measured as markers, predicted as lines
    (planning.predict on 20 log-spaced n up to the largest-n file's), as a matplotlib Figure (not yet saved).

    Args:
        sets: from versus_n.
        radius: the certified accuracy's radius (default: the first set's first positive radius, else 0).
        title: the figure's title.
    """
    sets = list(sets)
    check(sets and all(isinstance(v, VersusN) for v in sets), "expected a non-empty list of VersusN (versus_n)")
    r = float(_radii(next((r for r in sets[0].radii if r > 0), 0.0) if radius is None else radius, "radius"))
    from matplotlib.figure import Figure    # lazy; a bare Figure (no pyplot state) needs no display
    fig = Figure(figsize=(10, 4), dpi=120, layout="constrained")
    ax_acr, ax_acc = fig.subplots(1, 2)
    for i, v in enumerate(sets):
        colour = _colour(i)
        measured = [float(certified_accuracy(res, r)) for res in v.results]
        for ax, y in ((ax_acr, v.acr), (ax_acc, measured)):
            ax.plot(v.ns, y, "o", color=colour, label=f"{v.name}: measured")
        if v.run is not None:
            # 20 points make a smooth curve on a log axis; each costs one binomial sum per input
            grid = sorted({int(n) for n in np.round(np.geomspace(v.ns[0], v.ns[-1], 20))} | set(v.ns))
            p = planning.predict(v.run, grid, [r])
            for ax, y in ((ax_acr, p.acr), (ax_acc, p.certified_accuracy[:, 0])):
                ax.plot(grid, y, "-", color=colour, label=f"{v.name}: predicted from n = {v.ns[-1]}")
    ax_acr.set(xscale="log", xlabel="n (estimation samples)", ylabel="average certified radius", ylim=(0, None))
    ax_acc.set(xscale="log", xlabel="n (estimation samples)", ylabel=f"certified accuracy at r = {r:g}",
               ylim=(0, 1))
    for ax in (ax_acr, ax_acc):
        ax.grid(True, which="both", alpha=0.3)
    ax_acc.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def samples_figure(summaries: Sequence[SamplesSummary], title: str | None = None):
    """Histograms of the estimation samples per input (log axis, shared bins, % of each file's inputs), as a
    matplotlib Figure (not yet saved).

    Args:
        summaries: from samples_summary.
        title: the figure's title.
    """
    summaries = list(summaries)
    check(summaries and all(isinstance(s, SamplesSummary) for s in summaries),
          "expected a non-empty list of SamplesSummary (samples_summary)")
    low = min(int(s.samples.min()) for s in summaries)
    high = max(int(s.samples.max()) for s in summaries) + 1
    bins = np.geomspace(low, high, max(10, math.ceil(10 * math.log10(high / low))) + 1)   # ~10 bins a decade
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for i, s in enumerate(summaries):
        ax.hist(s.samples, bins=bins, weights=np.full(len(s.samples), 100 / len(s.samples)), histtype="step",
                color=_colour(i), linestyle=LINE_STYLES[i % len(LINE_STYLES)], linewidth=1.6,
                label=f"{s.name} (mean {s.mean:.0f})")
    ax.set(xscale="log", xlabel="estimation samples per input", ylabel="inputs (%)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_versus_n(sets: Sequence[VersusN], out, radius: float | None = None, title: str | None = None) -> str:
    """Draw versus_n_figure and write it atomically to `out` (.png .pdf .svg .eps .ps, from the extension).

    Args:
        sets: from versus_n.
        out: the file (checked as analysis.output_target does).
        radius: the certified accuracy's radius (default: the first positive radius).
        title: the figure's title.
    """
    return _save_figure(lambda: versus_n_figure(sets, radius, title), out)


def plot_samples(summaries: Sequence[SamplesSummary], out, title: str | None = None) -> str:
    """Draw samples_figure and write it atomically to `out` (.png .pdf .svg .eps .ps, from the extension).

    Args:
        summaries: from samples_summary.
        out: the file (checked as analysis.output_target does).
        title: the figure's title.
    """
    return _save_figure(lambda: samples_figure(summaries, title), out)
