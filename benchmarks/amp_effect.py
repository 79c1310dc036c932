"""The effect of bfloat16 / float16 autocast (`--amp`) on certified accuracy, measured on a CPU.

Trains (or reuses) the digits CNN and a CIFAR ResNet-20 on scikit-learn's digits (1x8x8 inputs) under Gaussian
noise sigma = 0.25, then certifies the 450 test images with fp32, bf16 and fp16 forward passes, the SAME seed
(so the same noise samples: only the forward pass differs), and compares: certified accuracy at radii, the
average certified radius (ACR), abstentions, and the fraction of inputs whose prediction or radius changes
against fp32. Each precision is a different base classifier and each certificate is valid for its own; the
question is how much accuracy the cheaper arithmetic costs.

    python benchmarks/amp_effect.py                  # about 10-20 minutes on 2 CPU cores
    python benchmarks/amp_effect.py --n 100 --max 50 # quick look
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from throughput import write_json
from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.data import load_data
from smoothcert.models import build, load_model, save_model
from smoothcert.train import train

MODELS = {"digits-cnn": 40, "cifar-resnet20": 15}       # architecture -> training epochs
PRECISIONS = (None, "bf16", "fp16")
RADII = (0.0, 0.25, 0.5, 0.75)
SIGMA = 0.25


def trained(name: str, epochs: int, out_dir: str, train_set) -> torch.nn.Module:
    path = os.path.join(out_dir, f"{name}_digits_sigma{SIGMA}_e{epochs}.pt2")
    if os.path.exists(path):
        return load_model(path)
    torch.manual_seed(0)
    # digits statistics for the Normalize layer (the CIFAR ResNet's default mean/std have 3 channels, and
    # `smoothcert train --arch cifar-resnet20 --data digits` fails on that today)
    model = build(name, num_classes=10, in_channels=1, mean=(0.3,), std=(0.4,))
    t0 = time.perf_counter()
    train(model, train_set.x, train_set.y, Gaussian(SIGMA), epochs=epochs, seed=0)
    print(f"trained {name} on digits for {epochs} epochs in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    save_model(model, path, train_set.x[:2])
    return load_model(path)


def certify(model, xs, amp, n0, n, alpha, batch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # amp on a CPU warns that it is emulated: known, that is the point
        smoothed = Smooth(model, Gaussian(SIGMA), amp=amp)
    t0 = time.perf_counter()
    certs = list(smoothed.certify_many(xs, n0, n, alpha, batch, seed=0))
    seconds = time.perf_counter() - t0
    return (np.array([c.prediction for c in certs]), np.array([c.radius for c in certs]), seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--max", type=int, help="certify only the first MAX test images (default: all 450)")
    p.add_argument("--out-dir", default=os.path.join(tempfile.gettempdir(), "smoothcert-bench"),
                   help="where the trained models are kept and reused")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    tune_allocator()
    os.makedirs(args.out_dir, exist_ok=True)
    train_set, test_set = load_data("digits", "train"), load_data("digits", "test")
    xs, ys = test_set.x[:args.max], test_set.y[:args.max].numpy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"{len(xs)} test images, sigma={SIGMA}, n0={args.n0}, n={args.n}, alpha={args.alpha}, seed 0 for all")
    head = " ".join(f"{'r=' + str(r):>7}" for r in RADII)
    print(f"\n{'model':<15} {'amp':<5} {head} {'ACR':>7} {'abstain':>7} {'pred chg':>8} {'rad chg':>7} "
          f"{'|dR| mean':>9} {'time s':>7}")
    rows = []
    for name in args.models:
        model = trained(name, MODELS[name], args.out_dir, train_set)
        base = None
        for amp in PRECISIONS:
            pred, radius, seconds = certify(model, xs, amp, args.n0, args.n, args.alpha, args.batch)
            correct = pred == ys
            acc = {r: float(np.mean(correct & (radius >= r))) for r in RADII}
            acr = float(np.mean(np.where(correct, radius, 0.0)))
            if base is None:
                base = pred, radius
            changed_pred = float(np.mean(pred != base[0]))
            changed_radius = float(np.mean(radius != base[1]))
            mean_delta = float(np.mean(np.abs(radius - base[1])))
            rows.append(dict(model=name, amp=amp or "fp32", certified_accuracy=acc, acr=acr,
                             abstain=float(np.mean(pred == -1)), prediction_changed=changed_pred,
                             radius_changed=changed_radius, mean_abs_radius_change=mean_delta, seconds=seconds))
            cells = " ".join(f"{acc[r]:>7.3f}" for r in RADII)
            print(f"{name:<15} {amp or 'fp32':<5} {cells} {acr:>7.4f} {rows[-1]['abstain']:>7.3f} "
                  f"{changed_pred:>8.3f} {changed_radius:>7.3f} {mean_delta:>9.5f} {seconds:>7.1f}", flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}; pred chg / rad chg: fraction of inputs whose prediction / "
          "radius differs from fp32 on the same noise samples")
    return write_json(args.json, rows)


if __name__ == "__main__":
    raise SystemExit(main())
