"""Where and how the base classifier runs, apart from any sampling: the device and dtype (`resolve_device`,
`model_device`, `model_dtype`), the allocator (`tune_allocator`), autocast (`AMP_DTYPES`), forward batch sizes
(`auto_batch_size`, `fastest_batch_size`) and memory checks, the torch.compile check, and probing the model's
logits (`probe_model`, `check_logits`, `NonFiniteLogits`). torch only: the engine, the facade and the command line
all read it, and it reads none of them.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import SmoothcertError, check, first_line


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is the first CUDA device when there is one, else the CPU; a device this machine cannot run a model
    on is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SmoothcertError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    check(device.type in ("cpu", "cuda", "mps"), f"device {name!r} cannot run a model (use auto, cpu, cuda, cuda:N or mps)")
    if device.type == "cuda":
        check(torch.cuda.is_available(), f"device {name} asked for, but CUDA is not available on this machine")
        check(device.index is None or device.index < torch.cuda.device_count(),
              f"device {name} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps":
        check(torch.backends.mps.is_available(), f"device {name} asked for, but MPS is not available on this machine")
    return device


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the system (glibc only): a CPU forward pass
    allocates and frees its activations every batch, and the page faults of fresh memory can take half its
    time (measured 2x faster on the digits CNN). The usual advice for PyTorch on CPUs; set
    SMOOTHCERT_SYSTEM_MALLOC=1 to leave the allocator alone."""
    if os.environ.get("SMOOTHCERT_SYSTEM_MALLOC") or not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 28) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()      # CUDA: "out of memory"; the CPU allocator: "can't allocate memory"
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

CPU_CANDIDATES = (64, 128, 256, 512, 1024)


def auto_batch_size(model, input_shape, device, dtype=torch.float32, *, start: int = 256, cap: int = 32768,
                    probe: bool | None = None, candidates: Sequence[int] = CPU_CANDIDATES,
                    amp: str | None = None) -> int:
    """A forward batch size for `model`. On CUDA (or probe=True): the largest power of two from `start` up to `cap`
    whose forward pass fits in memory, halved for head-room (noise buffers, fragmentation). Elsewhere: the
    fastest per sample of `candidates`, timed on the model (`fastest_batch_size`), since on a CPU the largest
    batch is not always the fastest. Both run the forward pass under autocast to `amp` ('fp16', 'bf16') if given.
    The same seed gives the same results only with the same batch size: pass an explicit batch size where that
    matters."""
    device = torch.device(device)
    if amp:
        model = _Autocast(model, device, amp)
    if not (device.type == "cuda" if probe is None else probe):
        return fastest_batch_size(model, input_shape, device, dtype, candidates)
    fits = 0
    size = start
    with torch.inference_mode():
        while size <= cap:
            try:
                model(torch.zeros((size, *input_shape), dtype=dtype, device=device))
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                break
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            fits, size = size, size * 2
    return max(1, fits // 2) if fits else 1


class _Autocast:
    """model's forward pass under autocast (what the Sampler runs with amp)."""

    def __init__(self, model, device, amp):
        self.model, self.device, self.amp = model, device, amp

    def __call__(self, x):
        with torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp]):
            return self.model(x)


def fastest_batch_size(model, input_shape, device, dtype=torch.float32, candidates: Sequence[int] = CPU_CANDIDATES,
                       *, seconds: float = 0.1, rounds: int = 2, longest: float = 0.5, tolerance: float = 0.05) -> int:
    """The candidate batch size with the least forward time per sample, measured on the model.

    Args:
        model: the base classifier (its forward pass is what is timed).
        input_shape: shape of one input.
        device: where the model runs.
        dtype: dtype of the timed inputs.
        candidates: batch sizes to try; larger ones are skipped once one runs out of memory or a forward pass
            takes longer than `longest` seconds.
        seconds: time each candidate for about this long per round (at least one timed pass after a warm-up).
        rounds: rounds over the candidates, interleaved; each candidate's best round counts (least disturbed by
            other processes).
        longest: a candidate whose forward pass takes longer than this is the last one tried.
        tolerance: the largest candidate within this fraction of the least time per sample wins (a larger batch
            also spreads the engine's per-batch work thinner).
    """
    sizes = sorted({int(c) for c in candidates})
    check(len(sizes) > 0 and sizes[0] >= 1, f"batch size candidates must be integers >= 1, got {candidates!r}")
    gen = torch.Generator().manual_seed(0)     # realistic inputs in [0, 1], without touching the global generator
    per_sample: dict[int, float] = {}
    with torch.inference_mode():
        for size in sizes:                     # the first round also decides which sizes are tried at all
            try:
                per_sample[size] = _time_forward(model, input_shape, size, device, dtype, gen, seconds)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                if size == sizes[0]:
                    raise SmoothcertError(f"a forward pass of {size} inputs does not fit in memory on {device}; "
                                          "give a smaller batch size") from None
                break
            if per_sample[size] * size > longest:
                break
        for _ in range(rounds - 1):
            for size in per_sample:
                per_sample[size] = min(per_sample[size],
                                       _time_forward(model, input_shape, size, device, dtype, gen, seconds, False))
    best = min(per_sample.values())
    return max(size for size, t in per_sample.items() if t <= best * (1 + tolerance))


def _time_forward(model, input_shape, size, device, dtype, gen, seconds, warm_up=True) -> float:
    """Seconds per sample of the model's forward pass on `size` inputs: the fastest of the passes timed in about
    `seconds`, after an untimed warm-up pass (which pays the first allocations for this size)."""
    x = torch.rand((size, *input_shape), generator=gen).to(device, dtype)
    if warm_up:
        model(x)
    best, spent = math.inf, 0.0
    while spent < seconds or best == math.inf:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        best, spent = min(best, elapsed), spent + elapsed
    return best / size


@dataclass(frozen=True)
class CompileCheck:
    """How a compiled model (torch.compile) compares with the eager one on noisy samples of the first inputs."""

    seconds: float          # the compiled model's first forward pass, compilation included
    eager_seconds: float    # the eager model's forward pass on the same batch
    samples: int            # noisy samples compared
    disagreements: int      # samples whose predicted class differs

    def describe(self) -> str:
        agree = (f"its predictions agree with the eager model's on all {self.samples} noisy samples"
                 if not self.disagreements else f"its predictions DISAGREE with the eager model's on "
                 f"{self.disagreements} of {self.samples} noisy samples (the compiled model is the one certified)")
        return f"compiled the model in {self.seconds:.1f} s (an eager pass: {self.eager_seconds:.2f} s); {agree}"


def check_compiled(eager, compiled, xs: torch.Tensor, noise, rows: int, device, dtype=torch.float32,
                   amp: str | None = None, inputs: int = 8) -> CompileCheck:
    """Compile `compiled` by running it once and compare its predictions with `eager`'s on the same batch.

    Args:
        eager: the model as given.
        compiled: torch.compile(eager) (compiled lazily: its first call compiles it).
        xs: inputs (count, *shape); the first `inputs` of them are used.
        noise: the smoothing noise (the noisy samples are what the certificates will count).
        rows: samples in the batch; the batch size the engine runs, so the compiled graph fits its full batches.
        device: where the models run.
        dtype: the models' dtype.
        amp: None, 'fp16' or 'bf16': compare under autocast, as the engine runs.
        inputs: how many of the first inputs the noisy samples are taken around.
    """
    device = torch.device(device)
    wide = torch.promote_types(dtype, torch.float32)
    first = xs[:inputs].to(device, wide)
    encode, decode = getattr(noise, "encode", None), getattr(noise, "decode", None)   # float-sound, as the Sampler
    first = encode(first) if encode else first
    centre = first.repeat_interleave(math.ceil(rows / len(first)), dim=0)[:rows]
    gen = torch.Generator(device=device).manual_seed(0)     # not the certify streams: this check uses no seed of theirs

    def timed(model):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = (_Autocast(model, device, amp) if amp else model)(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out.argmax(dim=1), time.perf_counter() - t0

    with torch.inference_mode():
        batch = noise.sample(torch.empty_like(centre), gen).add_(centre)
        batch = (decode(batch) if decode else batch).to(dtype)
        try:
            votes, seconds = timed(compiled)
        except Exception as exc:  # a compiler error is long and multi-line; its first line names it
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SmoothcertError(f"torch.compile failed on this model ({type(exc).__name__}: {first_line}); "
                                  "run it without compiling") from exc
        reference, eager_seconds = timed(eager)
    return CompileCheck(seconds, eager_seconds, rows, int((votes != reference).sum()))


def device_memory(device) -> int | None:
    """Bytes of memory on `device` (physical memory for the CPU), or None where it cannot be told."""
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        pass
    return None


def check_batch_memory(batch_size: int, input_shape, dtype: torch.dtype, device) -> None:
    """Refuse a batch whose noisy inputs alone would not fit in the device's memory (before allocating it)."""
    need = batch_size * math.prod(input_shape) * torch.tensor([], dtype=dtype).element_size()
    have = device_memory(device)
    check(have is None or need <= have,
          f"a batch of {batch_size:,} noisy inputs of shape {tuple(input_shape)} needs {_bytes(need)}, more than the "
          f"{_bytes(have or 0)} of memory on {torch.device(device)}; use a smaller batch size")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1024


def check_logits(logits, batch: int, num_classes: int | None = None) -> None:
    """The model must return finite (batch, classes) logits."""
    if not isinstance(logits, torch.Tensor):
        raise SmoothcertError(f"the model must return a tensor of logits, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[0] != batch:
        raise SmoothcertError(
            f"the model must output (batch, classes) logits; for a batch of {batch} it gave shape {tuple(logits.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise SmoothcertError(f"the model output {logits.shape[1]} classes, expected {num_classes}")
    # a finite sum is the cheap proof that every logit is finite; a non-finite one is checked element by element
    if not bool(torch.isfinite(logits.sum())):
        finite = torch.isfinite(logits).all(dim=1)
        if not bool(finite.all()):
            raise NonFiniteLogits("the model output non-finite logits (NaN or inf)", int((~finite).nonzero()[0]))


class NonFiniteLogits(SmoothcertError):
    """check_logits' error. `row`: the first row of non-finite logits in the forward batch; raised again by a
    Sampler, the position of that row's input in the call; by a NamedSampler, its index (named in the message)."""

    def __init__(self, message: str, row: int):
        super().__init__(message)
        self.row = row
def probe_model(model, x: torch.Tensor, num_classes: int | None = None) -> int:
    """Run the model on a few inputs, check its logits, and return its number of classes."""
    with torch.inference_mode():
        try:
            logits = model(x)
        except Exception as exc:  # the model rejected the input: say so in one line
            raise SmoothcertError(f"the model cannot take inputs of shape {tuple(x.shape[1:])}: "
                                  f"{first_line(exc)}") from exc
    check_logits(logits, x.shape[0], num_classes)
    return int(logits.shape[1])


def _tensors(model) -> list[torch.Tensor]:
    """A module's parameters and buffers; none for a plain callable on batches."""
    if not isinstance(model, torch.nn.Module):
        return []
    return list(model.parameters()) + list(model.buffers())


def model_device(model: torch.nn.Module) -> torch.device:
    for t in _tensors(model):
        return t.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for t in _tensors(model):
        if t.is_floating_point():
            return t.dtype
    return torch.float32
