"""The lock that keeps two runs from writing one results file, and the check readers make without locking.

`FileLock(OUT)` is the writer's lock: the file `OUT.lock`, which smoothcert creates itself and holds with flock.
`writer_of(PATH)` tells a reader whether a live run is writing PATH; it creates, changes and deletes nothing.

Readers take no lock. A writer appends whole rows and flushes each, so a reader sees the rows written so far and
refuses a cut-off last one (rows.read_table). A shared lock could not be sound and harmless at once: a reader
may not create a lock file (the folder may be read-only, and it must leave nothing behind), so it could lock only
when a lock file happened to exist, and while it held one a starting writer would be refused as if a run were
writing. recertify asks `writer_of` and refuses an input that a live run is still writing.
"""
from __future__ import annotations

import datetime
import os
import socket
import stat
import sys
import time

from ..errors import SmoothcertError, check

SUFFIX = ".lock"                                    # OUT.lock; an --out ending in it is refused (columns.py)
MAGIC = b"smoothcert results lock: "                # the first bytes of every lock file smoothcert creates
# opened never through a link, and not inherited by programs started from here (one would keep the lock alive)
_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_TRIES, _PAUSE = 200, 0.005                         # about 1 s of retries while another run creates or removes


class FileLock:
    """An exclusive lock on `path` while a run writes it: the lock file `path.lock`.

    Design (it must never destroy a file, and must die with its process):
    - The lock file is created with O_CREAT | O_EXCL (and O_NOFOLLOW): never a file or symbolic link already
      there, never truncated. Its creator then holds it with flock and writes MAGIC and the holder (pid, host,
      command) into it; the kernel drops the flock when the process dies, even after kill -9.
    - Release deletes the file only while still holding it and only if the name still refers to the file it
      created.
    - Finding `path.lock` already there: if another process holds its flock, the run is refused naming the holder
      written in it. If nobody holds it and it starts with MAGIC, it is the lock of a run that died (kill -9): it
      is deleted while this process holds its flock, so two runs never both decide to delete it, and the run
      creates its own. A file without MAGIC (a symlink, a folder, a user's own `results.lock`) is refused and
      left as it is; one still empty, or holding part of MAGIC, is retried for about a second first, since a
      run that has just created its lock writes MAGIC only after taking the flock.
    Where flock does not exist (Windows) nothing is locked.
    """

    def __init__(self, path: str):
        self.path, self.lock, self.fd = os.fspath(path), os.fspath(path) + SUFFIX, None

    def acquire(self) -> "FileLock":
        try:
            import fcntl
        except ImportError:                       # pragma: no cover - not POSIX
            return self
        for _ in range(_TRIES):
            try:
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS, 0o644)
            except FileExistsError:
                if not self._clear_stale(fcntl):
                    time.sleep(_PAUSE)
                continue
            except OSError as e:
                raise SmoothcertError(f"cannot create the lock file {self.lock} ({e.strerror}): --out must be in "
                                      "a folder this user can write") from None
            try:
                _flock(fcntl, fd, fcntl.LOCK_EX)  # retried while a starting run looks at the file
                command = " ".join(["smoothcert", *sys.argv[1:]])[:300]
                os.write(fd, MAGIC + f"pid {os.getpid()} on {socket.gethostname()} since "
                                     f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}: {command}\n".encode())
            except BaseException:
                _drop(fd, self.lock)
                raise
            self.fd = fd
            return self
        raise SmoothcertError(f"{self.lock} exists, stays empty (or holds only the start of a lock) and no run "
                              "holds it: if it is yours, move it away, or choose another --out")

    def _clear_stale(self, fcntl) -> bool:
        """`self.lock` exists: refuse it if a live run holds it or it is not smoothcert's; delete it if it is the
        lock of a dead run. True when the caller should retry at once, False after a short pause."""
        try:
            st = os.lstat(self.lock)
        except FileNotFoundError:
            return True                           # removed meanwhile
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else \
            "a special file"
        check(stat.S_ISREG(st.st_mode), f"{self.lock} exists and is {kind}, not a lock smoothcert made; move it "
                                        "away or choose another --out")
        try:
            fd = os.open(self.lock, os.O_RDONLY | os.O_NONBLOCK | _FLAGS)
        except FileNotFoundError:
            return True
        try:
            if not _same(fd, st):
                return True                       # replaced meanwhile
            try:                                  # waits while another run only looks at it
                _flock(fcntl, fd, fcntl.LOCK_EX)
            except BlockingIOError:
                raise SmoothcertError(f"{self.path} is being written by another run ({holder(fd)}); wait for it to "
                                      "end or choose another --out") from None
            head = os.pread(fd, len(MAGIC), 0)
            if head != MAGIC:                     # not ours, or a run has just created it and not yet written
                check(MAGIC.startswith(head), f"{self.lock} exists and is not a lock smoothcert made; if it is "
                                              "yours, move it away, or choose another --out")
                return False
            if _same(fd, os.lstat(self.lock)):    # a dead run's lock, and we hold it: no one else can remove it now
                os.unlink(self.lock)
            return True
        except FileNotFoundError:
            return True
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            _drop(fd, self.lock)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _same(fd: int, st: os.stat_result) -> bool:
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)


def _drop(fd: int, lock: str) -> None:
    """Delete the lock file we created, while still holding it (a waiting run then retries on a fresh file), and
    only if its name still refers to it; then close it."""
    try:
        if _same(fd, os.lstat(lock)):
            os.unlink(lock)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _flock(fcntl, fd: int, kind: int) -> None:
    """flock, retried for about a second before BlockingIOError: a run starting up holds another's lock file only
    for a moment (to look at it), a run writing holds its own for its whole life."""
    for attempt in range(_TRIES):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt + 1 == _TRIES:
                raise
            time.sleep(_PAUSE)


def holder(fd: int) -> str:
    """Who holds a lock file, as its holder wrote it: 'pid P on HOST since T: COMMAND'."""
    text = os.pread(fd, 500, 0)
    text = text[len(MAGIC):] if text.startswith(MAGIC) else b""
    return text.decode("utf-8", "replace").strip() or "another process"


def writer_of(path: str) -> str | None:
    """The holder of `path`'s lock when a live run is writing `path`, else None. For readers: it creates, changes
    and deletes nothing (a read-only folder is fine), and two readers never stop each other."""
    try:
        import fcntl
    except ImportError:                           # pragma: no cover - not POSIX
        return None
    lock = os.fspath(path) + SUFFIX
    try:
        if not stat.S_ISREG(os.lstat(lock).st_mode):
            return None
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | _FLAGS)
    except OSError:
        return None
    try:
        _flock(fcntl, fd, fcntl.LOCK_SH)        # shared: other readers' probes never stop it
        return None
    except BlockingIOError:
        return holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
