"""Results files: tab-separated, Cohen et al.'s columns first, then the settings and the raw statistics.

Rows are appended and flushed one at a time. Running the same command again resumes: a half-written last
line (an interrupted write) is cut off, rows already there are checked (every field, as recertify checks
them), kept and skipped, and rows made with other settings, data or model, or corrupted, are refused (naming
the line) rather than mixed in. The file is created only when its first row is
ready, so a run that fails its checks leaves no file behind. A run holds an exclusive lock on its results file
for its whole life (filelock.py), so two runs can never write one file.
What a row makes a reader allocate is bounded by its own text: counts stay sparse (`Counts`, made dense a chunk
of rows at a time), a histogram has the bins smoothcert writes, per-class scores are allocated once all are there.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import MAX_COUNT, SmoothcertError, check
from .filelock import SUFFIX, FileLock
from .measures import BINS, MEASURES

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


MAX_CLASSES = 1_000_000          # a file claiming more classes is refused before anything that large is built
DENSE_BYTES = 1 << 24            # dense counts are built at most this many bytes (16 MB) at a time


def check_output_path(path: str) -> None:
    """--out must name a regular file (or none yet) in an existing folder: not /dev/null, a folder or a link to one,
    and not a name ending in .lock, the name of runs' lock files (filelock.py)."""
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


def parse_scores(text: str, num_classes: int, values: int, where: str, what: str) -> list[np.ndarray]:
    """The `values` per-class float arrays of encode_scores, every class once, every value finite (nothing
    num_classes long is allocated before every class is there)."""
    scores: dict[int, list[float]] = {}
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        check(len(parts) == values + 1, f"{where}: {what} must be class:{':'.join(['value'] * values)} items, "
                                        f"got {item!r}")
        c = parse_int(parts[0], where, f"a class in {what}", 0, num_classes - 1)
        check(c not in scores, f"{where}: class {c} appears twice in {what}")
        try:
            scores[c] = [float(part) for part in parts[1:]]
        except ValueError:
            raise SmoothcertError(f"{where}: {what} must hold numbers, got {item!r}") from None
    complete = len(scores) == num_classes     # every class there: only now is anything num_classes long made
    out = [np.array([scores[c][i] for c in range(num_classes)]) for i in range(values)] if complete else []
    check(complete and all(np.all(np.isfinite(v)) for v in out), f"{where}: {what} must give finite values for "
                                                                 f"all {num_classes} classes")
    return out


def format_time(seconds: float) -> str:
    """Cohen et al.'s time column: str(datetime.timedelta)."""
    return str(datetime.timedelta(seconds=seconds))


def format_float(value: float) -> str:
    """Full precision (repr round-trips exactly): a radius is never rounded up."""
    return repr(float(value))


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
        check_output_path(path)
        self._lock = FileLock(path).acquire()     # held until close(): no second run can write this file
        try:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                self._load_existing(labels or {})
        except BaseException:
            self._lock.release()
            raise

    def _load_existing(self, labels: Mapping[int, int]) -> None:
        with open(self.path, "rb") as f:
            raw = f.readline(1 << 16)
        try:
            first = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SmoothcertError(f"{self.path} exists and holds binary data, not a results file (is it a model or "
                                  "data file?); choose another --out") from None
        if not first.endswith("\n") and "\t".join(self.columns).startswith(first):
            return                     # only a half-written header: an interrupted start, treated as empty
        header = first.rstrip("\r\n").split("\t")
        if tuple(header) != self.columns:
            kind = "results file made by another command or another smoothcert version" if "idx" in header \
                else "file that is not a smoothcert results file"
            raise SmoothcertError(f"{self.path} exists and is a {kind} (its header differs); choose another --out")
        for line, row in read_table(self.path, self.columns, resuming=True):
            for key, value in self.settings.items():
                if row.get(key) != value:
                    raise SmoothcertError(
                        f"{self.path} line {line} was made with {key}={row.get(key)} but this run has {key}={value}; "
                        "choose another --out to keep both")
            where = f"{self.path} line {line}"
            idx, label = parse_int(row["idx"], where, "idx"), parse_int(row["label"], where, "label")
            check_row(self.path, line, row, self.columns)     # a corrupted row is refused, not kept and resumed
            if idx in labels and label != labels[idx]:
                raise SmoothcertError(f"{where}: label {label} of input {idx} differs from the data's; it was made "
                                      "on other data; choose another --out")
            if idx in self.done:
                raise SmoothcertError(f"{where}: input {idx} appears twice")
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
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_all(path: str, columns: tuple[str, ...], rows: Iterable[Mapping[str, object]]) -> None:
    """Write a whole results file at once, atomically (used by re-certification): the caller holds its lock."""
    tmp = f"{path}.{os.getpid()}.tmp"
    f = open(tmp, "x", newline="")              # created here (O_EXCL): never a file or link already there
    try:
        with f:
            f.write("\t".join(columns) + "\n")
            for row in rows:
                f.write("\t".join(str(row[c]) for c in columns) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)                          # ours
        raise


def read_table(path: str, columns: Iterable[str], *, resuming: bool = False) -> list[tuple[int, dict[str, str]]]:
    """Every row of a results file with its line number. For reading a finished file (recertify) a cut-off last
    line is refused, naming the line; `resuming` a run, it is left out (an interrupted write, cut off and
    recomputed when the run writes again). A row with missing or extra fields, or a missing column, is refused."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read().replace("\r\n", "\n")        # a file saved with Windows line ends reads the same
    except UnicodeDecodeError:
        raise SmoothcertError(f"{path} holds binary data, not a results file") from None
    if resuming and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    lines = text.split("\n")
    check(lines[0].strip() != "", f"{path} is empty (no header line)")
    header = lines[0].split("\t")
    missing = [c for c in columns if c not in header]
    check(not missing, f"{path} is not a smoothcert results file of this kind (missing columns: {', '.join(missing)})")
    check(text.endswith("\n"), f"{path} line {len(lines)}: the last row is cut off (an interrupted run?); finish "
                               "the run (run the same command again) or delete that line")
    rows = []
    for line, content in enumerate(lines[1:-1], start=2):
        cells = content.split("\t")
        check(len(cells) == len(header), f"{path} line {line}: {len(cells)} fields where the header has {len(header)}")
        rows.append((line, dict(zip(header, cells))))
    return rows


def parse_int(text: str, where: str, what: str, low: int = 0, high: int = MAX_COUNT) -> int:
    """An integer cell in [low, high], or a SmoothcertError naming where it is."""
    try:
        value = int(text)
    except ValueError:
        raise SmoothcertError(f"{where}: {what} must be an integer, got {text!r}") from None
    check(low <= value <= high, f"{where}: {what} must lie in {low}..{high}, got {value}")
    return value


@dataclass(frozen=True, eq=False)
class Counts:
    """Sparse class counts of one row, as the file stores them: the classes present (increasing) and their
    counts, out of `size` classes. A row's few bytes can claim 10^6 classes, so nothing `size` long is built
    per row: `dense` builds a chunk of rows at a time."""
    classes: np.ndarray     # (m,) int64, increasing
    values: np.ndarray      # (m,) int64, each >= 1
    size: int

    def top(self) -> int:
        """The class with the most counts, ties to the lowest (0 when none): the dense counts' argmax."""
        return int(self.classes[self.values.argmax()]) if self.values.size else 0

    def __getitem__(self, c: int) -> int:
        i = int(np.searchsorted(self.classes, c))
        return int(self.values[i]) if i < self.classes.size and self.classes[i] == c else 0


def dense(rows: Sequence[Counts]) -> np.ndarray:
    """(len(rows), K) int64 counts of rows of one size K: a chunk from `in_chunks`."""
    out = np.zeros((len(rows), rows[0].size if rows else 0), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, row.classes] = row.values
    return out


def in_chunks(items: Sequence, num_classes: int) -> Iterator[Sequence]:
    """`items` (rows of num_classes classes) in consecutive slices whose (slice, num_classes) dense arrays of
    8-byte values fit in DENSE_BYTES, at least one row each."""
    step = max(1, DENSE_BYTES // (8 * num_classes))
    for i in range(0, len(items), step):
        yield items[i:i + step]


def parse_counts(text: str, num_classes: int, total: int, where: str, what: str) -> Counts:
    """Sparse counts 'class:count,...' checked: classes in range and given once, counts >= 1, summing (exactly,
    in Python integers) to `total`."""
    counts: dict[int, int] = {}
    for item in filter(None, text.split(",")):
        c, sep, k = item.partition(":")
        check(sep == ":", f"{where}: {what} must be class:count pairs, got {item!r}")
        c = parse_int(c, where, f"a class in {what}", 0, num_classes - 1)
        check(c not in counts, f"{where}: class {c} appears twice in {what}")
        counts[c] = parse_int(k, where, f"a count in {what}", 1)
    check(sum(counts.values()) == total, f"{where}: {what} sum to {sum(counts.values())}, not to the row's {total} "
                                         "samples")
    classes = sorted(counts)
    return Counts(np.array(classes, dtype=np.int64), np.array([counts[c] for c in classes], dtype=np.int64),
                  num_classes)


def _check_settings(where: str, row: dict) -> tuple[str, float, float]:
    """(noise, scale, alpha) of a row: a known noise, a finite scale > 0, alpha in (0, 1)."""
    from .noises import NOISES
    check(row["noise"] in NOISES, f"{where}: unknown noise {row['noise']!r} (known: {', '.join(NOISES)})")
    try:
        scale, alpha = float(row["scale"]), float(row["alpha"])
    except ValueError:
        raise SmoothcertError(f"{where}: scale and alpha must be numbers, got {row['scale']!r}, {row['alpha']!r}") from None
    check(np.isfinite(scale) and scale > 0, f"{where}: scale must be a finite number > 0, got {row['scale']!r}")
    check(0 < alpha < 1, f"{where}: alpha must lie in (0, 1), got {row['alpha']!r}")
    return row["noise"], scale, alpha


def parse_float(text: str, where: str, what: str, low: float = -np.inf, high: float = np.inf) -> float:
    """A finite number cell in [low, high], or a SmoothcertError naming where it is."""
    try:
        value = float(text)
    except ValueError:
        raise SmoothcertError(f"{where}: {what} must be a number, got {text!r}") from None
    check(np.isfinite(value) and low <= value <= high, f"{where}: {what} must be a finite number in [{low:g}, {high:g}], "
                                                       f"got {text!r}")
    return value


def check_certify_row(path: str, line: int, row: dict) -> tuple[tuple, Counts, Counts]:
    """((noise, scale, alpha), selection counts, estimation counts) of one certify row, every field checked:
    counts summing to n0 and to the row's samples (= n for a fixed-n row, <= n for an adaptive one)."""
    where = f"{path} line {line}"
    parse_int(row["idx"], where, "idx")
    key = _check_settings(where, row)
    k = parse_int(row["num_classes"], where, "num_classes", 1, MAX_CLASSES)
    parse_int(row["label"], where, "label", 0, k - 1)
    mode = row["mode"]
    check(mode == "fixed" or mode.startswith(("input-n:", "target:")), f"{where}: unknown mode {mode!r}")
    n0, n = parse_int(row["n0"], where, "n0", 0), parse_int(row["n"], where, "n", 1)
    samples = parse_int(row["samples"], where, "samples", 1, n)
    check(mode != "fixed" or samples == n, f"{where}: samples {samples} differs from n {n} in a fixed-n row")
    c0 = parse_counts(row["counts_selection"], k, n0, where, "counts_selection")
    c1 = parse_counts(row["counts"], k, samples, where, "counts")
    return key, c0, c1


def check_soft_row(path: str, line: int, row: dict) -> tuple[tuple, tuple, tuple]:
    """A soft certify row: (key, (selection counts, selection score sums), (counts, score sums, sums of squares,
    samples)), the certify fields checked by `check_certify_row` and the scores of every class finite."""
    key, c0, c1 = check_certify_row(path, line, row)
    where = f"{path} line {line}"
    s0, = parse_scores(row["scores_selection"], c1.size, 1, where, "scores_selection")
    s1, q1 = parse_scores(row["scores"], c1.size, 2, where, "scores")
    _check_score_sums(where, "scores_selection", int(c0.values.sum()), s0)
    _check_score_sums(where, "scores", int(c1.values.sum()), s1, q1)
    return key, (c0, s0), (c1, s1, q1, int(row["samples"]))


def _check_score_sums(where: str, what: str, n: int, sums: np.ndarray, squares: np.ndarray | None = None) -> None:
    """Sums over n samples of softmax scores (each in [0, 1], summing to 1 over the classes) must be possible:
    each class's sum in [0, n], all classes' together n, and squares between sum^2 / n and the sum (x^2 <= x)."""
    tol = 1e-6 * n + 1e-9                                         # float64 rounding of the engine's sums
    ok = bool(np.all(sums >= -tol) and np.all(sums <= n + tol)) and abs(float(sums.sum()) - n) <= tol
    if ok and squares is not None:
        ok = bool(np.all(squares <= sums + tol) and np.all(squares * n >= sums * sums * (1 - 1e-6) - tol))
    check(ok, f"{where}: {what} are not sums of softmax scores over the row's {n} samples (each class's sum in "
              f"[0, {n}], all together {n}, sums of squares between sum^2/n and the sum); was the file edited?")


def check_predict_row(path: str, line: int, row: dict) -> Counts:
    """The class counts of one predict row, every field checked: counts summing to n, a p-value in [0, 1]."""
    where = f"{path} line {line}"
    parse_int(row["idx"], where, "idx")
    _check_settings(where, row)
    k = parse_int(row["num_classes"], where, "num_classes", 1, MAX_CLASSES)
    parse_int(row["label"], where, "label", 0, k - 1)
    parse_float(row["pvalue"], where, "pvalue", 0, 1)
    return parse_counts(row["counts"], k, parse_int(row["n"], where, "n", 1), where, "counts")


@dataclass(frozen=True)
class ConfidenceRow:
    """What `check_confidence_row` read from one certified-confidence row."""
    measure: str
    scale: float
    alpha: float
    n: int
    num_thresholds: int
    histogram: Counts        # over measures.BINS bins, summing to n
    measure_sum: float


def check_confidence_row(path: str, line: int, row: dict) -> ConfidenceRow:
    """One certified-confidence row, every field checked: a known measure, the histogram (on the bins smoothcert
    writes) summing to n, the measure's sum possible for n samples, selection counts summing to n0, radii finite
    and >= 0."""
    where = f"{path} line {line}"
    parse_int(row["idx"], where, "idx")
    _, scale, alpha = _check_settings(where, row)
    k = parse_int(row["num_classes"], where, "num_classes", 1, MAX_CLASSES)
    parse_int(row["label"], where, "label", 0, k - 1)
    measure = row["measure"]
    check(measure in MEASURES, f"{where}: unknown measure {measure!r} (known: {', '.join(MEASURES)})")
    low, high = MEASURES[measure]
    n0, n = parse_int(row["n0"], where, "n0", 0), parse_int(row["n"], where, "n", 1)
    num_thresholds = parse_int(row["num_thresholds"], where, "num_thresholds", 1)
    check(row["bins"] == str(BINS), f"{where}: bins must be {BINS} (the histogram smoothcert writes), got "
                                    f"{row['bins']!r}")
    hist = parse_counts(row["histogram"], BINS, n, where, "histogram")
    total = parse_float(row["measure_sum"], where, "measure_sum")
    check(low * n - 1e-6 <= total <= high * n + 1e-6, f"{where}: measure_sum {total} is impossible for {n} samples")
    parse_counts(row["counts_selection"], k, n0, where, "counts_selection")
    parse_scores(row["scores_selection"], k, 1, where, "scores_selection")
    for column in row:
        if column.startswith(("cdf@", "baseline@")):
            parse_float(row[column], where, column, 0)
    return ConfidenceRow(measure, scale, alpha, n, num_thresholds, hist, total)


def check_row(path: str, line: int, row: dict, columns: tuple[str, ...]) -> None:
    """Check one row of a results file with this header (certify, soft certify, predict or confidence), naming
    the file and line of the first bad field."""
    if columns == CERTIFY_COLUMNS:
        check_certify_row(path, line, row)
    elif columns == SOFT_COLUMNS:
        check_soft_row(path, line, row)
    elif columns == PREDICT_COLUMNS:
        check_predict_row(path, line, row)
    elif columns[:len(CONFIDENCE_FIRST)] == CONFIDENCE_FIRST and columns[-len(CONFIDENCE_LAST):] == CONFIDENCE_LAST:
        check_confidence_row(path, line, row)
