"""Throughput of `Smooth.certify_many` against the model's own forward-pass ceiling.

For each model (digits-cnn, cifar-resnet20 by default, cifar-resnet110 on request; random weights), device (cpu,
and cuda when available), precision (--amp fp32 bf16 fp16: autocast for ceiling and certify alike) and n (100,
10,000, 100,000; n0 = 100, alpha = 0.001, sigma = 0.25) it measures, at the same batch size B:

  ceiling  the pure forward pass (eval mode, inference mode) on pre-made (B, *input_shape) inputs, samples/s;
  certify  noisy samples (selection + estimation: everything passed to `on_batch`) per second of
           `certify_many` on random inputs in [0, 1], including everything it does between forward passes.

Each measurement runs for a time slice (--seconds) after a short warm-up; certify is stopped mid-input by
raising from `on_batch`, counting only the samples of completed batches. Ceiling and certify are measured
interleaved for --rounds rounds, and the table reports the median rates and the median of the per-round
ratios certify / ceiling (the project target is >= 90 %). Both use the same torch thread count.
Other processes on the same cores distort the rates badly (a busy core can slow torch's default two-thread
forward pass ten-fold); the load average is printed, and --threads 1 is steadier on a shared machine.

    python benchmarks/throughput.py                  # or: make bench   (about 2-3 minutes on 2 CPU cores)
    python benchmarks/throughput.py --models digits-cnn --ns 100 --seconds 1 --rounds 1    # quick check
    python benchmarks/throughput.py --json bench.json --threads 2 --batch 512 --devices cpu
    python benchmarks/throughput.py --devices cuda --models cifar-resnet20 cifar-resnet110 --amp fp32 bf16
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import warnings

import torch

from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.models import build
from smoothcert.device import AMP_DTYPES
from smoothcert.modes import group_size

MODELS = {"digits-cnn": (1, 8, 8), "cifar-resnet20": (3, 32, 32), "cifar-resnet110": (3, 32, 32)}
CPU_BATCH = {"digits-cnn": 1000, "cifar-resnet20": 256, "cifar-resnet110": 256}
GPU_BATCH = 1000
NS = (100, 10_000, 100_000)
N0, ALPHA, SIGMA = 100, 0.001, 0.25
TARGET = 0.90


class _SliceOver(Exception):
    """Raised from the batch callback to stop a measurement once its time slice is over."""


class Clock:
    """Called after every forward batch with its size: ignores batches until the warm-up is over, then counts
    samples and raises _SliceOver once `seconds` have passed since the warm-up ended (by `timer`: wall-clock time
    by default; time.process_time counts this process's CPU time, steadier on a shared CPU)."""

    def __init__(self, device: torch.device, warmup: float, seconds: float, timer=time.perf_counter):
        self.device, self.warmup, self.seconds, self.timer = device, warmup, seconds, timer
        self.start, self.t0, self.samples, self.elapsed = timer(), None, 0, 0.0

    def __call__(self, size: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = self.timer()
        if self.t0 is None:
            if now - self.start >= self.warmup:
                self.t0 = now
            return
        self.samples += size
        self.elapsed = now - self.t0
        if self.elapsed >= self.seconds:
            raise _SliceOver

    @property
    def rate(self) -> float:
        return self.samples / self.elapsed if self.elapsed > 0 else float("nan")


def measure_ceiling(model, x: torch.Tensor, clock: Clock, amp: str | None = None) -> float:
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=AMP_DTYPES.get(amp), enabled=bool(amp)):
        try:
            while True:
                model(x)
                clock(x.shape[0])
        except _SliceOver:
            return clock.rate


def measure_certify(smoothed: Smooth, xs: torch.Tensor, n: int, batch: int, clock: Clock) -> float:
    try:
        while True:  # xs is sized to outlast the slice; should a slowdown during the ceiling fool that, go on
            for _ in smoothed.certify_many(xs, N0, n, ALPHA, batch, seed=0, on_batch=clock):
                pass
    except _SliceOver:
        return clock.rate


def bench_setting(name, device, n, batch, seconds, rounds, amp=None) -> dict:
    torch.manual_seed(0)
    return bench_model(build(name).to(device).eval(), name, MODELS[name], device, n, batch, seconds, rounds, amp)


def bench_model(model, name, shape, device, n, batch, seconds, rounds, amp=None) -> dict:
    """bench_setting for a model already built (e.g. a composition, benchmarks/denoised.py), on inputs of `shape`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # amp on a CPU warns that it is emulated
        smoothed = Smooth(model, Gaussian(SIGMA), device=device, amp=amp)
    x = torch.rand(batch, *shape, device=device)
    warmup = min(0.5, seconds / 4)
    ceilings, certifies = [], []
    for _ in range(rounds):
        ceilings.append(measure_ceiling(model, x, Clock(device, warmup, seconds), amp))
        # Inputs for twice the samples the fastest ceiling so far runs in warm-up + slice, plus a whole group.
        count = math.ceil(2 * max(ceilings) * (warmup + seconds) / (N0 + n)) + group_size(batch, (N0, n), 1 << 30)
        xs = torch.rand(count, *shape)
        certifies.append(measure_certify(smoothed, xs, n, batch, Clock(device, warmup, seconds)))
    ratios = [c / f for c, f in zip(certifies, ceilings)]
    return dict(model=name, device=device.type, amp=amp or "fp32", n=n, n0=N0, alpha=ALPHA, batch=batch,
                seconds=seconds,
                threads=torch.get_num_threads(), ceiling=statistics.median(ceilings),
                certify=statistics.median(certifies), ratio=statistics.median(ratios),
                ceilings=ceilings, certifies=certifies, ratios=ratios)


def format_row(r: dict) -> str:
    spread = f"({100 * min(r['ratios']):.0f}-{100 * max(r['ratios']):.0f})" if len(r["ratios"]) > 1 else ""
    return (f"{r['model']:<15} {r['device']:<6} {r['amp']:<5} {r['n']:>7} {r['batch']:>6} {r['ceiling']:>12,.0f} "
            f"{r['certify']:>12,.0f} {100 * r['ratio']:>7.1f} {spread}")


def write_json(path: str | None, rows) -> int:
    """Write the rows as JSON to path when one was given (--json); the script's exit code."""
    if path:
        with open(path, "w") as out:
            json.dump(rows, out, indent=2)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["digits-cnn", "cifar-resnet20"])
    p.add_argument("--amp", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32"],
                   help="precisions of the forward pass, ceiling and certify alike (default fp32)")
    p.add_argument("--ns", nargs="+", type=int, default=list(NS))
    p.add_argument("--devices", nargs="+", choices=["cpu", "cuda"],
                   default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--batch", type=int, help="batch size for every model (default: 1000, or 256 for "
                   "cifar-resnet20 on CPU)")
    p.add_argument("--seconds", type=float, help="time slice per measurement (default: 3 on CPU, 1 on CUDA)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved ceiling/certify rounds (default: 3)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc's allocator as it is (by default it is tuned as the smoothcert CLI does)")
    args = p.parse_args(argv)
    tuned = False if args.system_malloc else tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "cuda" in args.devices and not torch.cuda.is_available():
        p.error("--devices cuda: CUDA is not available")
    if args.rounds < 1 or (args.seconds is not None and args.seconds <= 0) or min(args.ns) < 1:
        p.error("--rounds, --seconds and --ns must be positive")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"n0={N0}, alpha={ALPHA}, sigma={SIGMA}, {args.rounds} round(s), "
          f"allocator {'tuned as the CLI does' if tuned else 'as the system has it'}\n"
          "rates are medians; ratio = median of the per-round certify/ceiling ratios (min-max)")
    print(f"{'model':<15} {'device':<6} {'amp':<5} {'n':>7} {'batch':>6} {'ceiling/s':>12} {'certify/s':>12} "
          f"{'ratio %':>7}")
    rows = []
    for name in args.models:
        for dev in args.devices:
            device = torch.device(dev)
            batch = args.batch or (CPU_BATCH[name] if dev == "cpu" else GPU_BATCH)
            seconds = args.seconds or (3.0 if dev == "cpu" else 1.0)
            for amp in args.amp:
                for n in args.ns:
                    rows.append(bench_setting(name, device, n, batch, seconds, args.rounds, None if amp == "fp32" else amp))
                    print(format_row(rows[-1]), flush=True)
    below = [f"{r['model']}/{r['device']}/n={r['n']}" for r in rows if r["ratio"] < TARGET]
    print(f"every ratio >= {100 * TARGET:.0f} %: " + ("yes" if not below else "NO, below: " + ", ".join(below))
          + f" (load average now {os.getloadavg()[0]:.2f})")
    return write_json(args.json, rows)


if __name__ == "__main__":
    raise SystemExit(main())
