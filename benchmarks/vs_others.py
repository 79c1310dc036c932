"""smoothcert against Cohen et al.'s sampling loop and IBM ART 1.20.1's randomized smoothing, side by side.

Same model (random weights, eval mode), same inputs, n0 = 100, n in (100, 10,000), alpha = 0.001, sigma = 0.25,
the same forward batch size for all, one process (the allocator tuned as the smoothcert CLI does, for all):

  cohen       Cohen et al.'s CERTIFY as their core.py runs it, written here from the paper's pseudocode: per input,
              batches of copies plus `randn_like * sigma`, argmax, a host-side tally one class at a time; n0 then
              n samples; the Clopper-Pearson bound and sigma * Phi^-1 at the end;
  art         `art.estimators.certification.randomized_smoothing.PyTorchRandomizedSmoothing(...).certify(x, n,
              batch_size)` (numpy noise, float64 drawn then cast; statsmodels' bound), sample_size = n0;
  many        `Smooth.certify_many(xs, n0, n, alpha, batch)`: inputs share forward batches;
  single      `Smooth.certify(x, ...)` called once per input (the real-time use).

Each round runs every method on the same inputs, in rotated order; the table gives the median wall time per
input and the speed-up over cohen (median of the per-round ratios). Needs ART: `make bench-others` installs
adversarial-robustness-toolbox==1.20.1 (and statsmodels, which its certify imports) into the venv first; without
it the art column is left out.

    python benchmarks/vs_others.py                          # a few minutes on 2 CPU cores
    python benchmarks/vs_others.py --models digits-cnn --ns 100 --rounds 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from scipy.stats import beta, norm

from throughput import write_json
from smoothcert import Gaussian, Smooth
from smoothcert.cli import tune_allocator
from smoothcert.models import build

SHAPES = {"digits-cnn": (1, 8, 8), "cifar-resnet20": (3, 32, 32)}
BATCH = {"digits-cnn": 1000, "cifar-resnet20": 256}
N0, ALPHA, SIGMA, CLASSES = 100, 0.001, 0.25, 10


@torch.no_grad()
def cohen_counts(model, x, num, batch, sigma):
    """Cohen et al.'s sampling: batches of copies of one input, Gaussian noise, host-side tally."""
    counts = np.zeros(CLASSES, dtype=int)
    remaining = num
    while remaining > 0:
        size = min(batch, remaining)
        remaining -= size
        copies = x.repeat((size, 1, 1, 1))
        noise = torch.randn_like(copies) * sigma
        predictions = model(copies + noise).argmax(1)
        for c in predictions.cpu().numpy():   # as their _count_arr: one class at a time
            counts[c] += 1
    return counts


def cohen_certify(model, xs, n, batch):
    out = []
    for x in xs:
        c_a = int(cohen_counts(model, x, N0, batch, SIGMA).argmax())
        k = int(cohen_counts(model, x, n, batch, SIGMA)[c_a])
        p_a = beta.ppf(ALPHA, k, n - k + 1) if k > 0 else 0.0     # one-sided Clopper-Pearson (their 2*alpha two-sided)
        out.append((c_a, SIGMA * norm.ppf(p_a)) if p_a >= 0.5 else (-1, 0.0))
    return out


def art_certifier(model, shape, batch):
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError:
        return None
    rs = PyTorchRandomizedSmoothing(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape,
                                    nb_classes=CLASSES, channels_first=True, device_type="cpu", sample_size=N0,
                                    scale=SIGMA, alpha=ALPHA)
    return lambda xs, n: rs.certify(xs.numpy(), n=n, batch_size=batch)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--ns", nargs="+", type=int, default=[100, 10_000])
    p.add_argument("--inputs", type=int, default=0, help="inputs per setting (default: about 2 s of forward passes)")
    p.add_argument("--batch", type=int, help="batch size for all (default 1000 digits-cnn, 256 cifar-resnet20)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import art
        art_version = art.__version__
    except ImportError:
        art_version = "not installed (make bench-others installs it)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"ART {art_version}; n0={N0}, alpha={ALPHA}, sigma={SIGMA}; median ms per input over {args.rounds} rounds; "
          "x = speed-up over cohen")
    print(f"{'model':<15} {'n':>6} {'batch':>5} {'inputs':>6} {'cohen':>9} {'art':>15} {'many':>15} {'single':>15}")
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build(name).eval()
        batch = args.batch or BATCH[name]
        smoothed = Smooth(model, Gaussian(SIGMA))
        art_certify = art_certifier(model, SHAPES[name], batch)
        rate = 300_000 if name == "digits-cnn" else 1_000            # rough samples/s, to size the inputs
        for n in args.ns:
            count = args.inputs or max(2, min(200, int(2 * rate / (N0 + n))))
            xs = torch.rand(count, *SHAPES[name])
            methods = {"cohen": lambda v: cohen_certify(model, v, n, batch),
                       "many": lambda v: list(smoothed.certify_many(v, N0, n, ALPHA, batch)),
                       "single": lambda v: [smoothed.certify(x, N0, n, ALPHA, batch) for x in v]}
            if art_certify is not None:
                methods["art"] = lambda v: art_certify(v, n)
            for m in methods.values():     # warm-up: first calls pay allocations and one-time checks
                m(xs[:1])
            times = {m: [] for m in methods}
            for r in range(args.rounds):
                order = list(methods)[r % len(methods):] + list(methods)[:r % len(methods)]
                for m in order:
                    t0 = time.perf_counter()
                    methods[m](xs)
                    times[m].append((time.perf_counter() - t0) / count)
            row = dict(model=name, n=n, batch=batch, inputs=count, threads=torch.get_num_threads(),
                       ms={m: 1e3 * statistics.median(t) for m, t in times.items()},
                       speedup={m: statistics.median(c / t for c, t in zip(times["cohen"], times[m])) for m in times})
            rows.append(row)
            cells = [f"{row['ms'][m]:>8.1f} ({row['speedup'][m]:.2f}x)" if m in row["ms"] else f"{'-':>15}"
                     for m in ("art", "many", "single")]
            print(f"{name:<15} {n:>6} {batch:>5} {count:>6} {row['ms']['cohen']:>9.1f} " + " ".join(cells), flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return write_json(args.json, rows)


if __name__ == "__main__":
    raise SystemExit(main())
