"""Analyse certification results: TSV files in Cohen et al. 2019's format, plus smoothcert's extra columns if any."""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import binom

from .bounds import clopper_pearson_lower, clopper_pearson_upper
from .errors import SmoothcertError, check

REQUIRED = ("idx", "label", "predict", "radius", "correct")


@dataclass(frozen=True, eq=False)
class Results:
    """One results file: per-input arrays (read-only), the certificates' alpha if known, and a display name."""
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    radius: np.ndarray
    correct: np.ndarray
    alpha: float | None
    name: str
    path: str
    n = property(lambda self: len(self.radius), doc="number of inputs (rows)")


def _number(text: str, where: str, column: str, integer: bool) -> float:
    """Parse one cell, raising SmoothcertError naming the file, line and column."""
    try:
        value = float(text)
    except ValueError:
        raise SmoothcertError(f"{where}: column {column!r} is not a number: {text!r}") from None
    check(not math.isnan(value), f"{where}: column {column!r} is NaN")
    check(not integer or (math.isfinite(value) and value == int(value)),
          f"{where}: column {column!r} must be an integer, got {text!r}")
    return value


def _constant(rows: list[dict], column: str) -> str | None:
    """The column's single value over all rows, or None if absent or varying."""
    values = {row[column].strip() for row in rows} if column in rows[0] else set()
    return values.pop() if len(values) == 1 else None


def load_results(path) -> Results:
    """Read a results TSV, validating every row; raise SmoothcertError naming the file (and line) if bad."""
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t")
            header = [h.strip() for h in next(reader, [])]
            check(any(header), f"{path}: empty file (expected a header line)")
            missing = [c for c in REQUIRED if c not in header]
            check(not missing, f"{path}: missing column(s) {', '.join(missing)} in header")
            check(len(set(header)) == len(header), f"{path}: duplicate column names in header")
            rows, lines = [], []
            for cells in filter(lambda cells: any(c.strip() for c in cells), reader):    # skip blank lines
                check(len(cells) == len(header), f"{path}, line {reader.line_num}: expected {len(header)} fields")
                rows.append(dict(zip(header, cells)))
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SmoothcertError(f"{path}: cannot read results file ({e.__class__.__name__}: {e})") from None
    check(rows, f"{path}: no result rows after the header")
    cols = {c: np.empty(len(rows)) for c in REQUIRED}
    alphas = []
    for i, (row, line) in enumerate(zip(rows, lines)):
        where = f"{path}, line {line}"
        for c in REQUIRED:
            cols[c][i] = _number(row[c], where, c, integer=c != "radius")
        check(math.isfinite(cols["radius"][i]) and cols["radius"][i] >= 0,
              f"{where}: radius must be finite and >= 0, got {row['radius']!r}")
        check(cols["correct"][i] in (0, 1), f"{where}: correct must be 0 or 1, got {row['correct']!r}")
        check(cols["label"][i] >= 0 and cols["predict"][i] >= -1,
              f"{where}: label must be >= 0 and predict >= -1 (abstain)")
        if "alpha" in row:
            alphas.append(_number(row["alpha"], where, "alpha", integer=False))
            check(0 < alphas[-1] < 1, f"{where}: alpha must be in (0, 1), got {row['alpha']!r}")
    alpha = max(alphas) if alphas else None    # the largest if it varies: keeps the interval's correction valid
    scale = _constant(rows, "scale")
    symbol = {"gaussian": "σ", "laplace": "λ"}.get(_constant(rows, "noise"), "scale")
    scale = scale and f"{symbol}={float(scale):.4g}"
    parts = [p for p in (_constant(rows, "certificate"), scale, _constant(rows, "norm")) if p]  # "cohen σ=0.25 l2"
    arrays = {c: cols[c].astype(float if c == "radius" else np.int64) for c in REQUIRED}
    for a in arrays.values():
        a.flags.writeable = False
    return Results(**arrays, alpha=alpha, name=" ".join(parts) or Path(path).stem, path=path)


def _radii(radii) -> np.ndarray:
    """The radii as a float array, checked finite."""
    try:
        r = np.asarray(radii, dtype=float)
    except (TypeError, ValueError):
        r = np.array(np.nan)
    check(bool(np.all(np.isfinite(r))), f"radii must be finite numbers, got {radii!r}")
    return r


def certified_accuracy(res: Results, radii) -> np.ndarray:
    """Fraction of inputs classified correctly with certified radius >= r, for each r in radii."""
    r = _radii(radii)
    # Cohen et al. 2019 §4: approximate certified accuracy = mean of (correct & radius >= r)
    hit = (res.correct[None, :] == 1) & (res.radius[None, :] >= r.reshape(-1, 1))
    return hit.mean(axis=1).reshape(r.shape)


def average_certified_radius(res: Results) -> float:
    """Average certified radius: mean of radius * correct over all inputs (0 when wrong or abstaining)."""
    return float(np.mean(res.radius * res.correct))        # ACR, Zhai et al. 2020 (MACER)


def abstain_rate(res: Results) -> float:
    """Fraction of inputs on which the smoothed classifier abstained (predict == -1)."""
    return float(np.mean(res.predict == -1))


def certified_accuracy_interval(res: Results, r: float, confidence: float = 0.95) -> tuple[float, float]:
    """A level-`confidence` interval (low, high) for the population certified accuracy at r from N i.i.d. test inputs.

    k of N certified-correct at r, miss = 1 - confidence, CP = one-sided Clopper-Pearson. high = CP_upper(k, N, miss/2)
    bounds p_cert = P(an input is certified-correct at r). Each certificate is wrong w.p. <= alpha, independently, so
    the number W of wrong ones is stochastically below Binomial(N, alpha): W <= q = binom.ppf(1 - miss/4, N, alpha)
    w.p. >= 1 - miss/4, and then >= k - q inputs are truly robust-correct. CP_lower is monotone in k, so
    low = CP_lower(k - q, N, miss/4) bounds the true certified accuracy (and p_cert) but w.p. <= miss/4 + miss/4;
    union bound: total miss <= 1 - confidence. If res.alpha is None (Cohen's 6-column files) the correction is
    skipped: low = CP_lower(k, N, miss/2), a bound on p_cert that ignores wrong certificates.
    """
    check(isinstance(confidence, (int, float)) and 0 < confidence < 1, f"confidence must be in (0, 1): {confidence!r}")
    check(_radii(r).ndim == 0, f"radius must be a single number, got {r!r}")
    r, n, miss = float(r), res.n, 1.0 - confidence
    k = int(np.sum((res.correct == 1) & (res.radius >= r)))    # certified-correct inputs at r
    high = float(clopper_pearson_upper(k, n, miss / 2))
    q, level = (0, miss / 2) if res.alpha is None else (int(binom.ppf(1 - miss / 4, n, res.alpha)), miss / 4)
    low = float(clopper_pearson_lower(max(k - q, 0), n, level))    # q >= #wrong certificates w.p. 1 - miss/4
    return float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))


def _named(results_list: Sequence[Results]) -> list[tuple[str, Results]]:
    """Check for a non-empty list of Results; pair each with its name (plus file stem where names clash)."""
    results_list = list(results_list)
    check(results_list and all(isinstance(r, Results) for r in results_list),
          "expected a non-empty list of Results (from load_results)")
    names = [res.name for res in results_list]
    return [(f"{n} ({Path(r.path).stem})" if names.count(n) > 1 else n, r) for n, r in zip(names, results_list)]


def summary_table(results_list: Sequence[Results], radii) -> str:
    """A fixed-width text table: N, acc@0, certified accuracy (%) at each radius, ACR, abstain %, 95% interval."""
    named = _named(results_list)
    radii = [float(r) for r in np.atleast_1d(_radii(radii))]
    r_ci = next((r for r in radii if r > 0), 0.0)
    header = ["name", "N", "acc@0"] + [f"r={r:g}" for r in radii] + ["ACR", "abstain", f"95% CI@r={r_ci:g}"]
    rows = []
    for name, res in named:
        acc = certified_accuracy(res, [0.0] + radii) * 100
        lo, hi = certified_accuracy_interval(res, r_ci, 0.95)
        rows.append([name, str(res.n)] + [f"{a:.1f}" for a in acc] + [f"{average_certified_radius(res):.3f}",
                     f"{abstain_rate(res) * 100:.1f}", f"[{lo * 100:.1f}, {hi * 100:.1f}]"])
    widths = [max(len(row[j]) for row in [header] + rows) for j in range(len(header))]
    fmt = lambda row: "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths)))
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(row) for row in rows]
    return "\n".join(lines) + "\n(accuracies and abstain in %; CI: Clopper-Pearson, corrected for alpha if known)"


def plot_certified_accuracy(results_list: Sequence[Results], out_png, max_radius: float | None = None,
                            title: str | None = None) -> str:
    """Plot certified accuracy vs radius for each results file on one figure and save it as a PNG atomically."""
    from matplotlib.figure import Figure  # lazy; a bare Figure (no pyplot state) saves PNGs with the Agg backend
    named, out_png = _named(results_list), os.fspath(out_png)
    top = max(float(res.radius.max()) for _, res in named)
    xmax = (top * 1.05 if top > 0 else 1.0) if max_radius is None else max_radius
    check(isinstance(xmax, (int, float)) and math.isfinite(xmax) and xmax > 0, f"bad max_radius {max_radius!r}")
    directory = os.path.dirname(os.path.abspath(out_png))
    check(os.path.isdir(directory), f"{out_png}: output directory {directory} does not exist")
    fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for name, res in named:
        grid = np.union1d(np.linspace(0, xmax, 500), res.radius[res.radius <= xmax])
        # the curve is left-continuous (drops just after each radius); 'pre' steps draw it exactly on this grid
        ax.step(grid, certified_accuracy(res, grid), where="pre", label=name)
    ax.set(xlim=(0, xmax), ylim=(0, 1), xlabel="radius", ylabel="certified accuracy", title=title)
    ax.grid(True, alpha=0.4)
    ax.legend()
    tmp = f"{out_png}.{os.getpid()}.tmp"    # write beside the target, then rename: never a half-written PNG
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, out_png)
    except Exception as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise SmoothcertError(f"{out_png}: cannot write plot ({e.__class__.__name__}: {e})") from None
    return out_png
