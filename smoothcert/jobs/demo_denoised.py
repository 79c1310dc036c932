"""The demo's denoised-smoothing section (Salman et al. 2020): a digits CNN trained without noise, certified at
sigma = 0.25 alone and behind a DnCNN trained for it (MSE, stability), beside the CNN trained under that noise;
one table and one plot. Running it again reuses the models and resumes the results."""
from __future__ import annotations

import os

import torch

from ..analysis import load_results, plot_certified_accuracy, relabel, summary_table
from ..denoise import Denoised, dncnn, train_denoiser
from ..models import build, load_model, save_model
from ..noises import Gaussian
from ..smooth import Smooth
from ..train import accuracy, train
from .datasets import certify_dataset

SIGMA = 0.25
OBJECTIVES = ("mse", "stability")
DENOISER_EPOCHS = 20              # DnCNN 5x16 on the 1,347 training digits: about 3 s an objective on one core
MAX_N = 1000                      # the composition costs ~4x the CNN a sample: n = 1,000 on all 450 test images
RADII = (0.0, 0.25, 0.5)


def _reuse_or_train(path, what, make, example, device):
    """Load the model at `path`, or make it (a function returning a trained module) and save it there."""
    if os.path.exists(path):
        print(f"  {what}: reusing {path}")
        return load_model(path, device=device)
    print(f"  {what}: training -> {path}")
    model = make()
    save_model(model, path, example)
    return model.to(device)


def denoised_section(out_dir, train_set, test_set, everyone, noise_trained: dict, n0, n, alpha, epochs, seed,
                     device, progress) -> list[str]:
    """Run the section; `noise_trained` maps n to the certify file of the CNN trained at SIGMA (the demo's nested
    run). Returns the results files it wrote."""
    noise, m = Gaussian(SIGMA), min(n, MAX_N)
    print(f"\ndenoised smoothing (sigma={SIGMA}): a digits CNN trained without noise, certified alone and behind a "
          f"DnCNN (5x16) trained for it with each objective ({DENOISER_EPOCHS} epochs, the CNN frozen)")

    def clean_cnn():
        torch.manual_seed(seed)
        return train(build("digits-cnn").to(device), train_set.x, train_set.y, None, epochs=epochs, seed=seed)
    clean = _reuse_or_train(os.path.join(out_dir, "digits_cnn_clean.pt2"), f"digits-cnn, no noise, {epochs} epochs",
                            clean_cnn, train_set.x[:2], device)

    def denoiser(objective):
        def make():
            torch.manual_seed(seed)
            return train_denoiser(dncnn().to(device), clean, train_set.x, train_set.y, noise, objective=objective,
                                  epochs=DENOISER_EPOCHS, seed=seed)
        return make
    denoisers = {o: _reuse_or_train(os.path.join(out_dir, f"dncnn_{o}_sigma{SIGMA}.pt2"), f"DnCNN ({o})",
                                    denoiser(o), train_set.x[:2], device) for o in OBJECTIVES}
    behind = [f"behind the {o} DnCNN {accuracy(Denoised(clean, d), test_set.x, test_set.y, noise, seed):.3f}"
              for o, d in denoisers.items()]
    print(f"  base classifier accuracy on the test split under noise: CNN alone "
          f"{accuracy(clean, test_set.x, test_set.y, noise, seed):.3f}, {', '.join(behind)}")
    files, labels = [], []
    for name, d in (("alone", None), *denoisers.items()):
        out = os.path.join(out_dir, f"certify_clean_{name}_sigma{SIGMA}.tsv")
        certify_dataset(Smooth(clean, noise, device=device, denoiser=d), test_set, everyone, out, n0=n0, n=m,
                        alpha=alpha, batch_size=1000, seed=seed, progress=progress)
        files.append(out)
        labels.append("clean CNN alone" if d is None else f"clean CNN behind DnCNN ({name})")
    results = relabel([load_results(path) for path in files + [noise_trained[m]]],
                      labels + [f"CNN trained at sigma={SIGMA}"])
    print(f"\ncertified accuracy at sigma={SIGMA}, n={m:,} on all {len(everyone)} test images (l2):")
    print(summary_table(results, list(RADII)))
    plot = plot_certified_accuracy(results, os.path.join(out_dir, "denoised.png"),
                                   title=f"digits: denoised smoothing, sigma={SIGMA}, n={m:,}")
    print(f"plot: {plot}")
    return files
