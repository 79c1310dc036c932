"""Denoised smoothing on the command line: the checks and loading behind --denoiser (every command that builds a
Smooth from --model), and the train-denoiser command."""
from __future__ import annotations

import os

from ..denoise.compose import DIFFUSION_PREFIX as DIFFUSION
from ..errors import SmoothcertError, check, check_count
from .parser import noise_of



def check_denoiser_args(args) -> None:
    """The denoiser flags agree with each other and with the noise (before any data or model is loaded)."""
    spec = args.denoiser
    check(args.denoiser_weights is None or spec is not None, "--denoiser-weights goes with --denoiser")
    check(spec is None or spec.strip() != "", "--denoiser needs a spec (dncnn, a model file, a factory or "
                                              "diffusion:DIR)")
    diffusion = spec is not None and spec.startswith(DIFFUSION)
    check(args.diffusion_range is None or diffusion, "--diffusion-range goes with --denoiser diffusion:DIR")
    check(not diffusion or (args.noise == "gaussian" and args.sigma is not None),
          "--denoiser diffusion:DIR goes with --noise gaussian: its timestep is chosen to match --sigma")


def load_cli_denoiser(args, device, x):
    """The --denoiser of a command, loaded on `device` and tried on two inputs `x` (its output must keep their
    shape), or None without --denoiser."""
    from ..denoise import DENOISERS, load_denoiser, probe_denoiser
    check_denoiser_args(args)
    spec = args.denoiser
    if spec is None:
        return None
    try:
        denoiser = load_denoiser(spec, args.denoiser_weights, device, trust=args.trust_model, sigma=args.sigma,
                                 diffusion_range=args.diffusion_range)
    except SmoothcertError as exc:
        if spec.startswith(DIFFUSION) or spec in DENOISERS:   # their messages name the denoiser already
            raise
        raise SmoothcertError(f"--denoiser: {exc}") from None
    probe_denoiser(denoiser, x[:2].to(device))
    return denoiser


def cmd_train_denoiser(args) -> None:
    import torch

    from ..data import load_data
    from ..denoise import Denoised, build_denoiser, train_denoiser
    from ..device import resolve_device
    from ..models import load_model, save_model
    from ..train import accuracy

    noise = noise_of(args)
    check_count("--epochs", args.epochs, 2 if args.objective == "mse+stability" else 1)
    check_count("--batch", args.batch)
    device = resolve_device(args.device)
    check(os.path.isdir(os.path.dirname(os.path.abspath(args.out))), f"output folder does not exist for {args.out}")
    data = load_data(args.data, args.split)
    classifier = load_model(args.classifier, args.weights, device, trust=args.trust_model,
                            num_classes=data.num_classes, in_channels=data.x.shape[1])
    torch.manual_seed(args.seed)
    denoiser = build_denoiser(args.arch, channels=data.x.shape[1], depth=args.depth, width=args.width).to(device)
    print(f"training {args.arch} (depth {args.depth}, width {args.width}) for {args.classifier} under "
          f"{noise.describe()}: {args.objective}, {args.epochs} epochs; the classifier is frozen", flush=True)
    train_denoiser(denoiser, classifier, data.x, data.y, noise, objective=args.objective, epochs=args.epochs,
                   batch_size=args.batch, lr=args.lr, seed=args.seed,
                   on_epoch=lambda e: print(f"epoch {e.epoch:3d}  {e.objective:<9}  loss {e.loss:.4f}  classifier "
                                            f"on denoised noisy train {e.train_accuracy:.3f}  ({e.seconds:.1f}s)",
                                            flush=True))
    save_model(denoiser, args.out, data.x[:2])
    composed = Denoised(classifier, denoiser.to(device)).eval()      # save_model moved it to the CPU
    print(f"saved {args.out}; on {data.name} under noise: classifier alone "
          f"{accuracy(classifier, data.x, data.y, noise, args.seed):.3f}, behind the denoiser "
          f"{accuracy(composed, data.x, data.y, noise, args.seed):.3f}")
