"""The commands around a run: train a model, time one call (bench-latency), the demo."""
from __future__ import annotations

import os

from ..errors import check, check_alpha, check_count
from ..models.architectures import MAX_CLASSES as MAX_TRAIN_CLASSES
from .denoise import check_denoiser_args, load_cli_denoiser
from .parser import noise_of
from .sampling import sampled_noise

def cmd_bench_latency(args) -> None:
    from .. import planning
    from ..data import load_data
    from ..models import load_model
    from ..device import resolve_device
    from ..jobs import bench_latency
    from ..smooth import Smooth
    noise = noise_of(args)
    check_denoiser_args(args)
    alpha = check_alpha(args.alpha)
    check_count("--n0", args.n0)
    run = planning.load_run(args.results) if args.results else None     # a bad file fails before any timing
    device = resolve_device(args.device)
    data = load_data(args.data, args.split)
    noise = sampled_noise(args, noise, data)
    if run is not None:                                                  # its prediction is for the run's noise
        check(run.noise == noise, f"{args.results} was certified under {run.noise.describe()} but this command "
                                  f"times {noise.describe()}: give the run's --noise, --sigma/--lam and sampling "
                                  "(--float-sound, --input-grid)")
    check(0 <= args.index < len(data), f"--index {args.index} is out of range (0..{len(data) - 1})")
    model = load_model(args.model, args.weights, device, trust=args.trust_model, num_classes=data.num_classes,
                       in_channels=data.x.shape[1])
    smoothed = Smooth(model, noise, device=device, amp=args.amp, denoiser=load_cli_denoiser(args, device, data.x[:2]))
    table, n = bench_latency(smoothed, data.x[args.index], n0=args.n0, alpha=alpha, budget_ms=args.budget_ms,
                             repeats=args.repeats)
    print(f"one input on {device}: n0 = {args.n0} + n estimation samples, forward passes in one batch")
    print(f"{'n':>9}  {'median ms':>9}  {'p90 ms':>7}")
    for t in table:
        print(f"{t.n:>9}  {t.median_ms:>9.2f}  {t.p90_ms:>7.2f}" + ("  <- chosen" if t.n == n else ""))
    print(f"the largest n within {args.budget_ms:g} ms (median): {n}")
    if run is not None and n > 0:
        pred = planning.predict(run, [n, run.n])
        print(f"ACR expected at n = {n} from {args.results}: {pred.acr[0]:.4f} (at the run's n = {run.n}: "
              f"{pred.acr[1]:.4f}, measured {run.acr:.4f})")
    elif n > 0:
        cells = ", ".join(f"pA={p:g}: {float(planning.expected_radius(p, n, alpha, noise)):.3f}"
                          for p in (0.9, 0.99, 0.999))
        print(f"expected radius at n = {n}: {cells} (give --results for the ACR of a run)")


def cmd_train(args) -> None:
    import torch

    from ..data import load_data
    from ..device import resolve_device
    from ..models import build, save_model
    from ..train import accuracy, train

    noise = _training_noise(args)
    check_count("--epochs", args.epochs)
    check_count("--batch", args.batch)
    device = resolve_device(args.device)
    check(os.path.isdir(os.path.dirname(os.path.abspath(args.out))), f"output folder does not exist for {args.out}")
    data = load_data(args.data, args.split)
    check(data.num_classes <= MAX_TRAIN_CLASSES, f"{args.data} has labels up to {data.num_classes - 1}; the built-in "
          f"architectures train at most {MAX_TRAIN_CLASSES:,} classes (labels must be 0..K-1)")
    torch.manual_seed(args.seed)
    model = build(args.arch, num_classes=data.num_classes, in_channels=data.x.shape[1]).to(device)
    train(model, data.x, data.y, noise, epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=args.seed,
          adversarial_step=args.adv_step,
          on_epoch=lambda e: print(f"epoch {e.epoch:3d}  loss {e.loss:.4f}  {'clean' if noise is None else 'noisy'} "
                                   f"train acc {e.train_accuracy:.3f}  ({e.seconds:.1f}s)", flush=True))
    save_model(model, args.out, data.x[:1])
    print(f"saved {args.out}; {'clean' if noise is None else 'noisy'} accuracy on {data.name}: "
          f"{accuracy(model, data.x, data.y, noise, args.seed):.3f}")


def _training_noise(args):
    """The noise `train` trains under; None for --clean or --sigma 0 (an ordinary classifier)."""
    if not (args.clean or args.sigma == 0):
        return noise_of(args)
    check(args.sigma in (None, 0), f"--clean trains without noise: it does not go with --sigma {args.sigma}")
    check(args.noise == "gaussian" and args.lam is None,
          "--clean (or --sigma 0) trains without noise: leave out --noise and --lam")
    return None


def cmd_demo(args) -> None:
    from ..jobs.demo import run_demo
    run_demo(out_dir=args.out_dir, n=args.n, epochs=args.epochs, device=args.device, progress=not args.no_progress)

