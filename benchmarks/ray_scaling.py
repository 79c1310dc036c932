"""Speed-up of certifying on a local Ray cluster against one process, on a model whose forward pass dominates.

CIFAR ResNet-20 (random weights) certifies random CIFAR-shaped inputs (n0 = 100, --n, --batch) three ways:

  single   one process, torch on --threads threads (2: both cores), `certify_many` as the CLI runs it
           (allocator tuned, as the CLI does);
  ray 1    1 Ray worker (1 torch thread);
  ray 2    2 Ray workers (1 torch thread each).

The Ray runs share one local cluster of 3 logical CPUs, started once, so the three runs can be interleaved
round after round (--rounds) and a change in the machine's load hits all three alike; the table gives medians.
An idle worker sleeps, so "ray 1" is a 1-worker cluster as far as the cores are concerned.
For each: noisy samples per second; for Ray from the first task sent to the last result (the start-up of the
cluster and workers, printed apart, is left out), with the per-task overhead
(workers x wall - seconds the workers spent inside tasks) / tasks: dispatch, (de)serialisation, and workers
idle at the end. Every Ray run's counts are checked equal to the single process's.
Ray starts its workers at niceness 0; here they are given the benchmark's own, so on a machine shared with other
jobs `nice -n -15 python benchmarks/ray_scaling.py` (as root) puts all three runs ahead of the other jobs alike.
With --n 4000 --batch 100 (the default) every input is its own sampling group and task (4,100 samples, 41
batches), so with an even --inputs the tasks split evenly over 2 workers.

    python benchmarks/ray_scaling.py                 # about 2 minutes on 2 quiet CPU cores
    python benchmarks/ray_scaling.py --inputs 2 --n 1000 --rounds 1      # quick check
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

import torch

from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.distributed import RayExecutor, require_ray
from smoothcert.models import build
from smoothcert.jobs import Job

N0, ALPHA, SIGMA = 100, 0.001, 0.25


class Recipe:
    """Builds the same ResNet-20 on a worker (a fixed seed: random weights, the same everywhere)."""

    def __call__(self) -> Smooth:
        return make_smooth()


def make_smooth() -> Smooth:
    torch.manual_seed(0)
    return Smooth(build("cifar-resnet20").eval(), Gaussian(SIGMA))


def match_niceness(pids) -> None:
    """Give every thread of the worker processes this process's niceness (Linux: niceness is per thread)."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else [pid]:
            os.setpriority(os.PRIO_PROCESS, int(tid), mine)


def counts(results):
    return [(c.counts_selection.tolist(), c.counts.tolist()) for c in results]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=4)
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the single-process run")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    tune_allocator()
    torch.manual_seed(1)
    xs = torch.rand(args.inputs, 3, 32, 32)
    smoothed = make_smooth()
    job = Job("certify_many", (N0, args.n, ALPHA, args.batch), {"seed": 0})
    samples = args.inputs * (N0 + args.n)
    print(f"ResNet-20, {args.inputs} inputs x {N0 + args.n:,} samples, batch {args.batch}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")

    ray = require_ray()
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    executors = {k: RayExecutor(workers=k, make_smooth=Recipe()) for k in (1, 2)}
    warm = Job(job.method, (1, 1, ALPHA, 32), job.kwargs)
    for ex in executors.values():
        list(ex(smoothed, warm, xs[:1], [0]))                # workers started, model built
        match_niceness(ex.pids)
    print(f"start-up: cluster and 3 workers in {time.perf_counter() - t0:.1f} s")

    rates = {"single": [], 1: [], 2: []}
    overhead = {1: [], 2: []}
    torch.set_num_threads(args.threads)
    for r in range(args.rounds):
        t = time.perf_counter()
        ref = list(smoothed.certify_many(xs, *job.args, **job.kwargs))
        rates["single"].append(samples / (time.perf_counter() - t))
        for k, ex in executors.items():
            out = list(ex(smoothed, job, xs, list(range(len(xs)))))
            assert counts(out) == counts(ref), "a Ray run gave other counts than the single process"
            s = ex.stats
            rates[k].append(s.samples / s.seconds)
            overhead[k].append((s.workers * s.seconds - s.busy_seconds) / s.tasks)
        print(f"round {r + 1}: " + ", ".join(f"{k}: {v[-1]:,.0f}/s" for k, v in rates.items())
              + f"  (load average {os.getloadavg()[0]:.1f})")
    for ex in executors.values():
        ex.close()
    ray.shutdown()

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{'run':30s} {'samples/s':>10s} {'vs 1 worker':>12s} {'vs single':>10s} {'overhead per task':>18s}")
    print(f"{f'single process, {args.threads} threads':30s} {med['single']:10,.0f} {'':>12s} {1:9.2f}x")
    for k in (1, 2):
        print(f"{f'ray, {k} worker(s) x 1 thread':30s} {med[k]:10,.0f} {med[k] / med[1]:11.2f}x "
              f"{med[k] / med['single']:9.2f}x {statistics.median(overhead[k]) * 1e3:15.0f} ms")
    print(f"({args.inputs} tasks of {N0 + args.n:,} samples per run; medians of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
