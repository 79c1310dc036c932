"""Writing results files: rows appended and flushed one at a time (`ResultsWriter`), or a whole file at once,
atomically (`write_all`, for re-certification).

Running the same command again resumes: a half-written last row (an interrupted write) is cut off, rows
already there are checked (every field, as recertify checks them), kept and skipped, and rows made with other
settings, data or model, or corrupted, are refused (naming the line) rather than mixed in. The file is created
only when its first row is ready, so a run that fails its checks leaves no file behind, and it is created with its
header in one step (written to a temporary file, then linked in place), so no crash leaves a half header: an
existing file whose first line is not a complete header is not one smoothcert wrote, and is refused, never
changed (an empty file is taken as new: it holds nothing to lose). A run holds an exclusive
lock on its results file for its whole life (lock.py), so two runs can never write one file.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping

from ..errors import SmoothcertError
from .columns import check_output_path
from .lock import FileLock
from .rows import check_row, parse_int, read_table


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
            self._resuming = os.path.exists(path) and os.path.getsize(path) > 0
            if self._resuming:
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
        if not first.endswith("\n"):
            raise SmoothcertError(f"{self.path} exists and its first line is not a complete results header (smoothcert "
                                  "creates a results file with its whole header at once), so it is left as it is; "
                                  "choose another --out")
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
        header = ("\t".join(self.columns) + "\n").encode()
        if not self._resuming:
            if os.path.isfile(self.path) and os.path.getsize(self.path) == 0:   # a user's empty file (mktemp)
                with open(self.path, "ab") as f:
                    f.write(header)
            else:
                _create(self.path, header)             # refused if a file appeared since the run started
        else:                                          # its header was checked: cut a half-written last row
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.seek(0)
                    data = f.read()
                    f.truncate(data.rfind(b"\n") + 1)
        self._file = open(self.path, "a", newline="")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _create(path: str, header: bytes) -> None:
    """Create `path` holding `header`, in one step: never a half header, never over a file that appeared."""
    tmp = f"{path}.{os.getpid()}.tmp"
    f = open(tmp, "xb")                           # created here (O_EXCL): never a file or link already there
    try:
        with f:
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)                    # fails if path exists: nothing is replaced
        except FileExistsError:
            raise
        except OSError:                           # a file system without hard links: created exclusively, one write
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(fd, "wb") as out:
                out.write(header)
    except FileExistsError:
        raise SmoothcertError(f"{path} was created by something else while this run started; choose another "
                              "--out") from None
    finally:
        os.unlink(tmp)                            # ours


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
