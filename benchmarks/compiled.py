"""torch.compile against the eager forward pass: compile time, agreement, and the ceiling each reaches.

For each model (digits-cnn, cifar-resnet20; random weights) at its batch size: the time of the compiled model's
first forward pass (compilation included), its predictions against the eager model's on noisy samples of a few
inputs (`smoothcert.device.check_compiled`, what `--compile` runs at start), then the forward-pass ceiling
(samples/s on pre-made inputs) of eager and compiled, interleaved for --rounds rounds, medians; and certify's
rate with `Smooth(..., compile=True)` against eager certify at n = 10,000. The option is worth keeping on a
model only where the compiled ceiling is clearly above the eager one.

    python benchmarks/compiled.py --threads 1        # a few minutes (compiling takes 0.5-1 min per model here)
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch

from throughput import CPU_BATCH, GPU_BATCH, MODELS, Clock, measure_ceiling, measure_certify, write_json
from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.models import build
from smoothcert.device import check_compiled

SIGMA = 0.25


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["digits-cnn", "cifar-resnet20"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, help="batch size (default: 1000, 256 for the ResNets on a CPU)")
    p.add_argument("--seconds", type=float, default=2.0, help="time slice per measurement (default 2)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=10_000, help="estimation samples for the certify rate (default 10000)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}; medians of {args.rounds} interleaved rounds of {args.seconds} s")
    print(f"{'model':<15} {'batch':>5} {'compile s':>9} {'disagree':>9} {'eager/s':>10} {'compiled/s':>10} "
          f"{'speed-up':>8} {'certify eager/s':>15} {'certify compiled/s':>18}")
    rows = []
    for name in args.models:
        shape = MODELS[name]
        batch = args.batch or (CPU_BATCH[name] if device.type == "cpu" else GPU_BATCH)
        torch.manual_seed(0)
        model = build(name).to(device).eval()
        compiled = torch.compile(model)
        xs = torch.rand(8, *shape, device=device)
        check = check_compiled(model, compiled, xs, Gaussian(SIGMA), batch, device)
        x = torch.rand(batch, *shape, device=device)
        eager_smooth = Smooth(model, Gaussian(SIGMA), device=device)
        compiled_smooth = Smooth(model, Gaussian(SIGMA), device=device, compile=True)
        compiled_smooth._compiled = compiled        # the model compiled above: no second compilation
        inputs = torch.rand(64, *shape)
        list(compiled_smooth.certify_many(inputs[:2], 100, 100, 0.001, batch, seed=0))   # its last-batch shapes too
        rates = {"eager": [], "compiled": [], "certify eager": [], "certify compiled": []}
        for _ in range(args.rounds):
            rates["eager"].append(measure_ceiling(model, x, Clock(device, 0.5, args.seconds)))
            rates["compiled"].append(measure_ceiling(compiled, x, Clock(device, 0.5, args.seconds)))
            rates["certify eager"].append(measure_certify(eager_smooth, inputs, args.n, batch,
                                                          Clock(device, 0.5, args.seconds)))
            rates["certify compiled"].append(measure_certify(compiled_smooth, inputs, args.n, batch,
                                                             Clock(device, 0.5, args.seconds)))
        med = {k: statistics.median(v) for k, v in rates.items()}
        speedup = statistics.median(c / e for c, e in zip(rates["compiled"], rates["eager"]))
        rows.append(dict(model=name, device=device.type, batch=batch, threads=torch.get_num_threads(),
                         compile_seconds=check.seconds, samples=check.samples, disagreements=check.disagreements,
                         rates=rates, medians=med, speedup=speedup))
        print(f"{name:<15} {batch:>5} {check.seconds:>9.1f} {check.disagreements:>4}/{check.samples:<4} "
              f"{med['eager']:>10,.0f} {med['compiled']:>10,.0f} {speedup:>7.2f}x {med['certify eager']:>15,.0f} "
              f"{med['certify compiled']:>18,.0f}", flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return write_json(args.json, rows)


if __name__ == "__main__":
    raise SystemExit(main())
