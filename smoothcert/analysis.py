"""Analyse certification results: certified accuracy, ACR, abstain rate and intervals; tables, plots and exports.

Reads `certify` files in Cohen et al. 2019's format (`idx label predict radius correct time`, as their published
results are) or smoothcert's (the same columns, then the settings), and `predict` files (no radius: accuracy and
abstain rate). `summarize(certificates, labels)` gives the same numbers straight from `Smooth.certify_many`.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from .bounds import clopper_pearson_lower, clopper_pearson_upper
from .errors import SmoothcertError, check, check_alpha

__all__ = ["DEFAULT_RADII", "FORMATS", "PLOT_FORMATS", "REQUIRED", "Results", "SETTINGS", "Summary", "abstain_rate",
           "average_certified_radius", "certified_accuracy", "certified_accuracy_interval", "export_csv",
           "export_dataframe", "export_json", "format_table", "load_results", "output_target",
           "plot_certified_accuracy", "plot_figure", "radius_grid", "relabel", "summarize", "summary_table"]

REQUIRED = ("idx", "label", "predict", "radius", "correct")       # a certify file; a predict file has no radius
SETTINGS = ("noise", "scale", "certificate", "norm", "alpha", "n0", "n", "mode", "seed", "model")   # kept as text
RUN_SETTINGS = ("noise", "scale", "certificate", "norm", "alpha", "n0", "n", "mode")   # one value per file
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
FORMATS = ("text", "markdown", "latex")
PLOT_FORMATS = ("png", "pdf", "svg", "eps", "ps")


@dataclass(frozen=True, eq=False)
class Results:
    """One results file (or list of certificates): per-input arrays (read-only) and what is known about them."""
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray                 # -1 = abstain
    radius: np.ndarray | None           # None for predict results
    correct: np.ndarray                 # 1 where predict == label
    alpha: float | None                 # the certificates' alpha (None: unknown)
    name: str
    path: str
    norm: str | None = None             # "l2", "l1", ...; None when unknown or for predict results
    rounded: bool = False               # radii look rounded to 3 significant digits (Cohen et al.'s files)
    settings: Mapping[str, str] = field(default_factory=dict)   # SETTINGS columns with one value in every row
    samples: np.ndarray | None = None   # estimation samples per input (a `samples` column), else None
    n = property(lambda self: len(self.correct), doc="number of inputs (rows)")
    kind = property(lambda self: "predict" if self.radius is None else "certify", doc="'certify' or 'predict'")


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


def _stem(path: str) -> str:
    """The file name without a .tsv/.txt suffix only: Cohen et al.'s `sigma_0.50` stays `sigma_0.50`."""
    base = os.path.basename(path)
    return base[:-4] if base.lower().endswith((".tsv", ".txt")) else base


def _rounding_bounds(radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true radii that radii printed to 3 significant digits ("{:.3}") can stand for: p -/+ half a unit of the
    last digit (below a power of ten, of the next digit: 1.0 stands for [0.9995, 1.005])."""
    exponent = np.floor(np.log10(np.where(radius > 0, radius, 1.0)))
    half = np.where(radius > 0, 0.5 * 10.0 ** (exponent - 2), 0.0)
    return radius - np.where(radius == 10.0 ** exponent, half / 10, half), radius + half


def _looks_rounded(radius: np.ndarray) -> bool:
    """Every positive radius has at most 3 significant digits, as Cohen et al. print them ("{:.3}")."""
    positive = radius[radius > 0]
    return positive.size > 0 and all(float(f"{r:.3g}") == r for r in positive.tolist())


def _validated(idx, label, predict, radius, correct, where, allow_duplicates: bool) -> None:
    """Check the per-input arrays; `where(i)` names row i in a message."""
    checks = [(label < 0, "label must be >= 0"), (predict < -1, "predict must be >= -1 (-1 = abstain)")]
    if radius is not None:
        checks.append((~np.isfinite(radius) | (radius < 0), "radius must be finite and >= 0"))
    for bad, message in checks:
        if bad.any():
            raise SmoothcertError(f"{where(int(np.flatnonzero(bad)[0]))}: {message}")
    wrong = correct != (predict == label)           # an abstention (-1) is never correct
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise SmoothcertError(f"{where(i)}: correct is {correct[i]} but predict is {predict[i]} and label "
                              f"{label[i]} (correct must be 1 exactly when predict == label)")
    if not allow_duplicates:
        check_unique(idx, where, "; --allow-duplicates (allow_duplicates=True) counts every row")


def check_unique(idx, where, hint: str = "") -> None:
    """Refuse an input index that appears twice, naming both rows (`where(i)` names row i): a reader that counts
    inputs would count it twice."""
    _, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
    again = np.flatnonzero(first[inverse] != np.arange(len(idx)))
    if again.size:
        i = int(again[0])
        raise SmoothcertError(f"{where(i)}: input idx {idx[i]} appears again (first at "
                              f"{where(int(first[inverse[i]]))}){hint}")


def _frozen(**arrays) -> dict:
    for a in arrays.values():
        if a is not None:
            a.flags.writeable = False
    return arrays


def load_results(path, *, alpha: float | None = None, allow_duplicates: bool = False) -> Results:
    """Read a certify or predict results TSV, validating every row; raise SmoothcertError naming the file and line.

    Args:
        path: the file; a `radius` column makes it a certify file, without one it is a predict file.
        alpha: the certificates' alpha for a file without an alpha column (a file's own column always wins).
        allow_duplicates: count a repeated idx as another input instead of refusing the file.
    """
    path = os.fspath(path)
    alpha = None if alpha is None else check_alpha(alpha)
    header, rows, lines = _read_rows(path)
    check(rows, f"{path}: no result rows after the header")
    columns = [c for c in REQUIRED + ("samples",) if c in header and (c != "samples" or "radius" in header)]
    cols = {c: np.empty(len(rows)) for c in columns}
    alphas = []
    for i, (row, line) in enumerate(zip(rows, lines)):
        where = f"{path}, line {line}"
        for c in columns:
            cols[c][i] = _number(row[c], where, c, integer=c != "radius")
        check(cols["correct"][i] in (0, 1), f"{where}: correct must be 0 or 1, got {row['correct']!r}")
        check("samples" not in cols or cols["samples"][i] >= 1,      # smoothcert's files: <= n, checked on reading
              f"{where}: samples must be >= 1, got {row.get('samples')!r}")
        if "alpha" in row:
            alphas.append(_number(row["alpha"], where, "alpha", integer=False))
            check(0 < alphas[-1] < 1, f"{where}: alpha must be in (0, 1), got {row['alpha']!r}")
    arrays = {c: cols[c].astype(float if c == "radius" else np.int64) for c in columns}
    radius, samples = arrays.pop("radius", None), arrays.pop("samples", None)
    _validated(**arrays, radius=radius, where=lambda i: f"{path}, line {lines[i]}", allow_duplicates=allow_duplicates)
    _one_setting(path, rows, lines, RUN_SETTINGS)
    norm = _constant(rows, "norm")
    if radius is not None and "norm" not in header:
        norm = "l2"                                     # Cohen et al.'s files: Gaussian noise, l2 radii
    settings = {c: value for c in SETTINGS if (value := _constant(rows, c)) is not None}
    return Results(**_frozen(**arrays, radius=radius, samples=samples),
                   alpha=max(alphas) if alphas else alpha,  # max: stays valid
                   name=_settings_name(rows, radius is not None) or _stem(path), path=path, norm=norm,
                   rounded=radius is not None and "alpha" not in header and _looks_rounded(radius),
                   settings=MappingProxyType(settings))


def _read_rows(path: str) -> tuple[list[str], list[dict], list[int]]:
    """(header, rows as dicts, their line numbers) of a results file. smoothcert's certify files are read as every
    other reader of them reads them (files.rows.read_table, each row checked by files.rows.check_certify_row: counts,
    samples <= n, = n in a fixed-n row), so analyze accepts exactly the files planning and recertify accept;
    other files (Cohen et al.'s, predict files) with a CSV reader that skips blank lines."""
    from .files.columns import CERTIFY_COLUMNS
    from .files.rows import check_certify_row, read_table
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t")
            header = [h.strip() for h in next(reader, [])]
            check(any(header), f"{path}: empty file (expected a header line)")
            missing = [c for c in REQUIRED if c not in header and c != "radius"]
            check(not missing, f"{path}: missing column(s) {', '.join(missing)} in header")
            check(len(set(header)) == len(header), f"{path}: duplicate column names in header")
            if set(CERTIFY_COLUMNS) <= set(header):
                table = read_table(path, CERTIFY_COLUMNS)
                for line, row in table:
                    check_certify_row(path, line, row)
                return header, [row for _, row in table], [line for line, _ in table]
            rows, lines = [], []
            for cells in filter(lambda cells: any(c.strip() for c in cells), reader):    # skip blank lines
                check(len(cells) == len(header), f"{path}, line {reader.line_num}: expected {len(header)} fields")
                rows.append(dict(zip(header, cells)))
                lines.append(reader.line_num)
            return header, rows, lines
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SmoothcertError(f"{path}: cannot read results file ({e.__class__.__name__}: {e})") from None


def _one_setting(path: str, rows: list[dict], lines: list[int], columns: Sequence[str]) -> None:
    """Refuse a file whose rows differ in any of these settings columns (those it has), naming the first line that
    differs from the first row: rows of two runs in one file would be summarised as one run."""
    for column in (c for c in columns if c in rows[0]):
        first = rows[0][column].strip()
        for row, line in zip(rows, lines):
            value = row[column].strip()
            check(value == first, f"{path}, line {line}: {column} is {value!r} but {first!r} on line {lines[0]}: rows "
                                  f"of different {column}s in one file (from different runs?); give each run its "
                                  "own file")


def _settings_name(rows: list[dict], certify: bool) -> str:
    """A name from the settings columns ("cohen σ=0.25 l2", "predict σ=0.5 n=1000"); "" when there are none."""
    scale, n = _constant(rows, "scale"), _constant(rows, "n")
    symbol = {"gaussian": "σ", "laplace": "λ"}.get(_constant(rows, "noise"), "scale")
    try:
        scale = scale and f"{symbol}={float(scale):.4g}"
    except ValueError:
        scale = None
    if certify:
        return " ".join(p for p in (_constant(rows, "certificate"), scale, _constant(rows, "norm")) if p)
    return " ".join(["predict"] + [p for p in (scale, n and f"n={n}") if p]) if scale or n else ""


def _radii(radii, what: str = "radii") -> np.ndarray:
    """The radii as a float array, checked finite and >= 0."""
    try:
        r = np.asarray(radii, dtype=float)
    except (TypeError, ValueError):
        r = np.array(np.nan)
    check(bool(np.all(np.isfinite(r) & (r >= 0))), f"{what} must be finite numbers >= 0, got {radii!r}")
    return r


def radius_grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, ..., up to and including stop (as Cohen et al.'s table scripts), without float drift."""
    check(all(isinstance(v, (int, float)) and math.isfinite(v) for v in (start, stop, step)),
          f"radius grid needs finite numbers, got {start!r} {stop!r} {step!r}")
    check(start >= 0 and step > 0 and stop >= start, f"radius grid needs 0 <= START <= STOP and STEP > 0, got "
                                                     f"{start:g} {stop:g} {step:g}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    check(count <= 1000, f"radius grid has {count} radii; at most 1000")
    return tuple(round(start + i * step, 12) for i in range(count))   # 0.1 * 3 is 0.3, not 0.30000000000000004


def _certify(res: Results, what: str) -> None:
    check(isinstance(res, Results), f"{what} expects Results (from load_results), got {type(res).__name__}")
    check(res.kind == "certify", f"{res.path or res.name}: predict results have no radii ({what})")


def certified_accuracy(res: Results, radii) -> np.ndarray:
    """Fraction of inputs classified correctly with certified radius >= r, for each r in radii."""
    _certify(res, "certified accuracy")
    r = _radii(radii)
    # Cohen et al. 2019 §4: approximate certified accuracy = mean of (correct & radius >= r)
    hit = (res.correct[None, :] == 1) & (res.radius[None, :] >= r.reshape(-1, 1))
    return hit.mean(axis=1).reshape(r.shape)


def average_certified_radius(res: Results) -> float:
    """Average certified radius: mean of radius * correct over all inputs (0 when wrong or abstaining)."""
    _certify(res, "average certified radius")
    return float(np.mean(res.radius * res.correct))        # ACR, Zhai et al. 2020 (MACER)


def abstain_rate(res: Results) -> float:
    """Fraction of inputs on which the smoothed classifier abstained (predict == -1)."""
    return float(np.mean(res.predict == -1))


def certified_accuracy_interval(res: Results, r: float = 0.0, confidence: float = 0.95) -> tuple[float, float]:
    """A level-`confidence` interval (low, high) for the population certified accuracy at r from N i.i.d. test inputs.

    k of N certified-correct at r, miss = 1 - confidence, CP = one-sided Clopper-Pearson. high = CP_upper(k, N, miss/2)
    bounds p_cert = P(an input is certified-correct at r). Each certificate is wrong w.p. <= alpha, independently, so
    the number W of wrong ones is stochastically below Binomial(N, alpha): W <= q = binom.ppf(1 - miss/4, N, alpha)
    w.p. >= 1 - miss/4, and then >= k - q inputs are truly robust-correct. CP_lower is monotone in k, so
    low = CP_lower(k - q, N, miss/4) bounds the true certified accuracy (and p_cert) but w.p. <= miss/4 + miss/4;
    union bound: total miss <= 1 - confidence. If res.alpha is None (Cohen's 6-column files) the correction is
    skipped: low = CP_lower(k, N, miss/2), a bound on p_cert that ignores wrong certificates.
    If res.rounded (radii printed to 3 significant digits), low counts each radius at the smallest true value it
    can stand for and high at the largest, so the rounding cannot overstate the interval.
    For predict results r must be 0: the same interval on the accuracy, since PREDICT returns a class other than
    the smoothed classifier's with probability <= alpha (Cohen et al. 2019, Prop. 2).
    """
    check(isinstance(confidence, (int, float)) and 0 < confidence < 1, f"confidence must be in (0, 1): {confidence!r}")
    check(_radii(r, "radius").ndim == 0, f"radius must be a single number, got {r!r}")
    check(res.kind == "certify" or r == 0, f"{res.path or res.name}: predict results have no radii")
    r, n, miss = float(r), res.n, 1.0 - confidence
    radius = np.zeros(n) if res.radius is None else res.radius
    least, most = _rounding_bounds(radius) if res.rounded else (radius, radius)
    k_low, k_high = (int(np.sum((res.correct == 1) & (rad >= r))) for rad in (least, most))
    high = float(clopper_pearson_upper(k_high, n, miss / 2))   # k: certified-correct inputs at r
    q, level = (0, miss / 2) if res.alpha is None else (int(stats.binom.ppf(1 - miss / 4, n, res.alpha)), miss / 4)
    low = float(clopper_pearson_lower(max(k_low - q, 0), n, level))    # q >= #wrong certificates w.p. 1 - miss/4
    return float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))


@dataclass(frozen=True, eq=False)
class Summary:
    """What `analyze` prints for one results file or one list of certificates; str() is that table.

    certified_accuracy maps each radius to a fraction (empty for predict results); accuracy is the fraction
    correct (at radius 0); acr is None for predict results; interval is at ci_radius (0 for predict results).
    """
    name: str
    kind: str
    n: int
    radii: tuple[float, ...]
    certified_accuracy: dict[float, float]
    accuracy: float
    acr: float | None
    abstain_rate: float
    ci_radius: float
    interval: tuple[float, float]
    confidence: float
    results: Results

    @classmethod
    def of(cls, res: Results, radii=DEFAULT_RADII, ci_radius: float | None = None,
           confidence: float = 0.95) -> Summary:
        """Summarise loaded results.

        Args:
            res: from load_results (or summarize's .results).
            radii: radii for the certified-accuracy columns.
            ci_radius: radius of the interval (default: the first positive radius in radii, else 0).
            confidence: the interval's level.
        """
        check(isinstance(res, Results), f"expected Results (from load_results), got {type(res).__name__}")
        radii = tuple(float(r) for r in np.atleast_1d(_radii(radii)))
        check(radii, "give at least one radius")
        if ci_radius is None:
            ci_radius = next((r for r in radii if r > 0), 0.0)
        ci_radius = float(_radii(ci_radius, "the interval's radius"))
        if res.kind == "predict":
            return cls(res.name, "predict", res.n, radii, {}, float(np.mean(res.correct)), None, abstain_rate(res),
                       0.0, certified_accuracy_interval(res, 0.0, confidence), confidence, res)
        acc = certified_accuracy(res, radii)
        return cls(res.name, "certify", res.n, radii, dict(zip(radii, acc.tolist())),
                   float(certified_accuracy(res, 0.0)), average_certified_radius(res), abstain_rate(res), ci_radius,
                   certified_accuracy_interval(res, ci_radius, confidence), confidence, res)

    def __str__(self) -> str:
        return format_table([self])

    def to_csv(self, path) -> str:
        """Write the per-input results as CSV (see export_csv); return the path."""
        return export_csv([self], path)

    def to_json(self, path=None) -> str:
        """The numbers and per-input results as JSON (see export_json); written to path if given."""
        return export_json([self], path)

    def to_dataframe(self):
        """The per-input results as a pandas DataFrame (see export_dataframe)."""
        return export_dataframe([self])


def _field(obj, name: str, position: int):
    try:
        return getattr(obj, name)
    except AttributeError:
        raise SmoothcertError(f"certificate {position} has no {name!r} (expected objects like smoothcert.Certificate "
                              f"or Prediction, got {type(obj).__name__})") from None


def summarize(certificates: Iterable, labels, radii=DEFAULT_RADII, *, ci_radius: float | None = None,
              confidence: float = 0.95, name: str = "smoothed", alpha: float | None = None,
              allow_duplicates: bool = False) -> Summary:
    """Certified accuracy, ACR, abstain rate and interval straight from certificates (no file): what analyze prints.

    Args:
        certificates: Certificate objects (from Smooth.certify/certify_many), or any objects with index,
            prediction and radius (plus alpha and norm if known); Prediction objects (no radius) give accuracy.
        labels: true labels, looked up as labels[c.index]: a sequence, array or tensor over the data set's inputs,
            or a mapping index -> label.
        radii: radii for the certified-accuracy columns.
        ci_radius: radius of the interval (default: the first positive radius in radii, else 0).
        confidence: the interval's level.
        name: the name shown in the table.
        alpha: the certificates' alpha if they do not carry one.
        allow_duplicates: count two certificates of the same index as two inputs instead of refusing.
    """
    items = list(certificates)
    check(items, "summarize needs at least one certificate")
    has_radius = [hasattr(c, "radius") for c in items]
    certify = all(has_radius)
    check(certify or not any(has_radius), "a mix of certificates (with radius) and predictions: summarize each apart")
    idx = np.array([int(_field(c, "index", i)) for i, c in enumerate(items)], dtype=np.int64)
    predict = np.array([int(_field(c, "prediction", i)) for i, c in enumerate(items)], dtype=np.int64)
    label = np.empty(len(items), dtype=np.int64)
    for i, j in enumerate(idx.tolist()):
        try:
            value = labels[j]
        except (KeyError, IndexError, TypeError):
            raise SmoothcertError(f"no label for input index {j} (certificate {i}): labels are looked up as "
                                  "labels[certificate.index]") from None
        label[i] = int(value)
        check(label[i] == float(value), f"label of input index {j} is not an integer: {value!r}")
    radius = np.array([float(c.radius) for c in items]) if certify else None
    alphas = {float(c.alpha) for c in items if getattr(c, "alpha", None) is not None}
    norms = {c.norm for c in items if getattr(c, "norm", None)}
    check(len(norms) <= 1, f"certificates of different norms ({', '.join(sorted(norms))}): summarize each apart")
    alpha = max(alphas) if alphas else (None if alpha is None else check_alpha(alpha))
    correct = (predict == label).astype(np.int64)
    _validated(idx, label, predict, radius, correct, lambda i: f"certificate {i} (index {idx[i]})",
               allow_duplicates)
    res = Results(**_frozen(idx=idx, label=label, predict=predict, radius=radius, correct=correct), alpha=alpha,
                  name=name, path="", norm=(norms.pop() if norms else None) if certify else None)
    return Summary.of(res, radii, ci_radius, confidence)


def _display_names(results: Sequence[Results]) -> list[str]:
    """Each run's name; where names clash, the distinguishing part of the path, then a number, is added."""
    out = [r.name for r in results]
    for name in set(out):
        group = [i for i, r in enumerate(results) if r.name == name]
        if len(group) < 2:
            continue
        parts = [os.path.abspath(results[i].path).split(os.sep)[1:] if results[i].path else [] for i in group]
        parts = [p[:-1] + [_stem(p[-1])] if p else p for p in parts]
        shortest = min(len(p) for p in parts)
        head = next((j for j in range(shortest) if len({p[j] for p in parts}) > 1), shortest)
        tail = next((j for j in range(shortest - head) if len({p[-1 - j] for p in parts}) > 1), shortest - head)
        for i, p in zip(group, parts):
            extra = "/".join(p[head:len(p) - tail])
            out[i] = f"{name} ({extra})" if extra else name
    for name in set(out):                                   # the same file twice, or no paths: number them
        group = [i for i, n in enumerate(out) if n == name]
        for k, i in enumerate(group if len(group) > 1 else [], start=1):
            out[i] = f"{name} #{k}"
    return out


def _summaries(items) -> list[Summary]:
    items = [items] if isinstance(items, (Summary, Results)) else list(items)
    check(items and all(isinstance(s, (Summary, Results)) for s in items),
          "expected Summary or Results objects (from summarize, Summary.of or load_results)")
    return [s if isinstance(s, Summary) else Summary.of(s) for s in items]


def _percent(x: float) -> str:
    return f"{x * 100:.1f}"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "σ": r"$\sigma$", "λ": r"$\lambda$", "ℓ": r"$\ell$"}


def _tex(text: str) -> str:
    """Escape LaTeX's special characters; Greek letters and ℓ as math."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def _tex_header(h: str) -> str:
    if h.startswith("r="):
        return f"$r = {h[2:]}$"
    head, at, r = h.partition("@r=")
    return _tex(head) + (f" at $r = {r}$" if at else "")


def _render(header: list[str], rows: list[list[str]], bold: list[list[bool]], fmt: str) -> list[str]:
    """One table in the format: text (fixed width), markdown or latex (booktabs); bold where marked."""
    if fmt == "text":
        widths = [max(len(row[j]) for row in [header] + rows) for j in range(len(header))]
        line = lambda row: "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                                     for j, (c, w) in enumerate(zip(row, widths)))
        return [line(header), "  ".join("-" * w for w in widths)] + [line(row) for row in rows]
    if fmt == "markdown":
        cell = lambda c, b: f"**{c}**" if b else c.replace("|", r"\|")
        line = lambda cells: "| " + " | ".join(cells) + " |"
        return [line(header), "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"] + [
            line([cell(c, b) for c, b in zip(row, flags)]) for row, flags in zip(rows, bold)]
    line = lambda cells: " & ".join(cells) + r" \\"
    return ([r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule", line(map(_tex_header, header)),
             r"\midrule"]
            + [line([rf"\textbf{{{_tex(c)}}}" if b else _tex(c) for c, b in zip(row, flags)])
               for row, flags in zip(rows, bold)] + [r"\bottomrule", r"\end{tabular}"])


def _rounding_note(named: list[tuple[str, Summary]]) -> str | None:
    """One line on rounded radii (Cohen et al. print "{:.3}"), with how much that can move this table's numbers."""
    rounded = [(name, s) for name, s in named if s.results.rounded]
    if not rounded:
        return None
    worst, where = 0.0, ""
    for name, s in rounded:
        r_print, ok = s.results.radius, s.results.correct == 1
        low = _rounding_bounds(r_print)[0]                  # the smallest true radius each printed one stands for
        for r in sorted(set(s.radii) | {s.ci_radius}):
            if r > 0:
                share = float(np.mean(ok & (r_print >= r) & (low < r)))
                if share > worst:
                    worst, where = share, f" ({name} at r={r:g})"
    effect = f"here by up to {worst * 100:.1f} points{where}" if worst > 0 else "not at this table's radii"
    return (f"note: radii of {', '.join(n for n, _ in rounded)} look rounded to 3 significant digits (Cohen et al.'s "
            f"files): a radius printed 1.0 may be 0.9996, so certified accuracy at a printed radius can be "
            f"overstated (the interval allows for it); {effect}")


def format_table(summaries, fmt: str = "text") -> str:
    """The table analyze prints, for summaries (or Results) sharing one set of radii.

    Args:
        summaries: Summary objects (from summarize or Summary.of) or Results; certify and predict ones get a
            table each.
        fmt: text (fixed width), markdown or latex (booktabs); the best entry per radius is bold in the last two.
    """
    check(fmt in FORMATS, f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    summaries = _summaries(summaries)
    named = list(zip(_display_names([s.results for s in summaries]), summaries))
    certify = [(n, s) for n, s in named if s.kind == "certify"]
    predict = [(n, s) for n, s in named if s.kind == "predict"]
    lines = []
    if certify:
        s0 = certify[0][1]
        check(all(s.radii == s0.radii and s.ci_radius == s0.ci_radius and s.confidence == s0.confidence
                  for _, s in certify), "summaries in one table need the same radii, interval radius and confidence")
        radii = list(s0.radii) if 0.0 in s0.radii else [0.0] + list(s0.radii)   # no acc@0 beside r=0
        header = (["name", "N"] + ["acc@0" if r == 0.0 and 0.0 not in s0.radii else f"r={r:g}" for r in radii]
                  + ["ACR", "abstain", f"{s0.confidence * 100:g}% CI@r={s0.ci_radius:g}"])
        values = np.array([[s.accuracy if r == 0.0 else s.certified_accuracy[r] for r in radii] for _, s in certify])
        best = values.max(axis=0)
        bold = [[False, False] + [len(certify) > 1 and b > 0 and v >= b - 1e-12 for v, b in zip(row, best)]
                + [False] * 3 for row in values]
        rows = [[n, str(s.n)] + [_percent(v) for v in row] + [f"{s.acr:.3f}", _percent(s.abstain_rate),
                f"[{_percent(s.interval[0])}, {_percent(s.interval[1])}]"] for (n, s), row in zip(certify, values)]
        lines += _render(header, rows, bold, fmt)
    if predict:
        header = ["name", "N", "accuracy", "abstain", f"{predict[0][1].confidence * 100:g}% CI"]
        rows = [[n, str(s.n), _percent(s.accuracy), _percent(s.abstain_rate),
                 f"[{_percent(s.interval[0])}, {_percent(s.interval[1])}]"] for n, s in predict]
        lines += ([""] if lines else []) + _render(header, rows, [[False] * 5] * len(rows), fmt)
    notes = ["(accuracies and abstain in %; CI: Clopper-Pearson on the test distribution, its lower end corrected "
             "for wrong certificates at each run's alpha)"]
    unknown = [n for n, s in named if s.results.alpha is None]
    if unknown:
        notes.append(f"note: alpha unknown for {', '.join(unknown)} (no alpha column; give --alpha): their lower "
                     f"ends are not corrected for wrong certificates")
    notes += [note for note in [_rounding_note(certify)] if note]
    if fmt == "latex":
        notes = ["% " + note for note in notes]
    return "\n".join(lines + ([""] if fmt != "text" else []) + notes)


def summary_table(results_list: Sequence[Results], radii=DEFAULT_RADII, fmt: str = "text",
                  ci_radius: float | None = None, confidence: float = 0.95) -> str:
    """format_table over loaded results: N, certified accuracy (%) per radius, ACR, abstain %, an interval."""
    results_list = list(results_list)
    check(results_list and all(isinstance(r, Results) for r in results_list),
          "expected a non-empty list of Results (from load_results)")
    return format_table([Summary.of(r, radii, ci_radius, confidence) for r in results_list], fmt)


def output_target(path, formats: Sequence[str], what: str) -> tuple[str, str]:
    """Check an output path before anything is written; return (the file to write, its format).

    A directory, or a symlink to one, is refused; a symlink to a file is written through (the link stays); the
    format is the extension's and must be one of `formats`.
    """
    path = os.fspath(path)
    kind = "a symlink to a directory" if os.path.islink(path) else "a directory"
    check(not os.path.isdir(path), f"{path}: is {kind}; give a file name for the {what}")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    check(ext in formats, f"{path}: unknown {what} format {ext!r} (from the extension); use "
                          f"{', '.join('.' + f for f in formats)}")
    target = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(os.path.abspath(target))
    check(os.path.isdir(directory), f"{path}: output directory {directory} does not exist")
    return target, ext


def _write_atomic(target: str, write, what: str) -> None:
    """write(tmp) beside the target, then rename over it: never a half-written file."""
    tmp, made = f"{target}.{os.getpid()}.tmp", False
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))    # never a file or link already there
        made = True
        write(tmp)
        os.replace(tmp, target)
    except Exception as e:
        if made and os.path.exists(tmp):                                    # only the file made here
            os.unlink(tmp)
        raise SmoothcertError(f"{target}: cannot write {what} ({e.__class__.__name__}: {e})") from None


def _save_figure(figure, out) -> str:
    """Check `out` (output_target) before anything is drawn, draw figure() (a matplotlib Figure) and write it
    atomically in the format its extension names; return the path."""
    target, fmt = output_target(out, PLOT_FORMATS, "plot")
    fig = figure()
    _write_atomic(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120), "plot")
    return os.fspath(out)


LINE_STYLES = ("-", "--", "-.", ":")     # curves on top of each other stay apart in print and grey scale


def _colour(i: int) -> str:
    """The i-th colour of matplotlib's colour cycle, repeating."""
    import matplotlib                       # lazy; a bare Figure (no pyplot state) needs no display
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    return colours[i % len(colours)]


def _norm_label(norm: str | None) -> str:
    if not norm:
        return "radius"
    return f"ℓ{'∞' if norm[1:] == 'inf' else norm[1:]} radius" if norm.startswith("l") else f"{norm} radius"


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
        _certify(res, "plot")
    norms = sorted({r.norm for r in results_list} - {None})
    check(len(norms) <= 1, f"cannot overlay {' and '.join(norms)} radii on one axis; plot each norm separately")
    top = max(float(res.radius.max()) for res in results_list)
    xmax = (top * 1.05 if top > 0 else 1.0) if max_radius is None else max_radius
    check(isinstance(xmax, (int, float)) and math.isfinite(xmax) and xmax > 0, f"bad max_radius {max_radius!r}")
    from matplotlib.figure import Figure    # lazy; a bare Figure (no pyplot state) needs no display
    fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for i, (name, res) in enumerate(zip(_display_names(results_list), results_list)):
        grid = np.union1d(np.linspace(0, xmax, 500), res.radius[res.radius <= xmax])
        # the curve is left-continuous (drops just after each radius); 'pre' steps draw it exactly on this grid
        ax.step(grid, certified_accuracy(res, grid), where="pre", label=name, color=_colour(i),
                linestyle=LINE_STYLES[i % len(LINE_STYLES)], linewidth=1.6)
    ax.set(xlim=(0, xmax), ylim=(0, 1), xlabel=_norm_label(norms[0] if norms else None),
           ylabel="certified accuracy", title=title)
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
    return _save_figure(lambda: plot_figure(results_list, max_radius, title), out)


def _export_rows(items) -> list[tuple[str, Summary]]:
    summaries = _summaries(items)
    return list(zip(_display_names([s.results for s in summaries]), summaries))


def export_csv(items, path) -> str:
    """Write the per-input results (name, idx, label, predict, radius, correct) as CSV, atomically; return path.

    Args:
        items: a Summary or Results, or a list of them (rows of all, told apart by name).
        path: a .csv file (radius is empty for predict results and written at full precision otherwise).
    """
    named = _export_rows(items)
    target, _ = output_target(path, ("csv",), "CSV export")

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["name", "idx", "label", "predict", "radius", "correct"])
            for name, s in named:
                r = s.results
                radius = [""] * r.n if r.radius is None else [repr(v) for v in r.radius.tolist()]
                w.writerows(zip([name] * r.n, r.idx.tolist(), r.label.tolist(), r.predict.tolist(), radius,
                                r.correct.tolist()))
    _write_atomic(target, write, "CSV export")
    return os.fspath(path)


def export_json(items, path=None) -> str:
    """The table's numbers and the per-input results as JSON; written atomically to path (.json) if given.

    Args:
        items: a Summary or Results, or a list of them.
        path: where to write it (None: only return the text).
    """
    named = _export_rows(items)
    runs: list[dict[str, Any]] = []
    for name, s in named:
        r = s.results
        runs.append({"name": name, "path": r.path, "kind": s.kind, "n": s.n, "alpha": r.alpha, "norm": r.norm,
                     "radii": list(s.radii) if s.kind == "certify" else [],
                     "certified_accuracy": list(s.certified_accuracy.values()), "accuracy": s.accuracy,
                     "acr": s.acr, "abstain_rate": s.abstain_rate, "confidence": s.confidence,
                     "ci_radius": s.ci_radius, "interval": list(s.interval),
                     "rows": {"idx": r.idx.tolist(), "label": r.label.tolist(), "predict": r.predict.tolist(),
                              "radius": None if r.radius is None else r.radius.tolist(),
                              "correct": r.correct.tolist()}})
    text = json.dumps({"runs": runs}, ensure_ascii=False, indent=1)
    if path is not None:
        target, _ = output_target(path, ("json",), "JSON export")

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        _write_atomic(target, write, "JSON export")
    return text


def export_dataframe(items):
    """The per-input results as a pandas DataFrame (name, idx, label, predict, radius, correct); pandas is optional.

    Args:
        items: a Summary or Results, or a list of them (radius is NaN for predict results).
    """
    try:
        import pandas as pd                 # optional: not a dependency of smoothcert
    except ImportError:
        raise SmoothcertError("a DataFrame needs pandas, which is not installed (pip install pandas); "
                              "export_csv and export_json need nothing") from None
    frames = [pd.DataFrame({"name": name, "idx": s.results.idx, "label": s.results.label,
                            "predict": s.results.predict,
                            "radius": np.full(s.n, np.nan) if s.results.radius is None else s.results.radius,
                            "correct": s.results.correct}) for name, s in _export_rows(items)]
    return pd.concat(frames, ignore_index=True)


def relabel(results: Sequence[Results], labels: Sequence[str] | None) -> list[Results]:
    """The results with the given names (one per result, in order); unchanged when labels is None."""
    results = list(results)
    if labels is None:
        return results
    check(len(labels) == len(results), f"{len(labels)} labels for {len(results)} results files: give one per file")
    return [replace(r, name=str(label)) for r, label in zip(results, labels)]



# -- certified confidence (001) ----------------------------------------------------------------------------------
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
    from .certificates.confidence import check_thresholds
    from .files.columns import CONFIDENCE_FIRST, CONFIDENCE_LAST
    from .files.rows import check_confidence_row, parse_int, read_table
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
    _one_setting(path, rows, lines, ("noise", "scale", "measure", "alpha", "n0", "n"))
    first = checked[0]
    thresholds = tuple(_number(h[4:], head, h, integer=False) for h in columns)
    _at(head, check_thresholds, thresholds, first.measure)
    cols = {c: np.zeros(len(table), np.int64) for c in ("idx", "label", "predict", "correct")}
    for i, (line, row) in enumerate(table):
        for c in cols:
            cols[c][i] = parse_int(row[c], f"{path}, line {line}", c, -1 if c == "predict" else 0,
                                   1 if c == "correct" else 2 ** 62)
    cdf = np.array([[float(row[h]) for h in columns] for row in rows])                     # checked above
    base = np.array([[float(row["baseline" + h[3:]]) for h in columns] for row in rows])
    mean = np.array([info.measure_sum / info.n for info in checked])
    _validated(cols["idx"], cols["label"], cols["predict"], None, cols["correct"],
               lambda i: f"{path}, line {table[i][0]}", allow_duplicates)
    return ConfidenceResults(**_frozen(**cols, cdf=cdf, baseline=base, mean_measure=mean), thresholds=thresholds,
                             measure=first.measure, alpha=first.alpha, name=f"{first.measure} σ={first.scale:.4g}",
                             path=path)


def confidence_table(results: Sequence[ConfidenceResults], radii=DEFAULT_RADII, fmt: str = "text") -> str:
    """Certified accuracy (%) at each radius for each threshold, CDF (001 Thm 2) beside baseline (Thm 1): an input
    counts at r when its class is right and the certificate keeps the expected measure above c within r."""
    check(fmt in FORMATS, f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    radii = [float(r) for r in np.atleast_1d(_radii(radii))]
    header = ["name", "c", "certificate", "N"] + [f"r={r:g}" for r in radii] + ["average radius"]
    rows, bold = [], []
    for res in results:
        for j, c in enumerate(res.thresholds):
            pair = []
            for kind, radius in (("cdf", res.cdf[:, j]), ("baseline", res.baseline[:, j])):
                ok = res.correct == 1
                acc = [float(np.mean(ok & (radius >= r) & (radius > 0))) for r in radii]
                pair.append(([res.name, f"{c:g}", kind, str(len(ok))] + [_percent(a) for a in acc]
                             + [f"{float(np.mean(radius * ok)):.3f}"], acc))
            for (row, acc), (_, other) in zip(pair, pair[::-1]):
                rows.append(row)
                bold.append([False] * 4 + [a > b for a, b in zip(acc, other)] + [False])
    lines = _render(header, rows, bold, fmt)
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
            colour = _colour(k)
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
    return _save_figure(lambda: confidence_figure(results, max_radius, title), out)
