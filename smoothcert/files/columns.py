"""The columns of each kind of results file and how a cell is written: Cohen et al.'s columns first
(`idx label predict radius correct time`), then the settings and the raw statistics (certify, soft certify,
predict and certified-confidence files); counts sparse, floats at full precision; and where a results file may go
(`check_output_path`).
"""
from __future__ import annotations

import datetime
import os

import numpy as np

from ..errors import check
from .lock import SUFFIX

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time",
                   "noise", "scale", "certificate", "norm", "alpha", "n0", "n", "mode", "seed", "model",
                   "samples", "pA_lower", "pB_upper", "num_classes", "counts_selection", "counts")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time",
                   "noise", "scale", "alpha", "n", "seed", "model", "pvalue", "num_classes", "counts")
SOFT_COLUMNS = CERTIFY_COLUMNS + ("scores_selection", "scores")   # soft certificates: score sums per class
CONFIDENCE_FIRST = ("idx", "label", "predict", "correct")          # then cdf@c, baseline@c per threshold c
CONFIDENCE_LAST = ("time", "noise", "scale", "measure", "alpha", "n0", "n", "seed", "model", "num_thresholds",
                   "num_classes", "bins", "counts_selection", "scores_selection", "histogram", "measure_sum")


def confidence_columns(thresholds) -> tuple[str, ...]:
    """The header of a certified-confidence file for these thresholds."""
    return CONFIDENCE_FIRST + tuple(f"{kind}@{c:g}" for c in thresholds for kind in ("cdf", "baseline")) \
        + CONFIDENCE_LAST


def check_output_path(path: str) -> None:
    """--out must name a regular file (or none yet) in an existing folder: not /dev/null, a folder or a link to one,
    and not a name ending in .lock, the name of runs' lock files (lock.py)."""
    parent = os.path.dirname(os.path.abspath(path))
    check(not any(p.lower().endswith(SUFFIX) for p in (path, os.path.realpath(path))),
          f"--out {path} ends in {SUFFIX}, the name of a run's lock file (OUT{SUFFIX}); choose another --out")
    check(os.path.isdir(parent), f"output folder does not exist: {parent}")
    check(not os.path.exists(path) or os.path.isfile(path),
          f"{path} exists and is not a regular file (a device, folder or pipe); choose a file for --out")


def encode_counts(counts: np.ndarray) -> str:
    """Sparse class counts: 'class:count' for the non-zero classes, comma separated ('' when all zero)."""
    return ",".join(f"{c}:{int(k)}" for c, k in enumerate(counts) if k)


def encode_scores(*columns: np.ndarray) -> str:
    """Per-class floats, 'class:v1[:v2...]' for every class, at full precision (repr round-trips)."""
    return ",".join(":".join([str(c)] + [repr(float(col[c])) for col in columns]) for c in range(len(columns[0])))


def format_time(seconds: float) -> str:
    """Cohen et al.'s time column: str(datetime.timedelta)."""
    return str(datetime.timedelta(seconds=seconds))


def format_float(value: float) -> str:
    """Full precision (repr round-trips exactly): a radius is never rounded up."""
    return repr(float(value))


def confidence_cells(levels, cdf, base) -> dict:
    cells = {}
    for c, r_cdf, r_base in zip(levels, cdf, base):
        cells[f"cdf@{c:g}"], cells[f"baseline@{c:g}"] = format_float(r_cdf), format_float(r_base)
    return cells
