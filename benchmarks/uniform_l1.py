"""Uniform against Laplace noise for l1 on digits, at the variance of Gaussian sigma = 0.25.

Yang et al. 2020 report uniform noise ahead of Laplace for l1 at equal variance (CIFAR-10, ImageNet). This trains
the digits CNN as the demo does (40 epochs, seed 0) under Uniform.matching(sigma) (lam = sqrt(3) sigma) and under
Laplace.matching(sigma) (lam = sigma / sqrt(2)), certifies the 450 test images (n0 = 100, n = 10,000,
alpha = 0.001, the same seed) and prints certified accuracy at l1 radii 0..1 and the ACR (radius of correct
predictions, 0 elsewhere, averaged over every image) of each noise's one- and two-sided certificates, all four
computed from the counts of the same engine run per noise:

  laplace  teng         Teng et al. Thm 1 (the default for laplace)      teng-binary  Thm 2, -lam log 2(1 - pA)
  uniform  one-sided    2 lam (pA - 1/2), Clopper-Pearson at alpha        margin       lam (pA - pB), Bonferroni pair

The counts come from the engine on the streams Smooth.certify_many draws (seed, image, stage); the script checks
that on the first images. Models are kept in --out and reused (the demo's Laplace model too).

    python benchmarks/uniform_l1.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from smoothcert import Smooth
from smoothcert import certificates as C
from smoothcert.data import load_data
from smoothcert.jobs.demo import _model
from smoothcert.noises import Laplace, Uniform
from smoothcert.sampling import ESTIMATION, SELECTION, Request

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
CHECKED = 8          # images whose counts are compared with Smooth.certify_many's


def counts(smoothed: Smooth, xs: torch.Tensor, n0: int, n: int, batch: int, seed: int):
    """(selection, estimation) class counts of every input, (N, K) each, drawn by the engine on certify_many's
    streams."""
    c0, c1 = [], []
    for sampler, chunk, members, _ in smoothed.groups(xs, [n0, n], batch, None, None):
        sel, est = (smoothed.streams(members, stage, seed, None, sampler.device) for stage in (SELECTION, ESTIMATION))
        requests = [Request(j, s[j], k) for j in range(len(members)) for s, k in ((sel, n0), (est, n))]
        c = sampler.counts(chunk, requests).reshape(len(members), 2, -1)
        c0.append(c[:, 0])
        c1.append(c[:, 1])
    return np.concatenate(c0), np.concatenate(c1)


def summary(verdict, labels) -> dict:
    ok = verdict.prediction == labels
    radius = np.where(ok, verdict.radius, 0.0)
    return dict(accuracy=[float(np.mean(ok & (radius >= r))) for r in RADII], acr=float(radius.mean()),
                abstained=int(np.sum(verdict.prediction == C.ABSTAIN)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sigma", type=float, default=0.25, help="the Gaussian sigma whose variance both noises match")
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--epochs", type=int, default=40, help="training epochs of the digits CNNs (as the demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--out", default="demo_out", help="where the digits CNNs are kept (the demo's folder)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cpu")
    train_set, test_set = load_data("digits", "train"), load_data("digits", "test")
    labels = test_set.y.numpy()
    rows = []
    for noise, certificates in ((Laplace.matching(args.sigma), {"teng": C.margin, "teng-binary": C.one_sided}),
                                (Uniform.matching(args.sigma), {"one-sided": C.one_sided, "margin": C.margin})):
        model = _model(args.out, f"{noise.name}{noise.lam:.4g}", noise, train_set, test_set, args.epochs, args.seed,
                       device)
        smoothed = Smooth(model, noise, device=device)
        t0 = time.perf_counter()
        c0, c1 = counts(smoothed, test_set.x, args.n0, args.n, args.batch, args.seed)
        seconds = time.perf_counter() - t0
        if noise.name == "laplace":        # the same streams as certify_many: the same counts
            for cert, a, b in zip(smoothed.certify_many(test_set.x[:CHECKED], args.n0, args.n, args.alpha, args.batch,
                                                        seed=args.seed), c0, c1):
                assert np.array_equal(cert.counts_selection, a) and np.array_equal(cert.counts, b), cert.index
        for name, fn in certificates.items():
            row = dict(noise=noise.describe(), certificate=name, n0=args.n0, n=args.n, alpha=args.alpha,
                       seconds=seconds, **summary(fn(c0, c1, noise, args.alpha, "l1"), labels))
            rows.append(row)
    print(f"\ncertified accuracy (%) on the digits test split ({len(labels)} images), l1 radius; noises with the "
          f"variance of Gaussian sigma={args.sigma:g}; n0={args.n0}, n={args.n}, alpha={args.alpha:g}")
    print(f"{'noise':<22} {'certificate':<12} " + " ".join(f"{f'r={r:g}':>7}" for r in RADII) + "      ACR  abstained")
    for r in rows:
        print(f"{r['noise']:<22} {r['certificate']:<12} " + " ".join(f"{100 * a:7.1f}" for a in r["accuracy"])
              + f"   {r['acr']:.4f}  {r['abstained']:>9}")
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
