"""The Monte Carlo engine: it only samples noise, runs the base classifier and counts. No bounds, no radii.

A *request* asks for k more noisy samples of one input from one random stream. The engine packs the
requests of many inputs into full forward batches (so n = 100 per input still feeds the device batches of
`batch_size`), draws every stream's noise directly on the model's device and in its dtype, and counts the
predicted classes with `torch.bincount`. Each stream is a `torch.Generator` seeded from (seed, input index,
stage), so an input's samples do not depend on which other inputs share the run, and asking a stream for more
samples later continues it (adaptive rounds, nested sample sizes).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import SmoothcertError, check

# Stage codes used when deriving a stream's seed.
SELECTION, ESTIMATION, PREDICTION = 0, 1, 2


def derive_seed(seed: int, index: int, stage: int) -> int:
    """A 63-bit seed for the stream of (run seed, input index, stage), via numpy's SeedSequence hashing."""
    state = np.random.SeedSequence([int(seed), int(index), int(stage)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def make_stream(seed: int, index: int, stage: int, device) -> torch.Generator:
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(derive_seed(seed, index, stage))
    return gen


@dataclass(frozen=True)
class Request:
    """k noisy samples of inputs[input] drawn from `stream`."""

    input: int
    stream: torch.Generator
    k: int


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Sampler:
    """Samples a base classifier under noise and counts its votes.

    Args:
        model: base classifier, inputs (b, *shape) -> logits (b, num_classes).
        noise: a noise from `smoothcert.noises`.
        num_classes: number of classes the model outputs.
        batch_size: noisy samples per forward pass (on out-of-memory the forward pass is split in halves).
        device: where noise is drawn and the model runs (defaults to the model's parameters' device).
        amp: run the forward pass under autocast (float16) on CUDA; ignored elsewhere.
    """

    def __init__(self, model: torch.nn.Module, noise, num_classes: int, batch_size: int = 1000,
                 device=None, amp: bool = False):
        check(isinstance(batch_size, int) and batch_size >= 1, f"batch size must be an integer >= 1, got {batch_size!r}")
        self.model = model
        self.noise = noise
        self.num_classes = int(num_classes)
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else model_device(model)
        self.dtype = model_dtype(model)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.forward_limit = batch_size  # lowered on out-of-memory, never raised again
        self.samples_drawn = 0

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, requests: Sequence[Request]) -> list[list[tuple[int, int]]]:
        """Split each request into blocks of at most batch_size and pack them into forward batches.

        Full blocks fill a batch alone; the partial blocks (k < batch_size) of consecutive requests share
        batches (next fit). A request's blocks run in order, so its stream is read in order. The plan depends
        only on the request sizes and batch_size.
        """
        b = self.batch_size
        full, batches = [], []
        load = b
        for r, req in enumerate(requests):
            q, rest = divmod(req.k, b)
            full.extend([(r, b)] for _ in range(q))
            if rest:
                if load + rest > b:
                    batches.append([])
                    load = 0
                batches[-1].append((r, rest))
                load += rest
        return full + batches

    # -- running ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def counts(self, inputs: torch.Tensor, requests: Sequence[Request],
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Class counts, shape (len(requests), num_classes), of the base classifier's votes."""
        inputs = inputs.to(self.device, self.dtype)
        K = self.num_classes
        total = torch.zeros(len(requests) * K, dtype=torch.int64, device=self.device)
        buf = torch.empty((self.batch_size, *inputs.shape[1:]), dtype=self.dtype, device=self.device)
        for batch in self.plan(requests):
            size = sum(k for _, k in batch)
            x = buf[:size]
            slots = torch.empty(size, dtype=torch.int64, device=self.device)
            o = 0
            for r, k in batch:
                req = requests[r]
                self.noise.sample(x[o:o + k], req.stream).add_(inputs[req.input])
                slots[o:o + k] = r
                o += k
            pred = self.predict_classes(x)
            total += torch.bincount(slots * K + pred, minlength=len(requests) * K)
            self.samples_drawn += size
            if on_batch is not None:
                on_batch(size)
        return total.view(len(requests), K).cpu().numpy()

    def predict_classes(self, x: torch.Tensor) -> torch.Tensor:
        """Base classifier's class for each row of x; the forward pass is split on out-of-memory."""
        out = []
        start = 0
        while start < x.shape[0]:
            chunk = x[start:start + self.forward_limit]
            try:
                logits = self.logits(chunk)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc) or self.forward_limit == 1:
                    raise
                self.forward_limit = max(1, self.forward_limit // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            out.append(logits.argmax(dim=1))
            start += chunk.shape[0]
        return out[0] if len(out) == 1 else torch.cat(out)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with ctx:
            logits = self.model(x)
        check_logits(logits, x.shape[0], self.num_classes)
        return logits


def check_logits(logits, batch: int, num_classes: int | None = None) -> None:
    """The model must return finite (batch, classes) logits."""
    if not isinstance(logits, torch.Tensor):
        raise SmoothcertError(f"the model must return a tensor of logits, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[0] != batch:
        raise SmoothcertError(
            f"the model must output (batch, classes) logits; for a batch of {batch} it gave shape {tuple(logits.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise SmoothcertError(f"the model output {logits.shape[1]} classes, expected {num_classes}")
    if not bool(torch.isfinite(logits).all()):
        raise SmoothcertError("the model output non-finite logits (NaN or inf)")


def probe_model(model, x: torch.Tensor, num_classes: int | None = None) -> int:
    """Run the model on a few inputs, check its logits, and return its number of classes."""
    with torch.inference_mode():
        try:
            logits = model(x)
        except Exception as exc:  # the model rejected the input: say so in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SmoothcertError(f"the model cannot take inputs of shape {tuple(x.shape[1:])}: {first}") from exc
    check_logits(logits, x.shape[0], num_classes)
    return int(logits.shape[1])


def model_device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32
