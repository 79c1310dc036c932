"""A run's summary and its views: `Summary` (certified accuracy at each radius, ACR, abstain rate, interval) from a
file (`Summary.of`) or from `certify_many` (`summarize`), as a table (text, Markdown, LaTeX) or exported to CSV, JSON
or a pandas DataFrame."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import SmoothcertError, check, check_alpha
from .metrics import (DEFAULT_RADII, abstain_rate, average_certified_radius, certified_accuracy,
                      certified_accuracy_interval, check_radii)
from .reading import Results, frozen_arrays, rounding_bounds, validate_rows
from .tables import FORMATS, display_names, output_target, percent, render_table, write_atomic


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
        radii = tuple(float(r) for r in np.atleast_1d(check_radii(radii)))
        check(radii, "give at least one radius")
        if ci_radius is None:
            ci_radius = next((r for r in radii if r > 0), 0.0)
        ci_radius = float(check_radii(ci_radius, "the interval's radius"))
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
    validate_rows(idx, label, predict, radius, correct, lambda i: f"certificate {i} (index {idx[i]})",
               allow_duplicates)
    res = Results(**frozen_arrays(idx=idx, label=label, predict=predict, radius=radius, correct=correct), alpha=alpha,
                  name=name, path="", norm=(norms.pop() if norms else None) if certify else None)
    return Summary.of(res, radii, ci_radius, confidence)


def as_summaries(items) -> list[Summary]:
    items = [items] if isinstance(items, (Summary, Results)) else list(items)
    check(items and all(isinstance(s, (Summary, Results)) for s in items),
          "expected Summary or Results objects (from summarize, Summary.of or load_results)")
    return [s if isinstance(s, Summary) else Summary.of(s) for s in items]


def _rounding_note(named: list[tuple[str, Summary]]) -> str | None:
    """One line on rounded radii (Cohen et al. print "{:.3}"), with how much that can move this table's numbers."""
    rounded = [(name, s) for name, s in named if s.results.rounded]
    if not rounded:
        return None
    worst, where = 0.0, ""
    for name, s in rounded:
        r_print, ok = s.results.radius, s.results.correct == 1
        low = rounding_bounds(r_print)[0]                  # the smallest true radius each printed one stands for
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
    summaries = as_summaries(summaries)
    named = list(zip(display_names([s.results for s in summaries]), summaries))
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
        rows = [[n, str(s.n)] + [percent(v) for v in row] + [f"{s.acr:.3f}", percent(s.abstain_rate),
                f"[{percent(s.interval[0])}, {percent(s.interval[1])}]"] for (n, s), row in zip(certify, values)]
        lines += render_table(header, rows, bold, fmt)
    if predict:
        header = ["name", "N", "accuracy", "abstain", f"{predict[0][1].confidence * 100:g}% CI"]
        rows = [[n, str(s.n), percent(s.accuracy), percent(s.abstain_rate),
                 f"[{percent(s.interval[0])}, {percent(s.interval[1])}]"] for n, s in predict]
        lines += ([""] if lines else []) + render_table(header, rows, [[False] * 5] * len(rows), fmt)
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


def _export_rows(items) -> list[tuple[str, Summary]]:
    summaries = as_summaries(items)
    return list(zip(display_names([s.results for s in summaries]), summaries))


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
    write_atomic(target, write, "CSV export")
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
        write_atomic(target, write, "JSON export")
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
