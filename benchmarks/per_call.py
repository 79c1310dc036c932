"""The cost of one `Smooth.certify` call on ONE input against the forward-pass ceiling of the same samples.

For each model (digits-cnn, cifar-resnet20; random weights) and n (100 and 1,000; n0 = 100, alpha = 0.001,
sigma = 0.25) it times, interleaved, in rounds:

  ceiling  one forward pass of n0 + n pre-made inputs in one batch (eval mode, inference mode): the least any
           certify of one input can cost;
  certify  `smoothed.certify(x, n0, n, alpha, batch_size)` on one input, a new seed each call (the real-time use:
           one input at a time, everything a call does included: checks, streams, noise, forward, counting,
           the bound, the result object).

Each round times a block of calls lasting about --seconds and divides by its size; the table gives the median
time per call over the rounds and the median of the per-round ratios ceiling / certify (1.0 = no per-call
cost at all; the project target is >= 0.8). The load average is printed: other processes on the same cores
distort every figure, so compare the ratios, which are measured side by side.

    python benchmarks/per_call.py                       # about 1 minute on 2 CPU cores
    python benchmarks/per_call.py --threads 1 --rounds 9 --models digits-cnn
    python benchmarks/per_call.py --profile digits-cnn  # cProfile of the certify calls, top 25 by own time
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time

import torch

from throughput import write_json
from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.models import build

MODELS = {"digits-cnn": (1, 8, 8), "cifar-resnet20": (3, 32, 32)}
N0, ALPHA, SIGMA = 100, 0.001, 0.25
TARGET = 0.80


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block(fn, seconds: float, device) -> float:
    """Seconds per call of fn, timed over a block of calls lasting about `seconds` (at least 2 calls)."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    calls = max(2, int(seconds / one))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls


def bench(name: str, n: int, batch: int, rounds: int, seconds: float, device) -> dict:
    torch.manual_seed(0)
    model = build(name).to(device).eval()
    smoothed = Smooth(model, Gaussian(SIGMA), device=device)
    shape = MODELS[name]
    x = torch.rand(*shape, device=device)
    ceiling_x = torch.rand(N0 + n, *shape, device=device)
    seeds = iter(range(1 << 62))

    def ceiling():
        with torch.inference_mode():
            model(ceiling_x)

    def certify():
        smoothed.certify(x, N0, n, ALPHA, batch, seed=next(seeds))

    ceilings, certifies = [], []
    for _ in range(rounds):            # interleaved: a slow spell on a shared machine hits both alike
        ceilings.append(block(ceiling, seconds, device))
        certifies.append(block(certify, seconds, device))
    ratios = [c / s for c, s in zip(ceilings, certifies)]
    return dict(model=name, device=device.type, n0=N0, n=n, batch=batch, threads=torch.get_num_threads(),
                ceiling_ms=1e3 * statistics.median(ceilings), certify_ms=1e3 * statistics.median(certifies),
                ratio=statistics.median(ratios), ratios=ratios)


def profile(name: str, n: int, batch: int, calls: int, device) -> None:
    torch.manual_seed(0)
    smoothed = Smooth(build(name).to(device).eval(), Gaussian(SIGMA), device=device)
    x = torch.rand(*MODELS[name], device=device)
    smoothed.certify(x, N0, n, ALPHA, batch, seed=0)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(calls):
        smoothed.certify(x, N0, n, ALPHA, batch, seed=i)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--ns", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--batch", type=int, default=1000, help="certify's batch size (default 1000)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--seconds", type=float, default=0.5, help="length of one timed block (default 0.5)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", choices=list(MODELS), help="profile certify on this model instead")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.profile:
        profile(args.profile, args.ns[0], args.batch, 300, device)
        return 0
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}; n0={N0}, batch {args.batch}, {args.rounds} rounds of {args.seconds} s")
    print(f"{'model':<15} {'n':>6} {'ceiling ms':>10} {'certify ms':>10} {'ratio':>6}  (min-max)")
    rows = []
    for name in args.models:
        for n in args.ns:
            r = bench(name, n, args.batch, args.rounds, args.seconds, device)
            rows.append(r)
            print(f"{name:<15} {n:>6} {r['ceiling_ms']:>10.3f} {r['certify_ms']:>10.3f} {r['ratio']:>6.2f}  "
                  f"({min(r['ratios']):.2f}-{max(r['ratios']):.2f})", flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}; every ratio >= {TARGET}: "
          + ("yes" if all(r["ratio"] >= TARGET for r in rows) else "NO"))
    return write_json(args.json, rows)


if __name__ == "__main__":
    raise SystemExit(main())
