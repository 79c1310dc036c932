"""Reading results files back: every row with its line number (`read_table`), each cell parsed (`parse_int`,
`parse_float`, sparse `Counts`, per-class scores) and each kind of row checked field by field (`check_row`), naming
the file and line of the first bad field. What a row makes a reader allocate is bounded by its own text: counts
stay sparse (made dense a chunk of rows at a time), a histogram has the bins smoothcert writes, per-class scores
are allocated once all are there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import MAX_COUNT, SmoothcertError, check
from ..measures import BINS, MEASURES
from ..noises import norms
from ..noises.record import parse_cell
from .columns import CERTIFY_COLUMNS, CONFIDENCE_FIRST, CONFIDENCE_LAST, PREDICT_COLUMNS, SOFT_COLUMNS

MAX_CLASSES = 1_000_000          # a file claiming more classes is refused before anything that large is built
MAX_LINE = 16 << 20               # a results line longer than this is refused (16 MiB)
DENSE_BYTES = 1 << 24            # dense counts are built at most this many bytes (16 MB) at a time


def read_table(path: str, columns: Iterable[str], *, resuming: bool = False) -> list[tuple[int, dict[str, str]]]:
    """Every row of a results file with its line number, read a line at a time (a refusal at line 14 reads no
    further) and no line longer than MAX_LINE. For reading a finished file (recertify) a cut-off last line is
    refused, naming the line; `resuming` a run, it is left out (an interrupted write, cut off and recomputed when
    the run writes again). A row with missing or extra fields, or a missing column, is refused. Windows line ends
    (CRLF) read the same."""
    with open(path, "rb") as f:
        lines = _lines(f, path)
        first = next(lines, None)
        if first is not None and resuming and not first[2]:
            first = None                                    # a half-written header: nothing written yet
        check(first is not None and first[1].strip() != "", f"{path} is empty (no header line)")
        header = first[1].split("\t")
        missing = [c for c in columns if c not in header]
        check(not missing, f"{path} is not a smoothcert results file of this kind (missing columns: "
                           f"{', '.join(missing)})")
        check(first[2], _cut_off(path, 1))
        rows = []
        for line, content, complete in lines:
            if not complete:
                check(resuming, _cut_off(path, line))
                break
            cells = content.split("\t")
            check(len(cells) == len(header), f"{path} line {line}: {len(cells)} fields where the header has "
                                             f"{len(header)}")
            rows.append((line, dict(zip(header, cells))))
    return rows


def _cut_off(path: str, line: int) -> str:
    return (f"{path} line {line}: the last row is cut off (an interrupted run?); finish the run (run the same command "
            "again) or delete that line")


def _lines(f, path: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, text without its line end, whether it ended in a newline) for each line of binary file f."""
    number = 0
    while True:
        raw = f.readline(MAX_LINE + 2)
        if not raw:
            return
        number += 1
        complete = raw.endswith(b"\n")
        body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if complete else raw
        check(len(body) <= MAX_LINE and (complete or len(raw) < MAX_LINE + 2),
              f"{path} line {number} is longer than {MAX_LINE >> 20} MiB, which no results row is (dense counts of "
              "100,000 classes take under 6 MB); it is not read further")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SmoothcertError(f"{path} holds binary data, not a results file") from None
        yield number, text, complete


def parse_int(text: str, where: str, what: str, low: int = 0, high: int = MAX_COUNT) -> int:
    """An integer cell in [low, high], or a SmoothcertError naming where it is."""
    try:
        value = int(text)
    except ValueError:
        raise SmoothcertError(f"{where}: {what} must be an integer, got {text!r}") from None
    check(low <= value <= high, f"{where}: {what} must lie in {low}..{high}, got {value}")
    return value


def parse_scores(text: str, num_classes: int, values: int, where: str, what: str) -> list[np.ndarray]:
    """The `values` per-class float arrays of encode_scores, every class once, every value finite (nothing
    num_classes long is allocated before every class is there)."""
    check(text.count(",") <= num_classes, f"{where}: {what} lists more than the row's {num_classes} classes")
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
    check(text.count(",") <= num_classes, f"{where}: {what} lists more than the row's {num_classes} classes")
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
    """(noise, scale, alpha) of a row: a known noise (its whole cell: noises.record), a finite scale > 0, alpha in
    (0, 1)."""
    try:
        parse_cell(row["noise"])
    except SmoothcertError as e:
        raise SmoothcertError(f"{where}: {e}") from None
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
    try:
        norm, dims = norms.parse(row["norm"])
    except SmoothcertError as e:
        raise SmoothcertError(f"{where}: {e}") from None
    check(norm != norms.LINF or dims is not None, f"{where}: an l-inf norm cell must carry the inputs' dimension, "
                                                  f"'linf:d=D', got {row['norm']!r}")
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
    candidate: int           # A: the largest selection score sum, ties to the lowest class (as soft.choose)


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
    selection, = parse_scores(row["scores_selection"], k, 1, where, "scores_selection")
    for column in row:
        if column.startswith(("cdf@", "baseline@")):
            parse_float(row[column], where, column, 0)
    return ConfidenceRow(measure, scale, alpha, n, num_thresholds, hist, total, int(np.argmax(selection)))


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
