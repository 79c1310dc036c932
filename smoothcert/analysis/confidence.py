"""Certified-confidence files (`smoothcert confidence`): reading them, and their table and figure."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import SmoothcertError, check
from ..noises.record import is_float_sound
from .figures import curve_colour, save_figure
from .metrics import DEFAULT_RADII, check_radii
from .reading import frozen_arrays, one_setting, parse_number, validate_rows
from .tables import FORMATS, percent, render_table

@dataclass(frozen=True, eq=False)
class ConfidenceResults:
    """A `smoothcert confidence` file: per input, for each threshold c, the CDF and baseline certified radii."""
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    correct: np.ndarray
    thresholds: tuple[float, ...]
    cdf: np.ndarray             # (N, C)
    baseline: np.ndarray        # (N, C)
    mean_measure: np.ndarray    # (N,) the measure's sample mean
    measure: str
    alpha: float
    name: str
    path: str


def is_confidence_file(path) -> bool:
    """Whether the file's header is a certified-confidence file's (smoothcert confidence)."""
    try:
        with open(os.fspath(path), "rb") as f:
            header = f.readline().decode("utf-8", "replace").rstrip("\r\n").split("\t")
    except OSError as e:
        raise SmoothcertError(f"{path}: cannot read results file ({e.__class__.__name__}: {e})") from None
    return "histogram" in header and any(h.startswith("cdf@") for h in header)


def _at(where: str, fn, *args):
    """fn(*args), its SmoothcertError prefixed with where (a file and line)."""
    try:
        return fn(*args)
    except SmoothcertError as e:
        raise SmoothcertError(f"{where}: {e}") from None


def load_confidence(path, *, allow_duplicates: bool = False) -> ConfidenceResults:
    """Read a certified-confidence file, checking every row as resuming and recertify do
    (`files.rows.check_confidence_row`; one-line errors naming the line)."""
    from ..certificates.confidence import check_thresholds
    from ..files.columns import CONFIDENCE_FIRST, CONFIDENCE_LAST
    from ..files.rows import check_confidence_row, parse_int, read_table
    path = os.fspath(path)
    table = read_table(path, CONFIDENCE_FIRST + CONFIDENCE_LAST)
    check(table, f"{path}: no result rows after the header")
    rows, lines = [row for _, row in table], [line for line, _ in table]
    head = f"{path}, line 1"
    columns = [h for h in rows[0] if h.startswith("cdf@")]        # the header's own text: cdf@0.50 stays cdf@0.50
    check(columns, f"{head}: no cdf@c columns (one cdf@c and one baseline@c per threshold c)")
    for h in rows[0]:
        kind, _, c = h.partition("@")
        other = {"cdf": "baseline", "baseline": "cdf"}.get(kind)
        check(other is None or f"{other}@{c}" in rows[0], f"{head}: column {h} has no {other}@{c} beside it "
                                                            "(one cdf@c and one baseline@c per threshold c)")
    checked = [check_confidence_row(path, line, row) for line, row in table]
    one_setting(path, rows, lines, ("noise", "scale", "measure", "alpha", "n0", "n"))
    first = checked[0]
    thresholds = tuple(parse_number(h[4:], head, h, integer=False) for h in columns)
    _at(head, check_thresholds, thresholds, first.measure)
    cols = {c: np.zeros(len(table), np.int64) for c in ("idx", "label", "predict", "correct")}
    for i, (line, row) in enumerate(table):
        for c in cols:
            cols[c][i] = parse_int(row[c], f"{path}, line {line}", c, -1 if c == "predict" else 0,
                                   1 if c == "correct" else 2 ** 62)
    cdf = np.array([[float(row[h]) for h in columns] for row in rows])                     # checked above
    base = np.array([[float(row["baseline" + h[3:]]) for h in columns] for row in rows])
    mean = np.array([info.measure_sum / info.n for info in checked])
    validate_rows(cols["idx"], cols["label"], cols["predict"], None, cols["correct"],
               lambda i: f"{path}, line {table[i][0]}", allow_duplicates)
    return ConfidenceResults(**frozen_arrays(**cols, cdf=cdf, baseline=base, mean_measure=mean), thresholds=thresholds,
                             measure=first.measure, alpha=first.alpha, name=f"{first.measure} σ={first.scale:.4g}"
                             + (" float-sound" if is_float_sound(rows[0]["noise"]) else ""),
                             path=path)


def confidence_table(results: Sequence[ConfidenceResults], radii=DEFAULT_RADII, fmt: str = "text") -> str:
    """Certified accuracy (%) at each radius for each threshold, CDF (001 Thm 2) beside baseline (Thm 1): an input
    counts at r when its class is right and the certificate keeps the expected measure above c within r."""
    check(fmt in FORMATS, f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    radii = [float(r) for r in np.atleast_1d(check_radii(radii))]
    header = ["name", "c", "certificate", "N"] + [f"r={r:g}" for r in radii] + ["average radius"]
    rows, bold = [], []
    for res in results:
        for j, c in enumerate(res.thresholds):
            pair = []
            for kind, radius in (("cdf", res.cdf[:, j]), ("baseline", res.baseline[:, j])):
                ok = res.correct == 1
                acc = [float(np.mean(ok & (radius >= r) & (radius > 0))) for r in radii]
                pair.append(([res.name, f"{c:g}", kind, str(len(ok))] + [percent(a) for a in acc]
                             + [f"{float(np.mean(radius * ok)):.3f}"], acc))
            for (row, acc), (_, other) in zip(pair, pair[::-1]):
                rows.append(row)
                bold.append([False] * 4 + [a > b for a, b in zip(acc, other)] + [False])
    lines = render_table(header, rows, bold, fmt)
    note = ("(certified accuracy in %: right class and E[measure] certified > c within r; cdf = Kumar et al. "
            "Thm 2 with a one-sided DKW band, baseline = Thm 1 with Hoeffding; bold where one beats the other)")
    return "\n".join(lines + ["% " + note if fmt == "latex" else note])


def confidence_figure(results: Sequence[ConfidenceResults], max_radius: float | None = None,
                      title: str | None = None):
    """001 Fig. 5 and Fig. 3 side by side, as a matplotlib Figure (not yet saved): certified accuracy against
    radius per threshold (CDF solid, baseline dashed), and each input's mean measure against its CDF radius per
    threshold."""
    from matplotlib.figure import Figure
    top = max(float(max(r.cdf.max(), r.baseline.max())) for r in results)
    xmax = (top * 1.05 if top > 0 else 1.0) if max_radius is None else max_radius
    check(math.isfinite(xmax) and xmax > 0, f"bad max_radius {max_radius!r}")
    fig = Figure(figsize=(11, 4), dpi=120, layout="constrained")
    acc_ax, scatter_ax = fig.subplots(1, 2)
    k = 0
    for res in results:
        for j, c in enumerate(res.thresholds):
            colour = curve_colour(k)
            k += 1
            for radius, style, kind in ((res.cdf[:, j], "-", "CDF"), (res.baseline[:, j], "--", "baseline")):
                grid = np.union1d(np.linspace(0, xmax, 400), radius[radius <= xmax])
                hit = (res.correct[None, :] == 1) & (radius[None, :] >= grid[:, None]) & (radius[None, :] > 0)
                acc_ax.step(grid, hit.mean(axis=1), where="pre", color=colour, linestyle=style,
                            label=f"{res.name} c={c:g} {kind}" if len(results) > 1 else f"c={c:g} {kind}")
            scatter_ax.scatter(res.mean_measure, res.cdf[:, j], s=6, color=colour, alpha=0.6, label=f"c={c:g}")
    acc_ax.set(xlim=(0, xmax), ylim=(0, 1), xlabel="ℓ2 radius", ylabel="certified accuracy", title=title)
    scatter_ax.set(xlabel=f"mean {results[0].measure} of the predicted class (n samples)",
                   ylabel="CDF certified radius", title="prediction score vs certified radius")
    for ax in (acc_ax, scatter_ax):
        ax.grid(True, alpha=0.4)
        ax.legend(fontsize=7)
    return fig


def plot_confidence(results: Sequence[ConfidenceResults], out, max_radius: float | None = None,
                    title: str | None = None) -> str:
    """Draw confidence_figure and write it atomically to `out`, in the format its extension names; return the
    path."""
    return save_figure(lambda: confidence_figure(results, max_radius, title), out)
