"""Reading results files: a certify or predict file (Cohen et al. 2019's columns or smoothcert's, with its settings)
checked and frozen into `Results`; one run's settings per file; renaming runs for tables."""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from ..errors import SmoothcertError, check, check_alpha
from ..noises.record import base_name, is_float_sound

REQUIRED = ("idx", "label", "predict", "radius", "correct")       # a certify file; a predict file has no radius
SETTINGS = ("noise", "scale", "certificate", "norm", "alpha", "n0", "n", "mode", "seed", "model")   # kept as text
RUN_SETTINGS = ("noise", "scale", "certificate", "norm", "alpha", "n0", "n", "mode")   # one value per file


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


def parse_number(text: str, where: str, column: str, integer: bool) -> float | int:
    """Parse one cell, raising SmoothcertError naming the file, line and column. An integer column gives an exact
    int64 (idx 2^62 - 1 and 2^62 - 2 are one float64); "3.0" is taken as 3."""
    if integer:
        try:
            value = int(text)
        except ValueError:
            pass
        else:
            check(-2 ** 63 <= value < 2 ** 63, f"{where}: column {column!r} is beyond a 64-bit integer: {text!r}")
            return value
    try:
        value = float(text)
    except ValueError:
        raise SmoothcertError(f"{where}: column {column!r} is not a number: {text!r}") from None
    check(not math.isnan(value), f"{where}: column {column!r} is NaN")
    check(not integer or (math.isfinite(value) and value == int(value)),
          f"{where}: column {column!r} must be an integer, got {text!r}")
    if integer:
        check(-2 ** 63 <= value < 2 ** 63, f"{where}: column {column!r} is beyond a 64-bit integer: {text!r}")
        return int(value)
    return value


def _constant(rows: list[dict], column: str) -> str | None:
    """The column's single value over all rows, or None if absent or varying."""
    values = {row[column].strip() for row in rows} if column in rows[0] else set()
    return values.pop() if len(values) == 1 else None


def stem(path: str) -> str:
    """The file name without a .tsv/.txt suffix only: Cohen et al.'s `sigma_0.50` stays `sigma_0.50`."""
    base = os.path.basename(path)
    return base[:-4] if base.lower().endswith((".tsv", ".txt")) else base


def rounding_bounds(radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true radii that radii printed to 3 significant digits ("{:.3}") can stand for: p -/+ half a unit of the
    last digit (below a power of ten, of the next digit: 1.0 stands for [0.9995, 1.005])."""
    exponent = np.floor(np.log10(np.where(radius > 0, radius, 1.0)))
    half = np.where(radius > 0, 0.5 * 10.0 ** (exponent - 2), 0.0)
    return radius - np.where(radius == 10.0 ** exponent, half / 10, half), radius + half


def looks_rounded(radius: np.ndarray) -> bool:
    """Every positive radius has at most 3 significant digits, as Cohen et al. print them ("{:.3}")."""
    positive = radius[radius > 0]
    return positive.size > 0 and all(float(f"{r:.3g}") == r for r in positive.tolist())


def validate_rows(idx, label, predict, radius, correct, where, allow_duplicates: bool) -> None:
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


def frozen_arrays(**arrays) -> dict:
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
    cols = {c: np.empty(len(rows), dtype=float if c == "radius" else np.int64) for c in columns}
    alphas = []
    for i, (row, line) in enumerate(zip(rows, lines)):
        where = f"{path}, line {line}"
        for c in columns:
            cols[c][i] = parse_number(row[c], where, c, integer=c != "radius")
        check(cols["correct"][i] in (0, 1), f"{where}: correct must be 0 or 1, got {row['correct']!r}")
        check("samples" not in cols or cols["samples"][i] >= 1,      # smoothcert's files: <= n, checked on reading
              f"{where}: samples must be >= 1, got {row.get('samples')!r}")
        if "alpha" in row:
            alphas.append(parse_number(row["alpha"], where, "alpha", integer=False))
            check(0 < alphas[-1] < 1, f"{where}: alpha must be in (0, 1), got {row['alpha']!r}")
    arrays = {c: cols[c].astype(float if c == "radius" else np.int64) for c in columns}
    radius, samples = arrays.pop("radius", None), arrays.pop("samples", None)
    validate_rows(**arrays, radius=radius, where=lambda i: f"{path}, line {lines[i]}", allow_duplicates=allow_duplicates)
    one_setting(path, rows, lines, RUN_SETTINGS)
    norm = _constant(rows, "norm")
    if radius is not None and "norm" not in header:
        norm = "l2"                                     # Cohen et al.'s files: Gaussian noise, l2 radii
    settings = {c: value for c in SETTINGS if (value := _constant(rows, c)) is not None}
    return Results(**frozen_arrays(**arrays, radius=radius, samples=samples),
                   alpha=max(alphas) if alphas else alpha,  # max: stays valid
                   name=_settings_name(rows, radius is not None) or stem(path), path=path, norm=norm,
                   rounded=radius is not None and "alpha" not in header and looks_rounded(radius),
                   settings=MappingProxyType(settings))


def _read_rows(path: str) -> tuple[list[str], list[dict], list[int]]:
    """(header, rows as dicts, their line numbers) of a results file. smoothcert's certify files are read as every
    other reader of them reads them (files.rows.read_table, each row checked by files.rows.check_certify_row: counts,
    samples <= n, = n in a fixed-n row), so analyze accepts exactly the files planning and recertify accept;
    other files (Cohen et al.'s, predict files) with a CSV reader that skips blank lines."""
    from ..files.columns import CERTIFY_COLUMNS
    from ..files.rows import check_certify_row, read_table
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


def one_setting(path: str, rows: list[dict], lines: list[int], columns: Sequence[str]) -> None:
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
    """A name from the settings columns ("cohen σ=0.25 l2", "predict σ=0.5 n=1000"; float-sound runs say so:
    "cohen σ=0.25 float-sound l2", never the name of a default run); "" when there are none."""
    scale, n, noise = _constant(rows, "scale"), _constant(rows, "n"), _constant(rows, "noise") or ""
    symbol = {"gaussian": "σ", "laplace": "λ", "uniform": "λ"}.get(base_name(noise), "scale")
    try:
        scale = scale and f"{symbol}={float(scale):.4g}" + (" float-sound" if is_float_sound(noise) else "")
    except ValueError:
        scale = None
    if certify:
        return " ".join(p for p in (_constant(rows, "certificate"), scale, _constant(rows, "norm")) if p)
    return " ".join(["predict"] + [p for p in (scale, n and f"n={n}") if p]) if scale or n else ""


def relabel(results: Sequence[Results], labels: Sequence[str] | None) -> list[Results]:
    """The results with the given names (one per result, in order); unchanged when labels is None."""
    results = list(results)
    if labels is None:
        return results
    check(len(labels) == len(results), f"{len(labels)} labels for {len(results)} results files: give one per file")
    return [replace(r, name=str(label)) for r, label in zip(results, labels)]
