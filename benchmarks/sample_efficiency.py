"""The sample-efficiency targets of issue 8, measured on the digits test set (sigma = 0.25, alpha = 0.001, n0 = 100):

  1. fixed n = 100,000 (one nested pass also gives n = 100 and 1,000), the reference;
  2. the ACR predicted for n = 100 and 1,000 from the n = 100,000 run against the ACR measured there (target: 5 %);
  3. early stopping at r0 = 0.25 and 0.5 (n_max = 100,000): certified accuracy at r0 against the fixed run
     (target: within 0.5 points) and the factor of fewer estimation samples (target: >= 10x, aim 30x);
  4. input-specific n (n_max = 100,000, --max-loss 0.02 relative and 0.01 absolute): ACR against the fixed run
     (target: within 2 %) and the factor of fewer samples (target: >= 3x).

It trains (or reuses) the digits CNN of the demo, runs every certification through `smoothcert certify` into
--out-dir (resumable: run it again to finish an interrupted run) and prints one table. About 10 minutes on two
CPU cores, most of it the n = 100,000 reference (45 million forward passes).

    python benchmarks/sample_efficiency.py --out-dir bench_efficiency
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from smoothcert import planning
from smoothcert.analysis import average_certified_radius, certified_accuracy, load_results
from smoothcert.cli import main as cli, tune_allocator


def run(*args):
    code = cli(list(map(str, args)))
    if code != 0:
        raise SystemExit(f"smoothcert {' '.join(map(str, args))} failed with exit code {code}")


def samples(res) -> np.ndarray:
    return np.asarray(res.samples, dtype=float)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="bench_efficiency")
    p.add_argument("--n-max", type=int, default=100_000)
    p.add_argument("--max", type=int, default=None, help="only the first MAX test images (quick check)")
    args = p.parse_args(argv)
    tune_allocator()
    os.makedirs(args.out_dir, exist_ok=True)
    out = lambda name: os.path.join(args.out_dir, name)
    model = out("digits_cnn_sigma0.25.pt2")
    if not os.path.exists(model):
        run("train", "--arch", "digits-cnn", "--data", "digits", "--sigma", 0.25, "--epochs", 40, "--out", model)
    common = ["--model", model, "--data", "digits", "--sigma", 0.25, "--alpha", 0.001, "--n0", 100, "--batch", 1000,
              "--seed", 0, "--no-progress"] + (["--max", args.max] if args.max else [])
    t0 = time.perf_counter()
    ns = [100, 1000, args.n_max]
    run("certify", *common, "--n", ",".join(map(str, ns)), "--out", out("fixed.tsv"))
    print(f"fixed-n reference: {time.perf_counter() - t0:.0f} s")
    fixed = {n: load_results(out(f"fixed_n{n}.tsv")) for n in ns}
    ref = fixed[args.n_max]
    pred = planning.predict(planning.load_run(out(f"fixed_n{args.n_max}.tsv")), ns[:-1], (0.25, 0.5))
    print(f"\nreference: fixed n = {args.n_max:,}, {ref.n} inputs, ACR {average_certified_radius(ref):.4f}")
    print("\nprediction from the reference run (target: ACR within 5 %)")
    print(f"{'n':>7}  {'ACR measured':>12}  {'predicted':>9}  {'error':>6}")
    for j, n in enumerate(ns[:-1]):
        measured = average_certified_radius(fixed[n])
        print(f"{n:>7}  {measured:>12.4f}  {pred.acr[j]:>9.4f}  {100 * (pred.acr[j] / measured - 1):>+5.1f}%")
    print("\nearly stopping (target: certified accuracy at r0 within 0.5 points, >= 10x fewer samples)")
    print(f"{'r0':>5}  {'cert. acc.':>10}  {'fixed':>6}  {'diff':>6}  {'mean samples':>12}  {'fewer':>6}  "
          f"{'with n0':>7}  {'seconds':>7}")
    for r0 in (0.25, 0.5):
        t0 = time.perf_counter()
        path = out(f"target{r0:g}.tsv")
        run("certify", *common, "--n-max", args.n_max, "--target-radius", r0, "--out", path)
        res, seconds = load_results(path), time.perf_counter() - t0
        got, base = float(certified_accuracy(res, [r0])[0]), float(certified_accuracy(ref, [r0])[0])
        s = samples(res).mean()
        print(f"{r0:>5g}  {100 * got:>9.1f}%  {100 * base:>5.1f}%  {100 * (got - base):>+5.1f}  {s:>12,.0f}  "
              f"{args.n_max / s:>5.0f}x  {(args.n_max + 100) / (s + 100):>6.0f}x  {seconds:>7.0f}")
    print("\ninput-specific n (target: ACR within 2 %, >= 3x fewer samples)")
    print(f"{'max-loss':>14}  {'ACR':>6}  {'fixed':>6}  {'diff':>6}  {'mean samples':>12}  {'fewer':>6}")
    for loss, kind in ((0.02, "relative"), (0.01, "absolute")):
        path = out(f"inputn_{loss:g}_{kind}.tsv")
        run("certify", *common, "--n-max", args.n_max, "--max-loss", loss, "--loss", kind, "--out", path)
        res = load_results(path)
        acr, base = average_certified_radius(res), average_certified_radius(ref)
        s = samples(res).mean()
        print(f"{f'{loss:g} {kind}':>14}  {acr:>6.4f}  {base:>6.4f}  {100 * (acr / base - 1):>+5.1f}%  {s:>12,.0f}  "
              f"{args.n_max / s:>5.1f}x")


if __name__ == "__main__":
    main()
