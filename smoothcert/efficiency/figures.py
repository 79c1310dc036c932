"""Sample efficiency, the figures: results against n beside their prediction, and the samples per input."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .. import planning
from ..analysis.figures import LINE_STYLES, curve_colour, save_figure
from ..analysis.metrics import certified_accuracy, check_radii
from ..errors import check
from .compare import SamplesSummary, VersusN

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
    r = float(check_radii(next((r for r in sets[0].radii if r > 0), 0.0) if radius is None else radius, "radius"))
    from matplotlib.figure import Figure    # lazy; a bare Figure (no pyplot state) needs no display
    fig = Figure(figsize=(10, 4), dpi=120, layout="constrained")
    ax_acr, ax_acc = fig.subplots(1, 2)
    for i, v in enumerate(sets):
        colour = curve_colour(i)
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
                color=curve_colour(i), linestyle=LINE_STYLES[i % len(LINE_STYLES)], linewidth=1.6,
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
    return save_figure(lambda: versus_n_figure(sets, radius, title), out)


def plot_samples(summaries: Sequence[SamplesSummary], out, title: str | None = None) -> str:
    """Draw samples_figure and write it atomically to `out` (.png .pdf .svg .eps .ps, from the extension).

    Args:
        summaries: from samples_summary.
        out: the file (checked as analysis.output_target does).
        title: the figure's title.
    """
    return save_figure(lambda: samples_figure(summaries, title), out)
