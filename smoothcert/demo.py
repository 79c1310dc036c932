"""The built-in end-to-end job on scikit-learn's handwritten digits (shipped with scikit-learn, no download):
train a small CNN under Gaussian noise at sigma = 0.25 and 0.5, certify the whole test split, and print the
certified-accuracy table, the ACR and a plot. Running it again reuses the models and resumes the results."""
from __future__ import annotations

import os
import time

import torch

from .analysis import load_results, plot_certified_accuracy, summary_table
from .data import load_data
from .models import build, load_model, save_model
from .noises import Gaussian
from .run import certify_dataset, resolve_device
from .smooth import Smooth
from .train import accuracy, train

SIGMAS = (0.25, 0.5)


def run_demo(out_dir: str = "demo_out", n0: int = 100, n: int = 10_000, alpha: float = 0.001, epochs: int = 40,
             seed: int = 0, device: str = "auto", progress: bool = True) -> list[str]:
    """Run the demo; return the results files it wrote."""
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    device = resolve_device(device)
    train_set, test_set = load_data("digits", "train"), load_data("digits", "test")
    print(f"digits: {len(train_set)} training and {len(test_set)} test images of 8x8 pixels in [0, 1]; device {device}")
    outputs = []
    for sigma in SIGMAS:
        noise = Gaussian(sigma)
        model_path = os.path.join(out_dir, f"digits_cnn_sigma{sigma}.pt2")
        if os.path.exists(model_path):
            model = load_model(model_path, device=device)
            print(f"\nsigma={sigma}: reusing {model_path}")
        else:
            print(f"\nsigma={sigma}: training digits-cnn for {epochs} epochs under Gaussian noise")
            torch.manual_seed(seed)
            model = build("digits-cnn").to(device)
            train(model, train_set.x, train_set.y, noise, epochs=epochs, seed=seed)
            save_model(model, model_path, train_set.x[:2])
            model = model.to(device)
        print(f"  base classifier accuracy on the test split: clean {accuracy(model, test_set.x, test_set.y):.3f}, "
              f"under noise {accuracy(model, test_set.x, test_set.y, noise, seed):.3f}")
        out = os.path.join(out_dir, f"certify_sigma{sigma}.tsv")
        print(f"  certifying {len(test_set)} test images: n0={n0}, n={n}, alpha={alpha} -> {out}")
        certify_dataset(Smooth(model, noise, device=device), test_set, list(range(len(test_set))), out,
                        n0=n0, n=n, alpha=alpha, batch_size=1000, seed=seed, progress=progress)
        outputs.append(out)
    results = [load_results(path) for path in outputs]
    print("\ncertified accuracy of the smoothed classifier on the digits test split (l2 radius, pixels in [0,1]):")
    print(summary_table(results, [0.0, 0.25, 0.5, 0.75, 1.0]))
    plot = plot_certified_accuracy(results, os.path.join(out_dir, "certified_accuracy.png"),
                                   title="digits: certified accuracy (Gaussian smoothing, Cohen et al.)")
    print(f"\nplot: {plot}\nresults: {', '.join(outputs)}\ndone in {time.perf_counter() - t0:.0f}s")
    return outputs
