"""smoothcert's certify against a reference implementation of Cohen et al.'s sampling loop, same model, same
inputs, same n0/n/batch, side by side in one run.

The reference is written here from the algorithm as Cohen et al. publish it (core.py, `_sample_noise`): per
input, repeat the input into batches of at most `batch` copies, add `randn_like * sigma`, take the argmax, and
tally the classes on the host; n0 selection samples then n estimation samples, one input at a time. It shows
what packing several inputs into one forward batch and counting on the device buy at small n.

    python benchmarks/vs_reference.py                 # digits CNN and CIFAR ResNet-20, n = 100 and 10,000
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.models import build

SHAPES = {"digits-cnn": (1, 8, 8), "cifar-resnet20": (3, 32, 32)}


@torch.no_grad()
def reference_counts(model, x, num, batch, sigma, num_classes):
    """Cohen et al.'s sampling loop: one input, batches of copies, host-side tally."""
    counts = np.zeros(num_classes, dtype=int)
    remaining = num
    while remaining > 0:
        size = min(batch, remaining)
        remaining -= size
        copies = x.repeat((size, 1, 1, 1))
        noise = torch.randn_like(copies) * sigma
        predictions = model(copies + noise).argmax(1)
        for c in predictions.cpu().numpy():   # as the reference tallies: one class at a time
            counts[c] += 1
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--ns", nargs="+", type=int, default=[100, 10_000])
    p.add_argument("--inputs", type=int, default=0, help="inputs per setting (default: sized to ~5 s)")
    p.add_argument("--batch", type=int, help="batch size for both (default 1000 digits, 256 ResNet-20)")
    args = p.parse_args(argv)
    tune_allocator()   # both sides run in this process, so both get it
    print(f"{'model':<15} {'n':>7} {'inputs':>6} {'reference s':>11} {'smoothcert s':>12} {'speed-up':>8}")
    for name in args.models:
        torch.manual_seed(0)
        model = build(name).eval()
        batch = args.batch or (1000 if name == "digits-cnn" else 256)
        for n in args.ns:
            per_input = 100 + n
            count = args.inputs or max(2, min(2000, int((300_000 if name == "digits-cnn" else 900) * 5 / per_input)))
            xs = torch.rand(count, *SHAPES[name])
            t0 = time.perf_counter()
            for x in xs:
                reference_counts(model, x, 100, batch, 0.25, 10)
                reference_counts(model, x, n, batch, 0.25, 10)
            ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in Smooth(model, Gaussian(0.25)).certify_many(xs, 100, n, 0.001, batch):
                pass
            ours = time.perf_counter() - t0
            print(f"{name:<15} {n:>7} {count:>6} {ref:>11.2f} {ours:>12.2f} {ref / ours:>7.2f}x")


if __name__ == "__main__":
    main()
