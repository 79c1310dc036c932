"""The built-in end-to-end job on scikit-learn's handwritten digits (shipped with scikit-learn, no download):
train a small CNN under Gaussian noise at sigma = 0.25 and 0.5 and under Laplace noise of the same variance as
sigma = 0.25, certify the whole test split, re-certify the stored counts with every other certificate, and print
l2 and l1 certified-accuracy tables with the ACR, and plots; then sample efficiency: the sigma = 0.25 run at
several n from one nested pass beside the predicted values, and early stopping at target radii; then soft
scores: soft certificates against hard votes, and certified confidence (CDF against baseline); then denoised
smoothing (demo_denoised.py). The l1 table also has uniform noise of that variance (lam = sqrt(3) sigma).
Running it again reuses the models and resumes."""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from ..analysis import (
    load_results,
    plot_certified_accuracy,
    summary_table,
)
from ..data import load_data
from ..device import resolve_device
from ..models import build, load_model, save_model
from ..noises import Gaussian, Laplace, Uniform
from ..smooth import Smooth
from ..train import accuracy, train
from .datasets import certify_dataset, confidence_dataset, nested_paths
from .demo_denoised import denoised_section
from .recertification import recertify

SIGMAS = (0.25, 0.5)
L2_CERTIFICATES = ("margin", "best")      # recomputed from the sigma = 0.25 run's counts (exact-margin: ~0.1 s an input)
L1_CERTIFICATES = ("teng-binary", "lecuyer")              # recomputed from the Laplace run's counts
UNIFORM_CERTIFICATES = ("yang",)                          # recomputed from the uniform run's counts (yang-margin)
RADII = [0.0, 0.25, 0.5, 0.75, 1.0]
NESTED = (100, 1000)                      # the first sigma is also certified at these n, in the same pass
EFFICIENCY_RADII = (0.25, 0.5)
TARGET_RADII = (0.25, 0.5)                # early stopping: certified at r0?
CONFIDENCE_THRESHOLDS = (0.5, 0.8)        # certified confidence: expected score of the predicted class above c


def _smooth(model, noise, device, data) -> Smooth:
    """The demo certifies on the command line's default path: Gaussian noise drawn float-soundly on the data's grid
    (digits: k/16; smoothcert.noises.sound); other noises as they are. Training stays on plain noise."""
    return Smooth(model, noise, device=device, input_grid=data.grid if noise.name == "gaussian" else None)


def _model(out_dir, tag, noise, train_set, test_set, epochs, seed, device):
    """Train (or reuse) the digits CNN under `noise`; print its accuracy."""
    path = os.path.join(out_dir, f"digits_cnn_{tag}.pt2")
    if os.path.exists(path):
        model = load_model(path, device=device)
        print(f"\n{noise.describe()}: reusing {path}")
    else:
        print(f"\n{noise.describe()}: training digits-cnn for {epochs} epochs under this noise")
        torch.manual_seed(seed)
        model = build("digits-cnn").to(device)
        train(model, train_set.x, train_set.y, noise, epochs=epochs, seed=seed)
        save_model(model, path, train_set.x[:2])
        model = model.to(device)
    print(f"  base classifier accuracy on the test split: clean {accuracy(model, test_set.x, test_set.y):.3f}, "
          f"under noise {accuracy(model, test_set.x, test_set.y, noise, seed):.3f}")
    return model


def run_demo(out_dir: str = "demo_out", n0: int = 100, n: int = 10_000, alpha: float = 0.001, epochs: int = 40,
             seed: int = 0, device: str = "auto", progress: bool = True) -> list[str]:
    """Run the demo; return the results files it wrote."""
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    device = resolve_device(device)
    train_set, test_set = load_data("digits", "train"), load_data("digits", "test")
    everyone = list(range(len(test_set)))
    print(f"digits: {len(train_set)} training and {len(test_set)} test images of 8x8 pixels in [0, 1]; device {device}")

    def certify(noise, model, tag, ns=(n,)):
        out = os.path.join(out_dir, f"certify_{tag}.tsv")
        outs = nested_paths(out, ns) if len(ns) > 1 else [out]
        print(f"  certifying {len(test_set)} test images: n0={n0}, n={','.join(map(str, ns))}, alpha={alpha} -> "
              f"{', '.join(outs)}")
        certify_dataset(_smooth(model, noise, device, test_set), test_set, everyone, out, n0=n0, n=list(ns),
                        alpha=alpha, batch_size=1000, seed=seed, progress=progress)
        return outs                                      # one file per n, the largest n last

    models = {s: _model(out_dir, f"sigma{s}", Gaussian(s), train_set, test_set, epochs, seed, device) for s in SIGMAS}
    nested = [m for m in NESTED if m < n] + [n]          # one pass gives the first sigma's run at every n
    runs = [certify(Gaussian(s), models[s], f"sigma{s}", nested if s == SIGMAS[0] else (n,)) for s in SIGMAS]
    gaussian = [files[-1] for files in runs]
    laplace_noise = Laplace.matching(SIGMAS[0])
    tag = f"laplace{laplace_noise.lam:.4g}"
    laplace, = certify(laplace_noise, _model(out_dir, tag, laplace_noise, train_set, test_set, epochs, seed, device),
                       tag)
    uniform_noise = Uniform.matching(SIGMAS[0])           # lam = sqrt(3) sigma: the variance of Gaussian sigma
    tag = f"uniform{uniform_noise.lam:.4g}"
    uniform, = certify(uniform_noise, _model(out_dir, tag, uniform_noise, train_set, test_set, epochs, seed, device),
                       tag)

    def again(path, name):
        out = path.replace(".tsv", f"_{name}.tsv")
        recertify(path, name, out, overwrite=True)
        return out

    l2 = gaussian + [again(gaussian[0], name) for name in L2_CERTIFICATES]
    l1 = [laplace] + [again(laplace, name) for name in L1_CERTIFICATES] + [uniform] \
        + [again(uniform, name) for name in UNIFORM_CERTIFICATES] + [again(gaussian[0], "gaussian-l1")]
    for title, files, norm in ((f"l2 (Gaussian smoothing; {', '.join(L2_CERTIFICATES)} recomputed from the "
                                f"sigma={SIGMAS[0]} samples)", l2, "l2"),
                               (f"l1 (Laplace smoothing at lam = sigma/sqrt(2) = {laplace_noise.lam:.4g} and uniform "
                                f"at lam = sqrt(3) sigma = {uniform_noise.lam:.4g}, same variance as sigma={SIGMAS[0]}; "
                                "against Gaussian l2 radii read as l1; uniform certifies nothing past its lam)", l1,
                                "l1")):
        results = [load_results(path) for path in files]
        print(f"\ncertified accuracy on the digits test split, {title}:")
        print(summary_table(results, RADII))
        plot = plot_certified_accuracy(results, os.path.join(out_dir, f"certified_accuracy_{norm}.png"),
                                       title=f"digits: certified accuracy, {norm} radius")
        print(f"plot: {plot}")
    efficiency = _sample_efficiency(out_dir, models[SIGMAS[0]], test_set, everyone, runs[0], n0, n, alpha, seed,
                                    device, progress)
    scores = _soft_scores(out_dir, models[SIGMAS[0]], test_set, everyone, gaussian[0], n0, n, alpha, seed, device,
                          progress)
    denoised = denoised_section(out_dir, train_set, test_set, everyone, dict(zip(nested, runs[0])), n0, n, alpha,
                                epochs, seed, device, progress)
    files = l2 + l1 + efficiency + scores + denoised
    print(f"\nresults: {', '.join(files)}\ndone in {time.perf_counter() - t0:.0f}s")
    return files


def _soft_scores(out_dir, model, test_set, everyone, hard, n0, n, alpha, seed, device, progress):
    """Soft scores on the sigma = 0.25 model: hard votes against soft certificates on the same inputs, and
    certified confidence (001) at two thresholds, CDF against baseline."""
    from ..analysis import confidence_table, load_confidence, plot_confidence
    noise = Gaussian(SIGMAS[0])
    soft = os.path.join(out_dir, f"certify_sigma{SIGMAS[0]}_soft-bernstein.tsv")
    print(f"\nsoft scores (sigma={SIGMAS[0]}): the smoothed soft classifier (expected softmax), n0={n0}, n={n} -> {soft}")
    certify_dataset(_smooth(model, noise, device, test_set), test_set, everyone, soft, n0=n0, n=n, alpha=alpha,
                    batch_size=1000, seed=seed, certificate="soft-bernstein", progress=progress)
    hoeffding = soft.replace("soft-bernstein", "soft-hoeffding")
    recertify(soft, "soft-hoeffding", hoeffding, overwrite=True)
    print(summary_table([load_results(path) for path in (hard, soft, hoeffding)], RADII))
    conf = os.path.join(out_dir, f"confidence_sigma{SIGMAS[0]}.tsv")
    print(f"\ncertified confidence (Kumar et al. 2020), score of the predicted class above c = "
          f"{', '.join(map(str, CONFIDENCE_THRESHOLDS))}: n={n} -> {conf}")
    confidence_dataset(_smooth(model, noise, device, test_set), test_set, everyone, conf, n0=n0, n=n, alpha=alpha,
                       thresholds=CONFIDENCE_THRESHOLDS, batch_size=1000, seed=seed, progress=progress)
    res = load_confidence(conf)
    print(confidence_table([res], RADII))
    for j, c in enumerate(res.thresholds):
        ok = res.correct == 1
        gain = float(np.mean(res.cdf[ok, j] - res.baseline[ok, j]))
        wins = float(np.mean(res.cdf[ok, j] > res.baseline[ok, j]))
        print(f"  c = {c:g}: the CDF certificate {'beats' if gain > 0 else 'does not beat'} the baseline (average "
              f"radius {gain:+.4f} over correct inputs; larger for {100 * wins:.0f}% of them)")
    plot = plot_confidence([res], os.path.join(out_dir, "certified_confidence.png"),
                           title=f"digits: certified confidence, sigma={SIGMAS[0]}")
    print(f"plot: {plot}")
    return [soft, hoeffding, conf]


def _sample_efficiency(out_dir, model, test_set, everyone, nested, n0, n, alpha, seed, device, progress):
    """The digits model at sigma = 0.25: the nested-n table (`nested`: its files, the largest n last) with 003's
    prediction beside it (efficiency.versus_n), and early stopping at a target radius against the fixed-n run
    (efficiency.speedup)."""
    from ..efficiency import speedup, versus_n
    noise = Gaussian(SIGMAS[0])
    runs = [load_results(path) for path in nested]
    fixed = runs[-1]
    if len(runs) > 1:
        v = versus_n(runs, EFFICIENCY_RADII)
        print(f"\nsample efficiency (sigma={SIGMAS[0]}): the runs at n = {', '.join(map(str, v.ns))} came from one "
              "nested pass; predicted = the expected value at each input's pA estimated from the largest-n run")
        print(f"{'n':>7}  {'ACR':>6}  {'predicted':>9}  "
              + "  ".join(f"{f'r={r:g}':>6}  {'pred':>5}" for r in v.radii))
        p = v.prediction                                  # None beyond planning.MAX_N: blank columns
        for j, m in enumerate(v.ns):
            print(f"{m:>7}  {v.acr[j]:>6.3f}  {'' if p is None else f'{p.acr[j]:.3f}':>9}  " + "  ".join(
                f"{100 * a:>6.1f}  {'' if p is None else f'{100 * b:.1f}':>5}"
                for a, b in zip(v.certified_accuracy[j], [None] * len(v.radii) if p is None else
                                p.certified_accuracy[j])))
    else:
        print(f"\nsample efficiency (sigma={SIGMAS[0]}): one n ({n}), so no table against n (give --n above "
              f"{NESTED[0]})")
    outs = []
    for r0 in TARGET_RADII:
        out = os.path.join(out_dir, f"certify_sigma{SIGMAS[0]}_target{r0:g}.tsv")
        certify_dataset(_smooth(model, noise, device, test_set), test_set, everyone, out, n0=n0, n=n, alpha=alpha,
                        batch_size=1000, seed=seed, n_max=n, target_radius=r0, progress=progress)
        res = load_results(out)
        s = speedup(res, fixed)
        print(f"early stopping at r0 = {r0:g} (n_max = {n}): certified accuracy at r0 "
              f"{100 * s.certified_accuracy[0]:.1f}% (fixed n = {n}: {100 * s.certified_accuracy_fixed[0]:.1f}%), "
              f"{s.mean_samples:,.0f} estimation samples an input on average (median {np.median(res.samples):,.0f}): "
              f"{s.speedup_estimation:.0f}x fewer -> {out}")
        outs.append(out)
    return outs
