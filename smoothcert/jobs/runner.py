"""Running a job over a data set into results files: the `Job` (a Smooth method and its arguments: plain data, so
a Ray worker can run it too), the default executor (`run_locally`), the progress bar, and the loop that skips
inputs already in the files, runs the rest and writes one row per input (`to_files`).
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

from tqdm import tqdm

from ..errors import check
from ..files.columns import format_float, format_time
from ..files.writer import ResultsWriter
from ..noises.record import noise_cell
from ..smooth import Smooth


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


def to_files(smoothed, data, indices, sinks, columns, job, progress, model_id=None, executor=None) -> int:
    """Run `job` over the inputs not yet in every file, writing Cohen's columns plus `row(result)` for each.

    sinks: (path, settings, row) per results file; with several, the job yields a tuple of results per input
    (one per file) and an input is skipped only when every file has it (an interruption between two files'
    writes is mended on resume). Returns the number of rows written now (to the first file)."""
    xs = data.x[indices]
    smoothed.check_inputs(xs, indices)          # inputs, model and input shape checked before any file is touched
    smoothed.probe(xs[:1], indices)
    _check_labels(smoothed, data, indices)
    fixed = {"noise": noise_cell(smoothed.noise), "scale": format_float(smoothed.noise.scale),
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
