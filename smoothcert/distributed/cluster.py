"""Reaching a Ray cluster within a deadline, and how many workers it holds (for `distributed.RayExecutor`).

`ray.init(address)` has no timeout of its own: it retries an address where nothing listens, or that does not answer
as a Ray cluster, for many minutes (Ray 2.60: 20 tries of about 36 s each). So an address is first probed with a
TCP connection, and ray.init then runs in a daemon thread that is given up on after the deadline (the thread is
left to Ray's own retries and ends with the process). Ray's C++ core logs each failed try straight to file
descriptor 2, so while ray.init runs that descriptor points at /dev/null: given up on, it stays there (the thread
still tries) and sys.stderr is reopened on the real one, so the error is the one line the user sees. The `ray`
module is passed in: Ray is imported by `require_ray` alone.
"""
from __future__ import annotations

import os
import socket
import sys
import threading

from ..errors import SmoothcertError, check

RAY_MISSING = "Ray is not installed: pip install 'smoothcert[ray]'"

CONNECT_TIMEOUT = 30.0           # seconds to reach a cluster given by address


def join(ray, address: str, timeout: float | None = None, **kwargs) -> None:
    """ray.init(address=address, **kwargs), or a SmoothcertError when the address is not reachable or does not
    answer as a Ray cluster within `timeout` seconds (default CONNECT_TIMEOUT)."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    host, sep, port = address.rpartition(":")
    host = host.split("://")[-1].strip("[]")
    if sep and host and port.isdigit():              # host:port; 'auto' is found by Ray itself
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError as exc:
            raise SmoothcertError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc} (is one running "
                                  "there? `ray start --head` starts one)") from None
    outcome: list = []

    def init():
        try:
            ray.init(address=address, **kwargs)
            outcome.append(None)
        except BaseException as exc:                  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=init, name="smoothcert-ray-init", daemon=True)
    real = _mute_fd2()
    try:
        thread.start()
        thread.join(timeout)
    finally:
        if outcome or thread.ident is None:
            os.dup2(real, 2)                          # ray.init is done: Ray's later logs are the user's to see
        elif _on_fd2(sys.stderr):                     # it still tries (and logs) in the background
            sys.stderr = open(os.dup(real), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
        os.close(real)
    check(bool(outcome), f"no Ray cluster answered at {address} within {timeout:g} s (is it a Ray cluster's address, "
                         "host:port of its head node?)")
    if outcome[0] is not None:
        raise outcome[0]


def _mute_fd2() -> int:
    """Point file descriptor 2 at /dev/null; return a copy of what it was."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    real, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    return real


def _on_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):    # pytest's capture, a StringIO
        return False


def worker_count(have: dict, workers: int | None, num_gpus: float, where: str = "the Ray cluster") -> int:
    """The workers to start on resources `have` (ray.cluster_resources()): `workers`, or by default one per CPU
    (per `num_gpus` GPUs). More is refused: each worker holds a CPU (or its GPUs), and the rest would never start."""
    fits = max(1, int(have.get("GPU", 0) / num_gpus if num_gpus else have.get("CPU", 1)))
    if workers is not None and workers > fits:
        what = f"{have.get('GPU', 0):g} GPUs ({num_gpus:g} per worker)" if num_gpus else f"{have.get('CPU', 1):g} CPUs"
        raise SmoothcertError(f"{workers:,} workers asked for (--workers), but {where} has {what}: at most {fits}")
    return fits if workers is None else workers


def require_ray():
    """The `ray` module, or a SmoothcertError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise SmoothcertError(RAY_MISSING) from None
    return ray

