"""Float-sound sampling (smoothcert.noises.sound) against default sampling: speed, certified accuracy, the attack.

  speed     samples per second (of this process's CPU time on a CPU, of wall time on CUDA) of `certify_many`
            (n0 = 100, n = 10,000, alpha = 0.001, sigma = 0.25) under default Gaussian noise and under
            float-sound noise on the data's grid (digits-cnn: 1/16, cifar-resnet20: 1/255; random weights,
            inputs on the grid), measured interleaved for --rounds rounds (the order alternates); the ratio is
            the median of the per-round float-sound/default ratios (target >= 90 %);
  accuracy  certified accuracy at radii 0..1 and the ACR on the digits test split (450 images) at sigma = 0.25 and
            0.5, the digits CNN trained under Gaussian noise as the demo trains it (reused from --out when
            there), the same n, seed and batch under both samplers (targets: within 0.5 points and 1 %); the
            two samplers draw different noise, so the differences include Monte Carlo noise;
  attack    the rounding attack (smoothcert.noises.rounding_attack, CIFAR-sized, sigma = 0.25, n = 2,000): the share of
            --trials seeds whose certificate at the black image covers the gray image yet PREDICT there
            returns another class (a false certificate);
  law       on each device: a chi-square of 10 million float-sound draws against the table's exact law, and the
            engine's noisy inputs against the exact sums (the check to run on a GPU).

    python benchmarks/float_sound.py --threads 1                     # everything on the CPU (about 15 minutes)
    python benchmarks/float_sound.py --parts speed law --devices cuda
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import CPU_BATCH, GPU_BATCH, MODELS, Clock, measure_certify, write_json  # noqa: E402

from smoothcert import Gaussian, Smooth  # noqa: E402
from smoothcert.certificates import ABSTAIN  # noqa: E402
from smoothcert.models import build  # noqa: E402
from smoothcert.noises.rounding_attack import rounding_attack  # noqa: E402
from smoothcert.engine import PIECE, Request, Sampler  # noqa: E402
from smoothcert.noises.sound import RANDOM_BITS, SoundGaussian  # noqa: E402

GRIDS = {"digits-cnn": 16, "cifar-resnet20": 255, "cifar-resnet110": 255}
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def on_grid(count: int, shape, grid: int) -> torch.Tensor:
    return torch.randint(0, grid + 1, (count, *shape), generator=torch.Generator().manual_seed(0)) / grid


def speed(name: str, device: torch.device, n: int, seconds: float, rounds: int) -> dict:
    shape, grid = MODELS[name], GRIDS[name]
    batch = GPU_BATCH if device.type == "cuda" else CPU_BATCH[name]
    torch.manual_seed(0)
    model = build(name).to(device).eval()
    noises = {"default": Gaussian(0.25), "float-sound": SoundGaussian(0.25, grid)}
    smooths = {k: Smooth(model, v, device=device) for k, v in noises.items()}
    warmup = min(0.5, seconds / 4)
    # On a CPU the slice is this process's CPU time: other processes on the shared cores then slow both samplers
    # alike instead of whichever happens to run at the time (wall-clock ratios swing 80-105 % under load).
    timer = time.process_time if device.type == "cpu" else time.perf_counter
    rates = {k: [] for k in noises}
    for r in range(rounds):
        for k in (list(noises) if r % 2 == 0 else list(noises)[::-1]):
            xs = on_grid(max(8, math.ceil(40_000 * seconds / n)), shape, grid)
            rates[k].append(measure_certify(smooths[k], xs, n, batch, Clock(device, warmup, seconds, timer)))
    ratios = [s / d for s, d in zip(rates["float-sound"], rates["default"])]
    return dict(part="speed", model=name, device=device.type, n=n, batch=batch, grid=grid,
                clock="cpu time" if device.type == "cpu" else "wall",
                default=statistics.median(rates["default"]), sound=statistics.median(rates["float-sound"]),
                ratio=statistics.median(ratios), ratios=ratios, threads=torch.get_num_threads())


def accuracy(out_dir: str, n: int, device: torch.device, epochs: int, seed: int = 0) -> list[dict]:
    from smoothcert.data import load_data
    from smoothcert.jobs.demo import _model
    train_set, test_set = load_data("digits", "train"), load_data("digits", "test")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for sigma in (0.25, 0.5):
        model = _model(out_dir, f"sigma{sigma}", Gaussian(sigma), train_set, test_set, epochs, seed, device)
        row = dict(part="accuracy", sigma=sigma, n=n, inputs=len(test_set))
        for key, noise in (("default", Gaussian(sigma)), ("float-sound", SoundGaussian(sigma, 16))):
            t0 = time.perf_counter()
            certs = list(Smooth(model, noise, device=device).certify_many(test_set.x, 100, n, 0.001, 1000, seed=seed))
            ok = np.array([c.prediction == int(y) for c, y in zip(certs, test_set.y)])
            radius = np.array([c.radius for c in certs]) * ok
            row[key] = dict(accuracy=[float(np.mean(ok & (radius >= r))) for r in RADII], acr=float(radius.mean()),
                            seconds=time.perf_counter() - t0, noise=noise.describe())
        rows.append(row)
    return rows


def attack(trials: int, device: torch.device, n: int = 2_000) -> list[dict]:
    a = rounding_attack()
    rows = []
    for key, noise in (("default", Gaussian(0.25)), ("float-sound", SoundGaussian(0.25, 255))):
        smoothed = Smooth(a.model, noise, num_classes=2, device=device)
        covered = false = 0
        for seed in range(trials):
            cert = smoothed.certify(a.x, 100, n, 0.001, batch_size=1000, seed=2 * seed)
            if cert.prediction == ABSTAIN or cert.radius <= a.distance:
                continue
            covered += 1
            pred = smoothed.predict(a.x_adv, 500, 0.001, batch_size=1000, seed=2 * seed + 1)
            false += pred.prediction not in (ABSTAIN, cert.prediction)
        rows.append(dict(part="attack", sampler=key, device=device.type, trials=trials, covering=covered, false=false,
                         distance=a.distance, n=n))
    return rows


class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.zeros(x.shape[0], 2, device=x.device)


def law(device: torch.device) -> dict:
    noise = SoundGaussian(0.25, 255)
    t = noise.table
    draws = noise.sample(torch.empty(10_000_000, device=device), torch.Generator(device=device).manual_seed(1))
    counts = torch.bincount(draws.round().long() + t.half, minlength=len(t.counts)).double().cpu().numpy()
    expected = np.array(t.counts, dtype=np.float64) / (1 << RANDOM_BITS) * counts.sum()
    keep = expected >= 20
    lo, hi = np.argmax(keep), len(keep) - np.argmax(keep[::-1])
    o = np.concatenate([[counts[:lo].sum()], counts[lo:hi], [counts[hi:].sum()]])
    e = np.concatenate([[expected[:lo].sum()], expected[lo:hi], [expected[hi:].sum()]])
    pvalue = float(stats.chisquare(o, e * o.sum() / e.sum()).pvalue)
    x = torch.tensor([[0.0, 1.0, 37 / 255, 200 / 255]])
    model = _Recorder()
    Sampler(model, noise, 2, batch_size=PIECE, device=device).counts(
        x, [Request(0, torch.Generator(device=device).manual_seed(5), PIECE)])
    delta = noise.sample(torch.empty(PIECE, 4, device=device), torch.Generator(device=device).manual_seed(5))
    total = (x.double().to(device) * 255).round() + delta.double()
    exact = bool(torch.equal(total.float().double(), total)) and bool(torch.equal(torch.cat(model.seen),
                                                                                  total.float() / 255))
    return dict(part="law", device=device.type, draws=len(draws), chi2_pvalue=pvalue, exact_sums=exact)


def report(rows) -> None:
    for r in rows:
        if r["part"] == "speed":
            print(f"speed  {r['model']:<15} {r['device']:<5} ({r['clock']}) n={r['n']:<6} batch={r['batch']:<5} "
                  f"default "
                  f"{r['default']:>10,.0f}/s  float-sound {r['sound']:>10,.0f}/s  ratio {100 * r['ratio']:5.1f} % "
                  f"({100 * min(r['ratios']):.1f}-{100 * max(r['ratios']):.1f}; target >= 90 %)")
        elif r["part"] == "accuracy":
            d, s = r["default"], r["float-sound"]
            print(f"accuracy digits sigma={r['sigma']} n={r['n']} ({r['inputs']} inputs); certified accuracy at r = "
                  f"{', '.join(f'{x:g}' for x in RADII)}, ACR:")
            for key, v in (("default", d), ("float-sound", s)):
                print(f"  {key:<12} {' '.join(f'{100 * a:5.1f}' for a in v['accuracy'])}   ACR {v['acr']:.4f}"
                      f"   ({v['seconds']:.0f} s; {v['noise']})")
            print(f"  difference   {' '.join(f'{100 * (b - a):+5.1f}' for a, b in zip(d['accuracy'], s['accuracy']))}"
                  f"   ACR {100 * (s['acr'] / d['acr'] - 1):+.2f} %  (targets: 0.5 points, 1 %)")
        elif r["part"] == "attack":
            print(f"attack {r['sampler']:<12} {r['device']:<5} false certificates {r['false']}/{r['covering']} "
                  f"covering certificates "
                  f"({r['trials']} seeds; x_adv at l2 distance {r['distance']:.3f}, n = {r['n']})")
        else:
            print(f"law    {r['device']:<5} chi-square p = {r['chi2_pvalue']:.3g} over {r['draws']:,} draws; "
                  f"model inputs are the exact sums / 255: {r['exact_sums']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=["speed", "accuracy", "attack", "law"],
                   default=["speed", "accuracy", "attack", "law"])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["digits-cnn", "cifar-resnet20"])
    p.add_argument("--devices", nargs="+", choices=["cpu", "cuda"],
                   default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--n", type=int, default=10_000, help="estimation samples for speed and accuracy (default 10,000)")
    p.add_argument("--seconds", type=float, default=3.0, help="time slice per speed measurement (default 3)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved speed rounds (default 4)")
    p.add_argument("--trials", type=int, default=10, help="attack seeds per sampler (default 10)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs of the digits CNNs (as the demo)")
    p.add_argument("--out", default="demo_out", help="where the digits CNNs are kept (the demo's folder)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for part in args.parts:
        if part == "speed":
            for device in args.devices:
                for name in args.models:
                    rows.append(speed(name, torch.device(device), args.n, args.seconds, args.rounds))
                    report(rows[-1:])
        elif part == "accuracy":
            rows += accuracy(args.out, args.n, torch.device(args.devices[0]), args.epochs)
            report([r for r in rows if r["part"] == "accuracy"])
        elif part == "attack":
            for device in args.devices:
                rows += attack(args.trials, torch.device(device))
                report(rows[-2:])
        else:
            for device in args.devices:
                rows.append(law(torch.device(device)))
                report(rows[-1:])
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    return write_json(args.json, rows)


if __name__ == "__main__":
    raise SystemExit(main())
