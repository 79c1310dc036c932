"""Figures: certified accuracy against radius, one curve per run, in colours and line styles that stay apart in print."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from ..errors import check
from ..noises import norms
from .metrics import certified_accuracy, check_certify
from .reading import Results
from .tables import display_names, output_target, write_atomic

PLOT_FORMATS = ("png", "pdf", "svg", "eps", "ps")


def save_figure(figure, out) -> str:
    """Check `out` (output_target) before anything is drawn, draw figure() (a matplotlib Figure) and write it
    atomically in the format its extension names; return the path."""
    target, fmt = output_target(out, PLOT_FORMATS, "plot")
    fig = figure()
    write_atomic(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120), "plot")
    return os.fspath(out)


LINE_STYLES = ("-", "--", "-.", ":")     # curves on top of each other stay apart in print and grey scale


def curve_colour(i: int) -> str:
    """The i-th colour of matplotlib's colour cycle, repeating."""
    import matplotlib                       # lazy; a bare Figure (no pyplot state) needs no display
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    return colours[i % len(colours)]




def plot_figure(results_list: Sequence[Results], max_radius: float | None = None, title: str | None = None):
    """Certified accuracy vs radius for certify results on one axis, as a matplotlib Figure (not yet saved).

    Args:
        results_list: certify Results of one norm (l1 and l2 curves on one axis are refused).
        max_radius: the x axis's end (default: just past the largest radius).
        title: the figure's title.
    """
    results_list = list(results_list)
    check(results_list and all(isinstance(r, Results) for r in results_list),
          "expected a non-empty list of Results (from load_results)")
    for res in results_list:
        check_certify(res, "plot")
    names = sorted({r.norm for r in results_list} - {None})
    check(len({norms.kind(name) for name in names}) <= 1, f"cannot overlay {' and '.join(names)} radii on one axis; "
                                                          "plot each norm separately")
    top = max(float(res.radius.max()) for res in results_list)
    xmax = (top * 1.05 if top > 0 else 1.0) if max_radius is None else max_radius
    check(isinstance(xmax, (int, float)) and math.isfinite(xmax) and xmax > 0, f"bad max_radius {max_radius!r}")
    from matplotlib.figure import Figure    # lazy; a bare Figure (no pyplot state) needs no display
    fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for i, (name, res) in enumerate(zip(display_names(results_list), results_list)):
        grid = np.union1d(np.linspace(0, xmax, 500), res.radius[res.radius <= xmax])
        # the curve is left-continuous (drops just after each radius); 'pre' steps draw it exactly on this grid
        ax.step(grid, certified_accuracy(res, grid), where="pre", label=name, color=curve_colour(i),
                linestyle=LINE_STYLES[i % len(LINE_STYLES)], linewidth=1.6)
    axis = names[0] if len(names) == 1 else norms.LINF if names else None    # l-inf of several D: no D named
    ax.set(xlim=(0, xmax), ylim=(0, 1), xlabel=norms.label(axis), ylabel="certified accuracy", title=title)
    ax.grid(True, alpha=0.4)
    ax.legend()
    return fig


def plot_certified_accuracy(results_list: Sequence[Results], out, max_radius: float | None = None,
                            title: str | None = None) -> str:
    """Draw plot_figure and write it atomically to `out`, in the format its extension names; return the path.

    Args:
        results_list: certify Results of one norm.
        out: the file: .png, .pdf, .svg, .eps or .ps (a symlink to a file is written through; a directory, or a
            link to one, is refused).
        max_radius: the x axis's end (default: just past the largest radius).
        title: the figure's title.
    """
    return save_figure(lambda: plot_figure(results_list, max_radius, title), out)
