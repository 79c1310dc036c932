"""Soft certification's cost against hard-vote certification on the same model and inputs (issue 9's target: on the
CIFAR ResNet-20 the soft certify runs at >= 90 % of the hard certify's samples/s).

Hard = `Smooth.certify_many` (votes); soft = `Smooth.certify_soft` with soft-bernstein (per-class softmax sums and
squares; what soft-hoeffding and soft-lipschitz read too) and soft-betting (betting capital on a 1,024-point grid,
two sides). Random weights and random CIFAR-shaped inputs, n0 = 100; the variants are interleaved for --rounds
rounds and the table gives median samples/s and the median ratio to hard in the same round.

    python benchmarks/soft_speed.py                       # ResNet-20, n = 1,000, 3 rounds (a few minutes on 2 cores)
    python benchmarks/soft_speed.py --model digits-cnn --inputs 40 --n 2000
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.models import build

SHAPES = {"digits-cnn": (1, 8, 8), "cifar-resnet20": (3, 32, 32)}


def rate(run) -> float:
    """Noisy samples per second of one certification run (everything passed to on_batch)."""
    seen = [0]
    t0 = time.perf_counter()
    for _ in run(lambda size: seen.__setitem__(0, seen[0] + size)):
        pass
    return seen[0] / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=list(SHAPES), default="cifar-resnet20")
    p.add_argument("--inputs", type=int, default=4)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-betting", action="store_true", help="leave soft-betting out (it is the slow one on a CPU)")
    args = p.parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model).eval()
    xs = torch.rand(args.inputs, *SHAPES[args.model])
    smooth = Smooth(model, Gaussian(0.25))
    variants = {"hard (cohen)": lambda cb: smooth.certify_many(xs, 100, args.n, 0.001, args.batch, seed=0, on_batch=cb),
                "soft-bernstein": lambda cb: smooth.certify_soft(xs, 100, args.n, 0.001, args.batch, seed=0,
                                                                 certificate="soft-bernstein", on_batch=cb)}
    if not args.no_betting:
        variants["soft-betting"] = lambda cb: smooth.certify_soft(xs, 100, args.n, 0.001, args.batch, seed=0,
                                                                  certificate="soft-betting", on_batch=cb)
    for run in variants.values():                       # warm-up
        rate(run)
    rates = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            rates[name].append(rate(run))
    print(f"{args.model}, {args.inputs} inputs, n0 = 100, n = {args.n}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'certificate':<16} {'samples/s':>10} {'vs hard':>8}")
    hard = rates["hard (cohen)"]
    for name, values in rates.items():
        ratio = statistics.median(v / h for v, h in zip(values, hard))
        print(f"{name:<16} {statistics.median(values):>10,.0f} {100 * ratio:>7.0f}%")


if __name__ == "__main__":
    main()
