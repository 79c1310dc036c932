"""Certify or predict a whole data set into a results file: progress, resume, one row per input."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import certificates
from .errors import SmoothcertError, check
from .models import fingerprint
from .noises import NOISES
from .results import (
    CERTIFY_COLUMNS,
    MAX_CLASSES,
    PREDICT_COLUMNS,
    FileLock,
    ResultsWriter,
    check_output_path,
    encode_counts,
    format_float,
    format_time,
    parse_counts,
    parse_int,
    read_table,
    write_all,
)
from .smooth import Smooth


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is the first CUDA device when there is one, else the CPU; a device this machine cannot run a model
    on is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SmoothcertError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    check(device.type in ("cpu", "cuda", "mps"), f"device {name!r} cannot run a model (use auto, cpu, cuda, cuda:N or mps)")
    if device.type == "cuda":
        check(torch.cuda.is_available(), f"device {name} asked for, but CUDA is not available on this machine")
        check(device.index is None or device.index < torch.cuda.device_count(),
              f"device {name} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps":
        check(torch.backends.mps.is_available(), f"device {name} asked for, but MPS is not available on this machine")
    return device


class Progress:
    """A progress bar over inputs that also shows noisy samples per second."""

    def __init__(self, total: int, done: int, enabled: bool):
        # into a log file, a line every 10 s rather than a redraw every 0.1 s
        self.interval = 0.1 if sys.stderr.isatty() else 10.0
        self.bar = tqdm(total=total, initial=done, unit="input", disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True, smoothing=0.1, mininterval=self.interval)
        self.samples, self.t0, self.shown = 0, time.perf_counter(), 0.0

    def on_batch(self, size: int) -> None:
        self.samples += size
        now = time.perf_counter()
        if now - self.shown > self.interval:
            self.shown = now
            self.bar.set_postfix_str(f"{self.samples / max(now - self.t0, 1e-9):,.0f} samples/s", refresh=False)
            self.bar.refresh()

    def close(self):
        self.bar.close()


def _check_labels(smoothed: Smooth, data, indices) -> None:
    labels = data.y[indices]
    check(int(labels.min()) >= 0 and int(labels.max()) < smoothed.num_classes,
          f"labels must lie in 0..{smoothed.num_classes - 1} (the model's classes), found {int(labels.min())}.."
          f"{int(labels.max())}")


@dataclass(frozen=True)
class Job:
    """What to run over a data set: a method of Smooth that takes (xs, *args, indices=, skip=, on_batch=,
    **kwargs) and yields one result per input in order. Plain data, so a Ray worker can run it too."""

    method: str
    args: tuple
    kwargs: dict


def run_locally(smoothed: Smooth, job: Job, xs, indices, skip, on_batch):
    """The default executor: the job's method in this process."""
    return getattr(smoothed, job.method)(xs, *job.args, indices=indices, skip=skip, on_batch=on_batch, **job.kwargs)


def certify_dataset(smoothed: Smooth, data, indices, out: str, *, n0: int, n: int, alpha: float,
                    batch_size: int, seed: int = 0, certificate: str | None = None, norm: str | None = None,
                    progress: bool = True, model_id: str | None = None, executor=None) -> int:
    """CERTIFY data.x[indices] into `out` (resuming it), returning the number of rows written now. `model_id`
    is recorded in the file (default: `models.fingerprint` of the model) and a resumed run must match it;
    `executor` runs the job (default: `run_locally`)."""
    spec, norm = certificates.resolve(certificate, smoothed.noise, norm)
    settings = {"certificate": spec.name, "norm": norm, "alpha": format_float(alpha), "n0": str(n0), "n": str(n),
                "seed": str(seed)}
    job = Job("certify_many", (n0, n, alpha, batch_size), {"seed": seed, "certificate": spec.name, "norm": norm})

    def row(c):
        return {"radius": format_float(c.radius), "pA_lower": format_float(c.p_lower),
                "pB_upper": format_float(c.p_upper), "counts_selection": encode_counts(c.counts_selection),
                "counts": encode_counts(c.counts)}

    return _to_file(smoothed, data, indices, out, CERTIFY_COLUMNS, settings, job, row, progress, model_id, executor)


def recertify(path: str, certificate: str, out: str, norm: str | None = None, overwrite: bool = False) -> int:
    """Recompute every row of a certify results file with another certificate, from its stored counts alone
    (no model), and write the same layout to `out` atomically. Every row is checked first (counts summing to
    the row's n0 and n, classes in range, each input once), and a refusal names the line. Returns the number of
    rows."""
    check_output_path(out)
    check(overwrite or not os.path.exists(out), f"{out} exists; choose another --out (or --force to replace it)")
    same = os.path.exists(out) and os.path.samefile(path, out)
    with FileLock(path), (contextlib.nullcontext() if same else FileLock(out)):   # neither is being written
        table = read_table(path, CERTIFY_COLUMNS)
        check(len(table) > 0, f"{path} has no rows to re-certify")
        groups: dict[tuple, list[tuple]] = {}
        lines: dict[int, int] = {}
        for line, row in table:
            key, c0, c1 = _checked_row(path, line, row)
            check(int(row["idx"]) not in lines, f"{path} line {line}: input {row['idx']} appears twice "
                                                f"(first at line {lines.get(int(row['idx']))})")
            lines[int(row["idx"])] = line
            groups.setdefault(key, []).append((row, c0, c1))
        for (noise_name, scale, alpha), members in groups.items():
            noise = NOISES[noise_name](scale)
            spec, row_norm = certificates.resolve(certificate, noise, norm)
            v = certificates.certify(spec.name, np.stack([m[1] for m in members]), np.stack([m[2] for m in members]),
                                     noise, alpha, row_norm)
            for j, (row, _, _) in enumerate(members):
                row.update(certificate=spec.name, norm=row_norm, predict=int(v.prediction[j]),
                           radius=format_float(v.radius[j]), correct=int(int(v.prediction[j]) == int(row["label"])),
                           pA_lower=format_float(v.p_lower[j]), pB_upper=format_float(v.p_upper[j]))
        write_all(out, CERTIFY_COLUMNS, [row for _, row in table])
    return len(table)


def _checked_row(path: str, line: int, row: dict) -> tuple[tuple, np.ndarray, np.ndarray]:
    """((noise, scale, alpha), selection counts, estimation counts) of one certify row, every field checked."""
    where = f"{path} line {line}"
    parse_int(row["idx"], where, "idx")
    check(row["noise"] in NOISES, f"{where}: unknown noise {row['noise']!r} (known: {', '.join(NOISES)})")
    try:
        scale, alpha = float(row["scale"]), float(row["alpha"])
    except ValueError:
        raise SmoothcertError(f"{where}: scale and alpha must be numbers, got {row['scale']!r}, {row['alpha']!r}") from None
    check(np.isfinite(scale) and scale > 0, f"{where}: scale must be a finite number > 0, got {row['scale']!r}")
    check(0 < alpha < 1, f"{where}: alpha must lie in (0, 1), got {row['alpha']!r}")
    k = parse_int(row["num_classes"], where, "num_classes", 1, MAX_CLASSES)
    parse_int(row["label"], where, "label", 0, k - 1)
    n0, n = parse_int(row["n0"], where, "n0", 1), parse_int(row["n"], where, "n", 1)
    c0 = parse_counts(row["counts_selection"], k, n0, where, "counts_selection")
    c1 = parse_counts(row["counts"], k, n, where, "counts")
    return (row["noise"], scale, alpha), c0, c1


def predict_dataset(smoothed: Smooth, data, indices, out: str, *, n: int, alpha: float, batch_size: int,
                    seed: int = 0, progress: bool = True, model_id: str | None = None, executor=None) -> int:
    """PREDICT data.x[indices] into `out` (resuming it), returning the number of rows written now."""
    settings = {"alpha": format_float(alpha), "n": str(n), "seed": str(seed)}
    job = Job("predict_many", (n, alpha, batch_size), {"seed": seed})

    def row(p):
        return {"pvalue": format_float(p.pvalue), "counts": encode_counts(p.counts)}

    return _to_file(smoothed, data, indices, out, PREDICT_COLUMNS, settings, job, row, progress, model_id, executor)


def _to_file(smoothed, data, indices, out, columns, settings, job, row, progress, model_id=None, executor=None) -> int:
    """Run `job` over the inputs not yet in `out`, writing Cohen's columns plus `row(result)` for each."""
    xs = data.x[indices]
    smoothed.probe(xs[:1])                      # model and input shape checked before any file is touched
    _check_labels(smoothed, data, indices)
    settings = {"noise": smoothed.noise.name, "scale": format_float(smoothed.noise.scale), **settings,
                "model": model_id or fingerprint(smoothed.model), "num_classes": str(smoothed.num_classes)}
    labels = {int(i): int(data.y[i]) for i in indices}
    written = 0
    with ResultsWriter(out, columns, settings, labels) as writer:
        bar = Progress(len(indices), sum(int(i) in writer.done for i in indices), progress)
        try:
            results = (executor or run_locally)(smoothed, job, xs, list(indices), lambda i: i in writer.done,
                                                bar.on_batch)
            for r in results:
                label = labels[r.index]
                writer.write({"idx": r.index, "label": label, "predict": r.prediction,
                              "correct": int(r.prediction == label), "time": format_time(r.seconds), **row(r)})
                written += 1
                bar.bar.update(1)
        finally:
            bar.close()
    return written
