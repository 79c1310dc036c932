"""The Monte Carlo engine: it only samples noise, runs the base classifier and accumulates statistics. No bounds,
no radii.

A *request* asks for k more noisy samples of one input from one random stream (streams.py). The engine lays the
requests' samples out back to back (request after request) and cuts them into full forward batches, so n = 100
per input still feeds the device batches of `batch_size`; it draws every stream's noise on the model's device and
feeds each batch's logits to statistics (statistics.py: votes counted with `torch.bincount`, soft scores, ...).
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np
import torch

from ..device import AMP_DTYPES, NonFiniteLogits, _is_oom, check_logits, model_device, model_dtype
from ..errors import MAX_COUNT, SmoothcertError, check, first_line
from .statistics import Statistic, Votes
from .streams import PIECE, Request, Stream

MIN_FORWARD = 32       # a last, part-filled batch is padded to this many rows: CPU kernels switch to other code
                       # paths (other rounding) for tiny batches, which would make a row's logits depend on them


class Sampler:
    """Samples a base classifier under noise and accumulates statistics of its outputs.

    Args:
        model: base classifier, inputs (b, *shape) -> logits (b, num_classes).
        noise: a noise from `smoothcert.noises`.
        num_classes: number of classes the model outputs.
        batch_size: noisy samples per forward pass (on out-of-memory the forward pass is split in halves).
        device: where noise is drawn and the model runs (defaults to the model's parameters' device).
        amp: None, or 'fp16' / 'bf16': run the forward pass under autocast to that dtype on the device.
        dtype: the model's floating dtype (found from its parameters when None).
    """

    def __init__(self, model: torch.nn.Module, noise, num_classes: int, batch_size: int = 1000,
                 device=None, amp: str | None = None, dtype: torch.dtype | None = None):
        check(isinstance(batch_size, int) and batch_size >= 1, f"batch size must be an integer >= 1, got {batch_size!r}")
        check(amp in (None, *AMP_DTYPES), f"amp must be None, 'fp16' or 'bf16', got {amp!r}")
        self.model = model
        self.noise = noise
        self.num_classes = int(num_classes)
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else model_device(model)
        self.dtype = dtype or model_dtype(model)
        # noise is drawn and added to x in float32 or wider, and only the noisy input is cast to the model's
        # dtype: rounding x itself to float16 / bfloat16 would move the centre of the certified ball
        self.noise_dtype = torch.promote_types(self.dtype, torch.float32)
        self.amp = amp
        self.forward_limit = batch_size  # lowered on out-of-memory, never raised again
        self.samples_drawn = 0
        self._batch = self._scratch = None
        self._lock = threading.Lock()

    # -- running ----------------------------------------------------------------------------------
    def counts(self, inputs: torch.Tensor, requests: Sequence[Request],
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Class counts, shape (len(requests), num_classes), of the base classifier's votes."""
        (votes,) = self.run(inputs, requests, [Votes()], on_batch)
        return votes

    def run(self, inputs: torch.Tensor, requests: Sequence[Request], statistics: Sequence["Statistic"],
            on_batch: Callable[[int], None] | None = None) -> list:
        """Draw every request's samples, run the model, and feed each batch's logits to every statistic; return
        their results. A statistic sees, per batch, the logits, the request of every row (`owner`) and, if it
        asks for it, each row's position in its request (`position`: 0, 1, ... from the request's first sample).
        One call at a time per Sampler (a lock): its batch buffers are shared by the calls."""
        with self._lock:
            return self._run(inputs, requests, statistics, on_batch)

    @torch.inference_mode()
    def _run(self, inputs, requests, statistics, on_batch) -> list:
        if inputs.device != self.device or inputs.dtype != self.noise_dtype:
            inputs = inputs.to(self.device, self.noise_dtype)
        if hasattr(self.noise, "encode"):     # float-sound noise (smoothcert.noises.sound): inputs to exact grid units
            inputs = self.noise.encode(inputs)
        streams = [r.stream if isinstance(r.stream, Stream) else Stream(r.stream) for r in requests]
        sizes = [int(r.k) for r in requests]
        check(min(sizes, default=0) >= 0, "a request cannot ask for a negative number of samples")
        check(sum(sizes) <= MAX_COUNT, f"one call asks for {sum(sizes):,} samples, more than {MAX_COUNT:,}")
        # requests lie back to back, each counted from 0: a batch's rows find theirs among the ends (memory per
        # request, not per sample, whatever n is)
        ends = torch.from_numpy(np.cumsum(sizes, dtype=np.int64)).to(self.device)
        firsts = (ends - torch.tensor(sizes, dtype=torch.int64, device=self.device)
                  if any(st.needs_position for st in statistics) else None)
        for st in statistics:
            st.start(len(requests), self.num_classes, self.device)
        B = self.batch_size
        batch = self._buffer(inputs.shape[1:])
        fill = done = 0

        def flush():
            nonlocal fill, done
            pad = min(B, MIN_FORWARD)
            if fill < pad:                        # same kernels as a full batch; the padding rows are dropped
                batch[fill:pad].copy_(batch[fill - 1:fill].expand(pad - fill, *batch.shape[1:]))
            index = torch.arange(done, done + fill, device=self.device)
            owner = torch.searchsorted(ends, index, right=True)
            try:
                logits = self.forward(batch[:max(fill, pad)])[:fill]
            except NonFiniteLogits as exc:        # the row's input, by its position in `inputs`
                raise NonFiniteLogits(str(exc), requests[int(owner[min(exc.row, fill - 1)])].input) from None
            for st in statistics:
                st.update(logits, owner, None if firsts is None else index - firsts[owner])
            done += fill
            self.samples_drawn += fill
            if on_batch is not None:
                on_batch(fill)
            fill = 0

        def put(noise: torch.Tensor, x: torch.Tensor):
            """Noisy inputs x + noise into the batch, flushing full batches."""
            nonlocal fill
            used = 0
            while used < len(noise):
                take = min(B - fill, len(noise) - used)
                torch.add(noise[used:used + take], x, out=batch[fill:fill + take])
                fill += take
                used += take
                if fill == B:
                    flush()

        for req, stream in zip(requests, streams):
            x, need = inputs[req.input], req.k
            if stream.leftover is not None and need:
                take = min(need, len(stream.leftover))
                put(stream.leftover[:take], x)
                stream.leftover = stream.leftover[take:] if take < len(stream.leftover) else None
                need -= take
            while need > 0:
                if need >= PIECE and fill + PIECE <= B:     # a whole piece that fits: draw it in place
                    self.noise.sample(batch[fill:fill + PIECE], stream.generator).add_(x)
                    fill += PIECE
                    need -= PIECE
                    if fill == B:
                        flush()
                    continue
                piece = self.noise.sample(self._piece(inputs.shape[1:]), stream.generator)
                take = min(need, PIECE)
                put(piece[:take], x)
                if take < PIECE:                  # the rest of the piece belongs to the stream's next samples
                    stream.leftover = piece[take:].clone()
                need -= take
        if fill:
            flush()
        return [st.result() for st in statistics]

    def _buffer(self, shape) -> torch.Tensor:
        """The forward batch, allocated once per input shape and reused."""
        if self._batch is None or self._batch.shape[1:] != tuple(shape):
            self._batch = torch.empty((self.batch_size, *shape), dtype=self.noise_dtype, device=self.device)
        return self._batch

    def _piece(self, shape) -> torch.Tensor:
        """Scratch space for one piece of noise that does not go straight into the batch."""
        if self._scratch is None or self._scratch.shape[1:] != tuple(shape):
            self._scratch = torch.empty((PIECE, *shape), dtype=self.noise_dtype, device=self.device)
        return self._scratch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for the rows of x; the forward pass is split on out-of-memory."""
        out = []
        start = 0
        while start < x.shape[0]:
            chunk = x[start:start + self.forward_limit]
            try:
                logits = self.logits(chunk)
            except NonFiniteLogits as exc:
                raise NonFiniteLogits(str(exc), start + exc.row) from None
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc) or self.forward_limit == 1:
                    raise
                self.forward_limit = max(1, self.forward_limit // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            out.append(logits)
            start += chunk.shape[0]
        return out[0] if len(out) == 1 else torch.cat(out)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.noise, "decode"):     # float-sound: grid units -> model input, part of the base classifier
            x = self.noise.decode(x)
        if x.dtype != self.dtype:
            x = x.to(self.dtype)                    # the cast is part of the base classifier: sound
        try:
            if self.amp:
                with torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp]):
                    logits = self.model(x)
            else:
                logits = self.model(x)
        except Exception as exc:          # out of memory goes on to `forward`; the model's own error: one line
            if isinstance(exc, SmoothcertError) or _is_oom(exc):
                raise
            raise SmoothcertError(f"the model raised {type(exc).__name__} on noisy samples: "
                                  f"{first_line(exc, '(no message)')}") from exc
        check_logits(logits, x.shape[0], self.num_classes)
        return logits


class NamedSampler:
    """A Sampler as one group of inputs uses it (`modes.common.groups`): non-finite logits are blamed on the input by its
    index in `names` (the data set's), not by its position in the group."""

    def __init__(self, sampler: Sampler, names: Sequence[int]):
        self.sampler, self.names, self.device = sampler, names, sampler.device

    def run(self, inputs, requests, statistics, on_batch=None) -> list:
        try:
            return self.sampler.run(inputs, requests, statistics, on_batch)
        except NonFiniteLogits as exc:
            raise NonFiniteLogits(f"input {self.names[exc.row]}: {exc}", self.names[exc.row]) from None

    counts = Sampler.counts
