"""Diffusion denoised smoothing end to end on the built-in digits (Carlini et al. 2023): train a small DDPM
(diffusers UNet2DModel + DDPMScheduler, 1000 linear steps, data in [-1, 1]) on the 8x8 digits for a few minutes on a
CPU, save it with save_pretrained, load it back through smoothcert.denoise.load_diffusion (local files only), and
certify a classifier trained without noise through it, beside the same classifier alone.

It shows the path working on real (if small) data; it is not tuned to reach a trained DnCNN's accuracy
(benchmarks/denoised.py). Needs the [diffusion] extra (diffusers).

    python benchmarks/diffusion_digits.py --threads 1 --minutes 3            # about 5 minutes in all
    python benchmarks/diffusion_digits.py --threads 1 --steps 200 --limit 20  # a quick check (1 minute)
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from smoothcert import Gaussian, Smooth, summarize
from smoothcert.cli import tune_allocator
from smoothcert.data import load_data
from smoothcert.denoise import Denoised, load_diffusion
from smoothcert.models import build
from smoothcert.train import train

RADII = (0.0, 0.25, 0.5)


def make_ddpm(width: int, layers: int):
    import diffusers
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(width, 2 * width),
                                 layers_per_block=layers, norm_num_groups=8, down_block_types=("DownBlock2D",) * 2,
                                 up_block_types=("UpBlock2D",) * 2)
    return unet, diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def train_ddpm(unet, scheduler, x01: torch.Tensor, minutes: float, steps: int | None, batch: int, lr: float,
               seed: int) -> tuple[int, float, float]:
    """The DDPM objective E||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2 with t uniform (Ho et al.
    2020, Alg. 1), on data mapped to [-1, 1]; Adam with a cosine learning rate over the time (or step) budget."""
    gen = torch.Generator().manual_seed(seed)
    x = x01 * 2 - 1
    opt = torch.optim.Adam(unet.parameters(), lr=lr)
    budget, t0, step, ema = minutes * 60, time.perf_counter(), 0, None
    unet.train()
    while True:
        done = step / steps if steps else (time.perf_counter() - t0) / budget
        if done >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * done))
        idx = torch.randint(len(x), (batch,), generator=gen)
        x0 = x[idx]
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.randint(scheduler.config.num_train_timesteps, (batch,), generator=gen)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, eps, t), t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        step += 1
        if step % 500 == 0:
            print(f"  step {step}: loss {ema:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return step, ema, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="DDPM training time (default 3)")
    p.add_argument("--steps", type=int, help="train this many steps instead of --minutes (reproducible)")
    p.add_argument("--width", type=int, default=16, help="UNet channels of the first level (default 16)")
    p.add_argument("--layers", type=int, default=1, help="UNet layers per block (default 1)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--out", help="folder for the saved model (default: a temporary folder)")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--limit", type=int, default=200, help="certify the first LIMIT test images (default 200)")
    p.add_argument("--classifier-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    args = p.parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    train_set, test = load_data("digits", "train"), load_data("digits", "test")
    xs, ys = test.x[: args.limit], test.y[: args.limit]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"sigma={args.sigma}, n0={args.n0}, n={args.n}, alpha={args.alpha}, {len(xs)} test images")
    torch.manual_seed(args.seed)
    unet, scheduler = make_ddpm(args.width, args.layers)
    print(f"training a DDPM ({sum(p.numel() for p in unet.parameters()):,} parameters) for "
          + (f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"), flush=True)
    steps, loss, seconds = train_ddpm(unet, scheduler, train_set.x, args.minutes, args.steps, args.batch, args.lr,
                                      args.seed)
    print(f"trained {steps} steps in {seconds:.0f} s, final loss {loss:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        import diffusers
        diffusers.DDPMPipeline(unet=unet.eval(), scheduler=scheduler).save_pretrained(out)
        denoiser = load_diffusion(out, args.sigma, (-1, 1))
        print(f"saved to {out} and loaded back: {denoiser.extra_repr()}")
        torch.manual_seed(args.seed)
        clean = train(build("digits-cnn"), train_set.x, train_set.y, None, epochs=args.classifier_epochs,
                      seed=args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        noisy = test.x + args.sigma * torch.randn(test.x.shape, generator=gen)
        with torch.no_grad():
            mse = float(((denoiser(noisy) - test.x) ** 2).mean())
        print(f"one-step denoising MSE on the noisy test images: {mse:.4f} (the noisy images' own: "
              f"{float(((noisy - test.x) ** 2).mean()):.4f})")
        print(f"\n{'base classifier':<28} {'cert s':>7} " + " ".join(f"{'r=' + format(r, 'g'):>6}" for r in RADII)
              + f" {'ACR':>6}")
        for name, model in (("clean classifier alone", clean),
                            ("clean + diffusion (1 step)", Denoised(clean, denoiser))):
            t0 = time.perf_counter()
            certs = list(Smooth(model, Gaussian(args.sigma)).certify_many(xs, args.n0, args.n, args.alpha, 1000,
                                                                         seed=args.seed))
            s = summarize(certs, ys, RADII)
            print(f"{name:<28} {time.perf_counter() - t0:>7.1f} "
                  + " ".join(f"{100 * s.certified_accuracy[r]:>6.1f}" for r in RADII) + f" {s.acr:>6.3f}", flush=True)
    print(f"(load average now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
