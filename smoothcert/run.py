"""Certify or predict a whole data set into a results file: progress, resume, one row per input."""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from . import certificates
from .errors import SmoothcertError, check
from .noises import NOISES
from .results import (
    CERTIFY_COLUMNS,
    PREDICT_COLUMNS,
    ResultsWriter,
    decode_counts,
    encode_counts,
    format_float,
    format_time,
    read_rows,
    write_all,
)
from .smooth import Smooth


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}") from exc
    check(device.type != "cuda" or torch.cuda.is_available(), f"device {name} asked for, but CUDA is not available")
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


def certify_dataset(smoothed: Smooth, data, indices, out: str, *, n0: int, n: int, alpha: float,
                    batch_size: int, seed: int = 0, certificate: str | None = None, norm: str | None = None,
                    progress: bool = True) -> int:
    """CERTIFY data.x[indices] into `out` (resuming it), returning the number of rows written now."""
    spec, norm = certificates.resolve(certificate, smoothed.noise, norm)
    settings = {"certificate": spec.name, "norm": norm, "alpha": format_float(alpha), "n0": str(n0), "n": str(n),
                "seed": str(seed)}

    def run(xs, **kw):
        return smoothed.certify_many(xs, n0, n, alpha, batch_size, seed=seed, indices=indices,
                                     certificate=spec.name, norm=norm, **kw)

    def row(c):
        return {"radius": format_float(c.radius), "pA_lower": format_float(c.p_lower),
                "pB_upper": format_float(c.p_upper), "counts_selection": encode_counts(c.counts_selection),
                "counts": encode_counts(c.counts)}

    return _to_file(smoothed, data, indices, out, CERTIFY_COLUMNS, settings, run, row, progress)


def recertify(path: str, certificate: str, out: str, norm: str | None = None, overwrite: bool = False) -> int:
    """Recompute every row of a certify results file with another certificate, from its stored counts alone
    (no model), and write the same layout to `out` atomically. Returns the number of rows."""
    check(overwrite or not os.path.exists(out), f"{out} exists; choose another --out (or --force to replace it)")
    table = read_rows(path)
    check(len(table) > 0, f"{path} has no rows to re-certify")
    missing = [c for c in CERTIFY_COLUMNS if c not in table[0]]
    check(not missing, f"{path} is not a smoothcert certify file (missing columns: {', '.join(missing)})")
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(table):
        groups.setdefault((r["noise"], r["scale"], r["alpha"], r["num_classes"]), []).append(i)
    for (noise_name, scale, alpha, k), members in groups.items():
        try:
            noise = NOISES[noise_name](float(scale))
            k, alpha = int(k), float(alpha)
            c0 = np.stack([decode_counts(table[i]["counts_selection"], k) for i in members])
            c1 = np.stack([decode_counts(table[i]["counts"], k) for i in members])
        except (KeyError, ValueError, IndexError) as exc:
            raise SmoothcertError(f"{path}: unreadable row ({exc})") from exc
        spec, row_norm = certificates.resolve(certificate, noise, norm)
        v = certificates.certify(spec.name, c0, c1, noise, alpha, row_norm)
        for j, i in enumerate(members):
            table[i].update(certificate=spec.name, norm=row_norm, predict=int(v.prediction[j]),
                            radius=format_float(v.radius[j]), correct=int(int(v.prediction[j]) == int(table[i]["label"])),
                            pA_lower=format_float(v.p_lower[j]), pB_upper=format_float(v.p_upper[j]))
    write_all(out, CERTIFY_COLUMNS, table)
    return len(table)


def predict_dataset(smoothed: Smooth, data, indices, out: str, *, n: int, alpha: float, batch_size: int,
                    seed: int = 0, progress: bool = True) -> int:
    """PREDICT data.x[indices] into `out` (resuming it), returning the number of rows written now."""
    settings = {"alpha": format_float(alpha), "n": str(n), "seed": str(seed)}

    def run(xs, **kw):
        return smoothed.predict_many(xs, n, alpha, batch_size, seed=seed, indices=indices, **kw)

    def row(p):
        return {"pvalue": format_float(p.pvalue), "counts": encode_counts(p.counts)}

    return _to_file(smoothed, data, indices, out, PREDICT_COLUMNS, settings, run, row, progress)


def _to_file(smoothed, data, indices, out, columns, settings, run, row, progress) -> int:
    """Run `run` over the inputs not yet in `out`, writing Cohen's columns plus `row(result)` for each."""
    xs = data.x[indices]
    smoothed.probe(xs[:1])                      # model and input shape checked before any file is touched
    _check_labels(smoothed, data, indices)
    settings = {"noise": smoothed.noise.name, "scale": format_float(smoothed.noise.scale), **settings,
                "num_classes": str(smoothed.num_classes)}
    labels = {int(i): int(data.y[i]) for i in indices}
    written = 0
    with ResultsWriter(out, columns, settings, labels) as writer:
        bar = Progress(len(indices), sum(int(i) in writer.done for i in indices), progress)
        try:
            for r in run(xs, skip=lambda i: i in writer.done, on_batch=bar.on_batch):
                label = labels[r.index]
                writer.write({"idx": r.index, "label": label, "predict": r.prediction,
                              "correct": int(r.prediction == label), "time": format_time(r.seconds), **row(r)})
                written += 1
                bar.bar.update(1)
        finally:
            bar.close()
    return written
