"""Certify or predict a whole data set into a results file: progress, resume, one row per input."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from . import certificates
from .bounds.margin import MAX_N as MAX_EXACT_N
from .errors import SmoothcertError, check, check_count
from .files.columns import (CERTIFY_COLUMNS, CONFIDENCE_FIRST, CONFIDENCE_LAST, PREDICT_COLUMNS, SOFT_COLUMNS,
                            check_output_path, confidence_cells, confidence_columns, encode_counts, encode_scores,
                            format_float, format_time)
from .files.lock import FileLock, writer_of
from .files.rows import (check_certify_row, check_confidence_row, check_soft_row, dense, in_chunks, parse_int,
                         read_table)
from .files.writer import ResultsWriter, write_all
from .noises import NOISES
from .smooth import Smooth


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


def certify_dataset(smoothed: Smooth, data, indices, out: str, *, n0: int, n: int | Sequence[int], alpha: float,
                    batch_size: int, seed: int = 0, certificate: str | None = None, norm: str | None = None,
                    n_max: int | None = None, max_loss: float | None = None, relative: bool = True,
                    target_radius: float | None = None, futility: str = "upper", futility_level: float = 0.01,
                    progress: bool = True, model_id: str | None = None, executor=None) -> int:
    """CERTIFY data.x[indices] into `out` (resuming it), returning the number of rows written now.

    Modes: a fixed `n`; several n (a list: one pass over a nested stream, one file per n, `nested_paths(out, ns)`,
    each equal to a separate run at that n); `n_max` with `max_loss` (input-specific n); `n_max` with
    `target_radius` (early stopping at an acceptance radius). `model_id` is recorded in the file (default:
    `models.fingerprint` of the model) and a resumed run must match it; `executor` runs the job (default:
    `run_locally`)."""
    spec, norm = certificates.resolve(certificate, smoothed.noise, norm)
    common = {"alpha": format_float(alpha), "n0": str(n0), "seed": str(seed)}
    kw = {"seed": seed, "norm": norm}
    ns = [n] if isinstance(n, int) else sorted(set(n))
    check(spec.statistic == "votes" or (n_max is None and target_radius is None),
          f"{spec.name} certifies at a fixed n (input-specific n and early stopping are for hard-vote certificates)")
    if target_radius is not None:
        check(n_max is not None and max_loss is None, "--target-radius goes with --n-max (and not --max-loss)")
        mode = f"target:r0={format_float(target_radius)}:futility={futility}@{format_float(futility_level)}"
        name = "cohen" if smoothed.noise.name == "gaussian" else "teng-binary"
        check(certificate in (None, name), f"--target-radius certifies with the one-sided bound ({name}) under early "
                                           f"stopping, not {certificate}: leave --certificate out")
        job = Job("certify_target", (n0, target_radius, n_max, alpha, batch_size),
                  {**kw, "futility": futility, "futility_level": futility_level})
    elif n_max is not None:
        check(max_loss is not None, "--n-max needs --max-loss (input-specific n) or --target-radius (early stopping)")
        mode, name = f"input-n:max_loss={format_float(max_loss)}:{'relative' if relative else 'absolute'}", spec.name
        job = Job("certify_input_n", (n0, n_max, alpha, batch_size),
                  {**kw, "certificate": spec.name, "max_loss": max_loss, "relative": relative})
    elif spec.statistic == "scores":
        check(len(ns) == 1, f"{spec.name} certifies at one n (several n are for hard-vote certificates)")
        mode, name = "fixed", spec.name
        job = Job("certify_soft", (n0, ns[0], alpha, batch_size), {**kw, "certificate": spec.name})
    else:
        mode, name = "fixed", spec.name
        job = (Job("certify_many", (n0, ns[0], alpha, batch_size), {**kw, "certificate": spec.name}) if len(ns) == 1
               else Job("certify_nested", (n0, ns, alpha, batch_size), {**kw, "certificate": spec.name}))
    sizes = [n_max] if n_max is not None else ns
    check(spec.name != "exact-margin" or max(sizes) <= MAX_EXACT_N, f"exact-margin takes memory in proportion to n: "
                                                                    f"at most {MAX_EXACT_N:,} samples")
    paths = [out] if len(sizes) == 1 else nested_paths(out, sizes)
    soft = spec.statistic == "scores" and target_radius is None and n_max is None
    sinks = [(path, {"certificate": name, "norm": norm, **common, "n": str(size), "mode": mode},
              _soft_row if soft else _certify_row) for path, size in zip(paths, sizes)]
    return _to_files(smoothed, data, indices, sinks, SOFT_COLUMNS if soft else CERTIFY_COLUMNS, job, progress,
                     model_id, executor)


def nested_paths(out: str, ns: Sequence[int]) -> list[str]:
    """r.tsv -> r_n100.tsv, r_n1000.tsv, ...: one results file per n of a nested run."""
    root, ext = os.path.splitext(out)
    return [f"{root}_n{n}{ext or '.tsv'}" for n in ns]


def _certify_row(c) -> dict:
    return {"radius": format_float(c.radius), "samples": c.samples, "pA_lower": format_float(c.p_lower),
            "pB_upper": format_float(c.p_upper), "counts_selection": encode_counts(c.counts_selection),
            "counts": encode_counts(c.counts)}


def _soft_row(c) -> dict:
    return {**_certify_row(c), "scores_selection": encode_scores(c.scores["selection"]),
            "scores": encode_scores(c.scores["sums"], c.scores["squares"])}


def recertify(path: str, certificate: str | None, out: str, norm: str | None = None, overwrite: bool = False, *,
              thresholds: Sequence[float] | None = None, num_thresholds: int | None = None) -> int:
    """Recompute every row of a results file from its stored statistics alone (no model) and write the same
    layout to `out` atomically: a certify file with another `certificate` (hard ones from the votes; soft ones
    from the stored scores of a soft file), or a certified-confidence file at other `thresholds` /
    `num_thresholds`. Every row is checked first (counts summing to the row's n0 and samples, classes in
    range, each input once), and a refusal names the line. Returns the number of rows. It locks only `out`: the
    input is read without creating anything beside it, refused only while a run is writing it."""
    check_output_path(out)
    check(overwrite or not os.path.exists(out), f"{out} exists; choose another --out (or --force to replace it)")
    same = os.path.exists(out) and os.path.samefile(path, out)
    with FileLock(out):
        holder = None if same else writer_of(path)
        check(holder is None, f"{path} is being written by another run ({holder}); wait for it to end")
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8", "replace").rstrip("\r\n").split("\t")
        if "histogram" in header:
            check(certificate is None, f"{path} is a certified-confidence file: re-certify it with --thresholds "
                                       "(and --num-thresholds), not --certificate")
            columns, rows = _reconfidence(path, thresholds, num_thresholds)
        else:
            check(certificate is not None and thresholds is None and num_thresholds is None,
                  f"{path} is a certify file: re-certify it with --certificate NAME")
            columns, rows = _recertify_rows(path, certificate, norm, soft="scores" in header)
        write_all(out, columns, rows)
    return len(rows)


def _unique(path: str, table) -> None:
    lines: dict[int, int] = {}
    for line, row in table:
        idx = parse_int(row["idx"], f"{path} line {line}", "idx")
        check(idx not in lines, f"{path} line {line}: input {idx} appears twice (first at line {lines.get(idx)})")
        lines[idx] = line


def _recertify_rows(path, certificate, norm, soft: bool):
    from .certificates import soft as soft_certificates
    columns = SOFT_COLUMNS if soft else CERTIFY_COLUMNS
    table = read_table(path, columns)
    check(len(table) > 0, f"{path} has no rows to re-certify")
    _unique(path, table)
    groups: dict[tuple, list[tuple]] = {}
    for line, row in table:
        key, c0, c1 = (check_soft_row if soft else check_certify_row)(path, line, row)
        check(not row["mode"].startswith("target"), f"{path} line {line}: a row certified with early stopping "
              f"(mode {row['mode']}) cannot be re-certified: its samples were drawn until a data-dependent "
              "stop, where a fixed-n bound does not hold")
        groups.setdefault((*key, int(row["num_classes"])), []).append((line, row, c0, c1))
    for (noise_name, scale, alpha, k), members in groups.items():
        noise = NOISES[noise_name](scale)
        spec, row_norm = certificates.resolve(certificate, noise, norm)
        for line, row, _, _ in members:
            check(not spec.uses_selection or int(row["n0"]) > 0, f"{path} line {line}: n0 is 0 (the row's samples both "
                  f"chose and bounded its class, as single-stage does); {spec.name} needs selection samples: only "
                  "--certificate single-stage re-certifies it")
        if spec.statistic == "scores":
            check(soft, f"{spec.name} needs soft scores: {path} has only votes (certify with --certificate "
                        f"{spec.name} to store them)")
            check(spec.name != "soft-betting", "soft-betting needs the betting capital of every sample, which is not "
                                               "stored: certify with --certificate soft-betting")
        if spec.name == "exact-margin":
            for line, row, _, _ in members:
                check(int(row["samples"]) <= MAX_EXACT_N, f"{path} line {line}: exact-margin takes memory in "
                      f"proportion to n, and {row['samples']} samples are beyond its {MAX_EXACT_N:,}")
        for chunk in in_chunks(members, k):     # dense (rows, classes) arrays a bounded chunk at a time
            sel, est = [m[2] for m in chunk], [m[3] for m in chunk]
            if spec.statistic == "scores":
                v = soft_certificates.CERTIFICATES[spec.name](
                    np.stack([s[1] for s in sel]), *(np.stack([e[i] for e in est]) for i in (1, 2)),
                    np.array([e[3] for e in est]), noise, alpha, row_norm)
            else:                               # votes: the counts, or a soft row's counts beside its scores
                v = certificates.certify(spec.name, dense([s[0] if soft else s for s in sel]),
                                         dense([e[0] if soft else e for e in est]), noise, alpha, row_norm)
            for j, (_, row, _, _) in enumerate(chunk):
                row.update(certificate=spec.name, norm=row_norm, predict=int(v.prediction[j]),
                           radius=format_float(v.radius[j]), correct=int(int(v.prediction[j]) == int(row["label"])),
                           pA_lower=format_float(v.p_lower[j]), pB_upper=format_float(v.p_upper[j]))
    return columns, [row for _, row in table]


def _reconfidence(path, thresholds, num_thresholds):
    from .certificates import confidence as conf
    if num_thresholds is not None:                 # the command's own arguments before the file's rows
        conf.check_num_thresholds(num_thresholds)
    table = read_table(path, CONFIDENCE_FIRST + CONFIDENCE_LAST)
    check(len(table) > 0, f"{path} has no rows to re-certify")
    _unique(path, table)
    checked = [(line, row, check_confidence_row(path, line, row)) for line, row in table]
    if thresholds is None:                         # the file's own thresholds, from its header
        try:
            levels = conf.check_thresholds([h[4:] for h in table[0][1] if h.startswith("cdf@")],
                                           checked[0][2].measure)
        except SmoothcertError as e:
            raise SmoothcertError(f"{path} line 1: {e}") from None
    else:
        levels = conf.check_thresholds(thresholds, checked[0][2].measure)
    rows = []
    for line, row, c in checked:
        check(c.measure == checked[0][2].measure, f"{path} line {line}: measure {c.measure} differs from line "
              f"{checked[0][0]}'s {checked[0][2].measure}; one measure per file")
        k = c.num_thresholds if num_thresholds is None else num_thresholds
        cdf = conf.cdf_radius(conf.layers_from_histogram(dense([c.histogram]), c.measure, k), np.array(levels),
                              c.scale, c.alpha)[0]
        base = conf.baseline_radius(np.array([c.measure_sum]), c.n, np.array(levels), c.scale, c.alpha,
                                    c.measure)[0]
        row = {key: value for key, value in row.items() if "@" not in key}
        row.update(num_thresholds=str(k), **confidence_cells(levels, cdf, base))
        rows.append(row)
    return confidence_columns(levels), rows


def confidence_dataset(smoothed: Smooth, data, indices, out: str, *, n0: int, n: int, alpha: float,
                       thresholds: Sequence[float], measure: str = "score", num_thresholds: int | None = None,
                       batch_size: int, seed: int = 0, progress: bool = True, model_id: str | None = None,
                       executor=None) -> int:
    """Certified confidence (001) of data.x[indices] into `out` (resuming it): per input and threshold c the CDF
    and baseline radii (columns cdf@c, baseline@c), then the settings and the stored statistic (a histogram of
    the measure on fixed bins and its exact sum), from which `recertify` recomputes other thresholds."""
    from .certificates import confidence as conf
    levels = conf.check_thresholds(thresholds, measure)
    check(smoothed.noise.name == "gaussian", "certified confidence (001) is for Gaussian noise")
    k = conf.NUM_THRESHOLDS if num_thresholds is None else conf.check_num_thresholds(num_thresholds)
    settings = {"measure": measure, "alpha": format_float(alpha), "n0": str(n0), "n": str(n), "seed": str(seed),
                "num_thresholds": str(k), "bins": str(conf.BINS)}
    job = Job("confidence", (n0, n, alpha, levels, batch_size),
              {"seed": seed, "measure": measure, "num_thresholds": k, "bins": conf.BINS})

    def row(r):
        return {**confidence_cells(levels, r.cdf, r.baseline), "counts_selection": encode_counts(r.counts_selection),
                "scores_selection": encode_scores(r.scores_selection), "histogram": encode_counts(r.histogram),
                "measure_sum": format_float(r.measure_sum)}

    return _to_files(smoothed, data, indices, [(out, settings, row)], confidence_columns(levels), job, progress,
                     model_id, executor)


def predict_dataset(smoothed: Smooth, data, indices, out: str, *, n: int, alpha: float, batch_size: int,
                    seed: int = 0, progress: bool = True, model_id: str | None = None, executor=None) -> int:
    """PREDICT data.x[indices] into `out` (resuming it), returning the number of rows written now."""
    settings = {"alpha": format_float(alpha), "n": str(n), "seed": str(seed)}
    job = Job("predict_many", (n, alpha, batch_size), {"seed": seed})

    def row(p):
        return {"pvalue": format_float(p.pvalue), "counts": encode_counts(p.counts)}

    return _to_files(smoothed, data, indices, [(out, settings, row)], PREDICT_COLUMNS, job, progress, model_id,
                     executor)


def _to_files(smoothed, data, indices, sinks, columns, job, progress, model_id=None, executor=None) -> int:
    """Run `job` over the inputs not yet in every file, writing Cohen's columns plus `row(result)` for each.

    sinks: (path, settings, row) per results file; with several, the job yields a tuple of results per input
    (one per file) and an input is skipped only when every file has it (an interruption between two files'
    writes is mended on resume). Returns the number of rows written now (to the first file)."""
    xs = data.x[indices]
    smoothed.check_inputs(xs, indices)          # inputs, model and input shape checked before any file is touched
    smoothed.probe(xs[:1], indices)
    _check_labels(smoothed, data, indices)
    fixed = {"noise": smoothed.noise.name, "scale": format_float(smoothed.noise.scale),
             "model": model_id or smoothed.model_id(), "num_classes": str(smoothed.num_classes)}
    labels = {int(i): int(data.y[i]) for i in indices}
    written = 0
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(ResultsWriter(path, columns, {**fixed, **settings}, labels))
                   for path, settings, _ in sinks]
        done = lambda i: all(i in w.done for w in writers)
        bar = stack.enter_context(contextlib.closing(Progress(len(indices), sum(done(int(i)) for i in indices),
                                                              progress)))
        for results in (executor or run_locally)(smoothed, job, xs, list(indices), done, bar.on_batch):
            results = results if len(sinks) > 1 else (results,)
            for writer, (_, _, row), r in zip(writers, sinks, results):
                if r.index not in writer.done:
                    label = labels[r.index]
                    writer.write({"idx": r.index, "label": label, "predict": r.prediction,
                                  "correct": int(r.prediction == label), "time": format_time(r.seconds), **row(r)})
            written += 1
            bar.bar.update(1)
    return written


@dataclass(frozen=True)
class Latency:
    """One input's end-to-end certification time at n estimation samples (median and 90th percentile, ms)."""

    n: int
    median_ms: float
    p90_ms: float


def bench_latency(smoothed: Smooth, x: torch.Tensor, *, n0: int, alpha: float, budget_ms: float,
                  repeats: int = 15, n_cap: int = 1_000_000) -> tuple[list[Latency], int]:
    """Time `Smooth.certify` on one input (noise, forward passes in one batch of n0 + n, bound: what a real-time
    caller pays, 002 §3) on a geometric grid of n, then bisect: the largest n whose median time fits `budget_ms`
    (0 if even n = 1 does not). Returns (the measurements, that n)."""
    check(0 < budget_ms < float("inf"), f"--budget-ms must be a finite number > 0, got {budget_ms}")
    check_count("--repeats", repeats)

    def measure(n: int) -> Latency:
        times = []
        for r in range(repeats + 2):                 # two warm-up calls (allocations, caches)
            t0 = time.perf_counter()
            smoothed.certify(x, n0, n, alpha, n0 + n, seed=r)
            times.append((time.perf_counter() - t0) * 1e3)
        times = np.array(times[2:])
        return Latency(n, float(np.median(times)), float(np.percentile(times, 90)))

    table, n, fits = [], 1, 0
    while n <= n_cap:
        table.append(measure(n))
        if table[-1].median_ms > budget_ms:
            break
        fits, n = n, n * 2
    hi = min(n, n_cap + 1)
    while hi - fits > max(1, fits // 50):            # bisect to within 2 %
        mid = (fits + hi) // 2
        table.append(measure(mid))
        fits, hi = (mid, hi) if table[-1].median_ms <= budget_ms else (fits, mid)
    return sorted(table, key=lambda t: t.n), fits
