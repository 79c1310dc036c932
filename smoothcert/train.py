"""Training base classifiers under the noise they will be smoothed with (Cohen et al. 2019, §4: Gaussian
data augmentation), or without noise (an ordinary classifier, for a denoiser to go in front of), with explicit
randomness: the same seed gives the same model on the same machine."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import check, check_count
from .models import eval_mode
from .device import model_device, probe_model


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    loss: float
    train_accuracy: float     # on noisy training inputs (clean ones when trained without noise)
    seconds: float


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise, *, epochs: int = 30, batch_size: int = 64,
          lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0, adversarial_step: float = 0.0,
          on_epoch: Callable[[EpochLog], None] | None = None) -> nn.Module:
    """Train `model` on (x, y) with every input perturbed by fresh `noise` at every step (Adam, cosine schedule).

    Args:
        model: the base classifier (its first layer should normalise; noise is added before it).
        x, y: training inputs (N, *shape) and integer labels (N,).
        noise: the smoothing noise, e.g. Gaussian(0.25); training and certifying should use the same one. None
            trains on the clean inputs (an ordinary classifier: certify it behind a denoiser, smoothcert.denoise).
        epochs, batch_size, lr, weight_decay: optimisation settings.
        seed: seeds the shuffling and the noise.
        adversarial_step: > 0 trains on adversarial noise samples (Teng et al. §5.1 Type 2, after Salman et al.
            2019): noisy input + adversarial_step * sign(grad_x loss), the gradient taken at the noisy input.
    """
    import time

    check_count("epochs", epochs)
    check_count("batch size", batch_size)
    check(0 < lr < math.inf, f"learning rate must be a finite number > 0, got {lr}")
    check(len(x) == len(y) and len(x) > 0, "training data is empty or x and y differ in length")
    check(0 <= adversarial_step < math.inf, f"adversarial step must be a finite number >= 0, got {adversarial_step}")
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    probe_model(model, x[:2])
    gen = torch.Generator(device=device).manual_seed(seed)
    shuffle_gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout and the like, if the model has any
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        t0, total, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        for idx in torch.randperm(len(x), generator=shuffle_gen).split(batch_size):
            xb, yb = x[idx.to(device)], y[idx.to(device)]
            noisy = xb if noise is None else xb + noise.sample(torch.empty_like(xb), gen)
            if adversarial_step > 0:
                noisy = noisy + adversarial_step * _loss_gradient_sign(model, loss_fn, noisy, yb)
            logits = model(noisy)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            loss_sum += loss.item() * len(yb)
        if on_epoch is not None:
            on_epoch(EpochLog(epoch, loss_sum / total, correct / total, time.perf_counter() - t0))
    return model.eval()


def _loss_gradient_sign(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign(grad_x loss(model(x), y)), computed without touching the model's gradients."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(x), y), x)
    return grad.sign()


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise=None, seed: int = 0,
             batch_size: int = 1000) -> float:
    """Accuracy of the base classifier on (x, y), with one draw of `noise` per input when given."""
    eval_mode(model)
    device = model_device(model)
    gen = torch.Generator(device=device).manual_seed(seed)
    correct = 0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        if noise is not None:
            xb = xb + noise.sample(torch.empty_like(xb), gen)
        correct += int((model(xb).argmax(1) == y[start:start + batch_size].to(device)).sum())
    return correct / len(x)
