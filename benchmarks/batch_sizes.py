"""Forward time per sample at each candidate batch size, and what `--batch auto` chooses on this machine.

For each model (digits-cnn, cifar-resnet20; random weights) it times the forward pass per sample at 64 ... 1024
(interleaved over --rounds rounds, the best of each: the least disturbed by other processes), then runs
`auto_batch_size` (what `--batch auto` / `batch_size=None` does on a CPU) and reports its choice and the seconds
it took.

    python benchmarks/batch_sizes.py --threads 1
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from smoothcert.cli import tune_allocator
from smoothcert.models import build
from smoothcert.device import CPU_CANDIDATES, _time_forward, auto_batch_size

MODELS = {"digits-cnn": (1, 8, 8), "cifar-resnet20": (3, 32, 32)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.5, help="timing per size and round (default 0.5)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    args = p.parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"microseconds per sample (best of {args.rounds} rounds)")
    print(f"{'model':<15} " + " ".join(f"{b:>7}" for b in CPU_CANDIDATES) + f" {'auto':>5} {'auto s':>6}")
    for name in args.models:
        torch.manual_seed(0)
        model = build(name).eval()
        gen = torch.Generator().manual_seed(0)
        best = {b: float("inf") for b in CPU_CANDIDATES}
        with torch.inference_mode():
            for r in range(args.rounds):
                for b in CPU_CANDIDATES:
                    best[b] = min(best[b], _time_forward(model, MODELS[name], b, cpu, torch.float32, gen,
                                                         args.seconds, warm_up=r == 0))
        t0 = time.perf_counter()
        chosen = auto_batch_size(model, MODELS[name], cpu)
        spent = time.perf_counter() - t0
        print(f"{name:<15} " + " ".join(f"{1e6 * best[b]:>7.1f}" for b in CPU_CANDIDATES)
              + f" {chosen:>5} {spent:>6.1f}", flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
