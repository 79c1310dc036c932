"""Results files: tab-separated, Cohen et al.'s columns first, then the settings and the raw statistics.

Rows are appended and flushed one at a time. Running the same command again resumes: a half-written last
line (an interrupted write) is cut off, rows already there are kept and skipped, and rows made with other
settings are refused rather than mixed in. The file is created only when its first row is ready, so a run
that fails its checks leaves no file behind.
"""
from __future__ import annotations

import csv
import datetime
import os
from typing import Iterable, Mapping

import numpy as np

from .errors import SmoothcertError, check

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time",
                   "noise", "scale", "certificate", "norm", "alpha", "n0", "n", "seed",
                   "pA_lower", "pB_upper", "num_classes", "counts_selection", "counts")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time",
                   "noise", "scale", "alpha", "n", "seed", "pvalue", "num_classes", "counts")


def encode_counts(counts: np.ndarray) -> str:
    """Sparse class counts: 'class:count' for the non-zero classes, comma separated ('' when all zero)."""
    return ",".join(f"{c}:{int(k)}" for c, k in enumerate(counts) if k)


def decode_counts(text: str, num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    for item in filter(None, text.split(",")):
        c, k = item.split(":")
        counts[int(c)] = int(k)
    return counts


def format_time(seconds: float) -> str:
    """Cohen et al.'s time column: str(datetime.timedelta)."""
    return str(datetime.timedelta(seconds=seconds))


def format_float(value: float) -> str:
    """Full precision (repr round-trips exactly): a radius is never rounded up."""
    return repr(float(value))


def read_rows(path: str) -> list[dict[str, str]]:
    """All complete rows of a results file as dicts (a half-written last line is ignored)."""
    with open(path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    lines = text.splitlines()
    if not lines:
        return []
    return list(csv.DictReader(lines, delimiter="\t"))


class ResultsWriter:
    """Append rows to a results file, resuming an earlier run of the same settings.

    Args:
        path: the results file.
        columns: its header.
        settings: column -> value that every row of this run has; an existing file must agree.
        labels: index -> true label of the data, to check an existing file was made on the same data.
    """

    def __init__(self, path: str, columns: tuple[str, ...], settings: Mapping[str, str],
                 labels: Mapping[int, int] | None = None):
        self.path, self.columns, self.settings = path, columns, dict(settings)
        self.done: set[int] = set()
        self._file = None
        parent = os.path.dirname(os.path.abspath(path))
        check(os.path.isdir(parent), f"output folder does not exist: {parent}")
        if os.path.exists(path) and os.path.getsize(path) > 0:
            self._load_existing(labels or {})

    def _load_existing(self, labels: Mapping[int, int]) -> None:
        with open(self.path, newline="") as f:
            first = f.readline()
        if not first.endswith("\n") and "\t".join(self.columns).startswith(first):
            return                     # only a half-written header: an interrupted start, treated as empty
        header = first.rstrip("\n").split("\t")
        if tuple(header) != self.columns:
            raise SmoothcertError(f"{self.path} exists and is not a results file of this kind "
                                  "(its header differs); choose another --out")
        for line, row in enumerate(read_rows(self.path), start=2):
            for key, value in self.settings.items():
                if row.get(key) != value:
                    raise SmoothcertError(
                        f"{self.path} line {line} was made with {key}={row.get(key)} but this run has {key}={value}; "
                        "choose another --out to keep both")
            idx = int(row["idx"])
            if idx in labels and int(row["label"]) != labels[idx]:
                raise SmoothcertError(f"{self.path} line {line}: label {row['label']} of input {idx} differs from the "
                                      "data's; it was made on other data; choose another --out")
            if idx in self.done:
                raise SmoothcertError(f"{self.path} line {line}: input {idx} appears twice")
            self.done.add(idx)

    def write(self, row: Mapping[str, object]) -> None:
        if self._file is None:
            self._open()
        values = {**self.settings, **row}
        self._file.write("\t".join(str(values[c]) for c in self.columns) + "\n")
        self._file.flush()
        self.done.add(int(row["idx"]))

    def _open(self) -> None:
        if os.path.exists(self.path):  # cut a half-written last line (or header) left by an interrupted run
            with open(self.path, "rb+") as f:
                data = f.read()
                if not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a", newline="")
        if not exists:
            self._file.write("\t".join(self.columns) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_all(path: str, columns: tuple[str, ...], rows: Iterable[Mapping[str, object]]) -> None:
    """Write a whole results file at once, atomically (used by re-certification)."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        f.write("\t".join(columns) + "\n")
        for row in rows:
            f.write("\t".join(str(row[c]) for c in columns) + "\n")
    os.replace(tmp, path)
