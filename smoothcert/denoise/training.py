"""Training a denoiser for a frozen classifier (Salman et al. 2020, §3.2): the MSE objective, the stability
objective, or MSE then stability, under the noise the composition will be smoothed with. Same conventions as
`smoothcert.train`: Adam with a cosine schedule, explicit randomness, progress through an `on_epoch` callback."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check, check_count
from ..models import eval_mode
from ..device import model_device, probe_model
from ..train import EpochLog
from .compose import probe_denoiser

OBJECTIVES = ("mse", "stability", "mse+stability")


@dataclass(frozen=True)
class DenoiserEpochLog(EpochLog):
    """An epoch of denoiser training: `loss` is the epoch's objective (mean squared error per pixel, or
    cross-entropy against the classifier's clean predictions), `train_accuracy` the classifier's accuracy on the
    denoised noisy training inputs against their labels."""

    objective: str = "mse"


def phases(objective: str, epochs: int) -> list[tuple[str, int]]:
    """The objective of each phase and its epochs: 'mse+stability' spends the first ceil(epochs / 2) epochs on
    MSE and the rest on stability (Salman et al.'s MSE-then-Stab, each phase with its own cosine schedule)."""
    check(objective in OBJECTIVES, f"unknown denoiser objective {objective!r} (choose from: {', '.join(OBJECTIVES)})")
    check_count("epochs", epochs, 2 if objective == "mse+stability" else 1)
    if objective == "mse+stability":
        first = math.ceil(epochs / 2)
        return [("mse", first), ("stability", epochs - first)]
    return [(objective, epochs)]


def train_denoiser(denoiser: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, noise, *,
                   objective: str = "mse", epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
                   weight_decay: float = 0.0, seed: int = 0,
                   on_epoch: Callable[[DenoiserEpochLog], None] | None = None) -> nn.Module:
    """Train `denoiser` so that classifier(denoiser(x + noise)) classifies well; the classifier stays frozen.

    Args:
        denoiser: maps a noisy batch to a batch of the same shape (e.g. `dncnn()`); it is trained in place.
        classifier: the base classifier behind it: put in eval mode and not updated (its parameters do not
            require gradients while training; their flags are restored after).
        x, y: training inputs (N, *shape) in the classifier's input space and integer labels (N,); the labels
            only measure progress, the stability objective's targets are the classifier's clean predictions.
        noise: the smoothing noise, e.g. Gaussian(0.25).
        objective: 'mse': E||D(x + d) - x||^2; 'stability': E[CE(f(D(x + d)), argmax f(x))] (Salman et al. 2020,
            §3.2, L_MSE and L_Stab); 'mse+stability': MSE then stability (see `phases`).
        epochs, batch_size, lr, weight_decay: optimisation settings (Adam, cosine schedule per phase).
        seed: seeds the shuffling and the noise.
        on_epoch: called after every epoch with a DenoiserEpochLog.
    """
    plan = phases(objective, epochs)
    check_count("batch size", batch_size)
    check(lr > 0, f"learning rate must be > 0, got {lr}")
    check(weight_decay >= 0, f"weight decay must be >= 0, got {weight_decay}")
    check(len(x) == len(y) and len(x) > 0, "training data is empty or x and y differ in length")
    device = model_device(denoiser)
    x, y = x.to(device), y.to(device)
    eval_mode(classifier)
    probe_model(classifier, x[:2])
    probe_denoiser(denoiser.eval(), x)       # in eval mode: a probe must not move batch-norm statistics
    frozen = [(p, p.requires_grad) for p in classifier.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        with torch.no_grad():        # the stability targets: the frozen classifier's predictions on clean inputs
            targets = torch.cat([classifier(xb).argmax(1) for xb in x.split(1024)]) if "stability" in objective else y
        gen = torch.Generator(device=device).manual_seed(seed)
        shuffle_gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout and the like, if the denoiser has any
        epoch = 0
        for phase, phase_epochs in plan:
            opt = torch.optim.Adam(denoiser.parameters(), lr=lr, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, phase_epochs * math.ceil(len(x) / batch_size))
            for _ in range(phase_epochs):
                epoch += 1
                log = _epoch(denoiser, classifier, x, y, targets, noise, phase, batch_size, opt, sched, gen,
                             shuffle_gen, epoch)
                if on_epoch is not None:
                    on_epoch(log)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return denoiser.eval()


def _epoch(denoiser, classifier, x, y, targets, noise, phase, batch_size, opt, sched, gen, shuffle_gen,
           epoch) -> DenoiserEpochLog:
    denoiser.train()
    t0, total, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
    for idx in torch.randperm(len(x), generator=shuffle_gen).split(batch_size):
        idx = idx.to(x.device)
        xb = x[idx]
        out = denoiser(xb + noise.sample(torch.empty_like(xb), gen))
        if phase == "mse":
            loss = F.mse_loss(out, xb)
            with torch.no_grad():
                logits = classifier(out)
        else:
            logits = classifier(out)
            loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += len(idx)
        correct += int((logits.argmax(1) == y[idx]).sum())
        loss_sum += loss.item() * len(idx)
    return DenoiserEpochLog(epoch, loss_sum / total, correct / total, time.perf_counter() - t0, phase)
