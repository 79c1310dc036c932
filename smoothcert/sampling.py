"""The Monte Carlo engine: it only samples noise, runs the base classifier and accumulates statistics. No bounds,
no radii.

A *request* asks for k more noisy samples of one input from one random stream. The engine lays the requests'
samples out back to back (request after request) and cuts them into full forward batches, so n = 100 per input
still feeds the device batches of `batch_size`; it draws every stream's noise on the model's device and feeds each
batch's logits to statistics (votes counted with `torch.bincount`, soft scores, ...). Each stream is a
`torch.Generator` seeded from (seed, input index, stage) and always read in pieces of PIECE samples, so its first
k samples are the same however many are read in all, in however many requests, whatever shares the run: nested
sample sizes, input-specific n and adaptive rounds all read one stream.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import MAX_COUNT, SmoothcertError, check, first_line

# Stage codes used when deriving a stream's seed.
SELECTION, ESTIMATION, PREDICTION = 0, 1, 2

PIECE = 100            # a stream is drawn in pieces of this many samples (a fixed size: see Stream)
MIN_FORWARD = 32       # a last, part-filled batch is padded to this many rows: CPU kernels switch to other code
                       # paths (other rounding) for tiny batches, which would make a row's logits depend on them

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """The SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective, well-mixing hash of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, index: int, stage: int) -> int:
    """A 63-bit seed for the stream of (run seed, input index, stage): SplitMix64 chained over the three (about
    1 µs, where numpy's SeedSequence takes 17 µs, per stream; streams are made per input and stage).

    torch's CPU generator keeps only the low 32 bits of a seed, so two inputs' streams coincide with probability
    2^-32 a pair (about 5 % somewhere among 20,000 streams): that correlates two inputs, but each certificate keeps
    its guarantee, since an input's own selection and estimation streams still differ (or, with probability
    2^-32, coincide). The guarantee also asks that the seed be chosen without regard to the inputs: fixed seeds
    are for reproducible evaluation; a deployment facing an adaptive adversary should draw a fresh secret seed."""
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ (int(index) & _MASK64))
    return _splitmix64(h ^ int(stage)) >> 1


class Stream:
    """The noise of one input and stage. Noise is drawn from the generator in pieces of exactly PIECE samples
    (torch's samplers give other values for the same generator when a draw has another size), and the unused
    end of a piece is kept for the next request, so sample j of the stream is the same however it is read."""

    __slots__ = ("generator", "leftover")

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.leftover: torch.Tensor | None = None     # noise already drawn, not yet used


def make_stream(seed: int, index: int, stage: int, device) -> Stream:
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(derive_seed(seed, index, stage))
    return Stream(gen)


@dataclass(frozen=True)
class Request:
    """k more noisy samples of inputs[input] from `stream` (a Stream, or a bare torch.Generator read afresh)."""

    input: int
    stream: Stream | torch.Generator
    k: int


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()      # CUDA: "out of memory"; the CPU allocator: "can't allocate memory"
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


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
        if hasattr(self.noise, "encode"):     # float-sound noise (smoothcert.sound): inputs to exact grid units
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


class Statistic:
    """What the engine accumulates per request from each batch of logits. Subclasses: Votes (hard-vote class
    counts, what every certificate here reads) and ScoreSums (soft scores). Set needs_position to receive
    each sample's position in its request, e.g. to read one nested stream at several n."""

    needs_position = False

    def start(self, requests: int, num_classes: int, device) -> None:
        raise NotImplementedError

    def update(self, logits: torch.Tensor, owner: torch.Tensor, position: torch.Tensor | None) -> None:
        raise NotImplementedError

    def result(self):
        raise NotImplementedError


class Votes(Statistic):
    """Class counts (requests, classes) of the argmax votes, tallied with one bincount per batch."""

    def start(self, requests, num_classes, device):
        self.shape = (requests, num_classes)
        self.total = torch.zeros(requests * num_classes, dtype=torch.int64, device=device)

    def update(self, logits, owner, position):
        key = logits.argmax(dim=1).add_(owner, alpha=self.shape[1])     # request * classes + class
        self.total.add_(torch.bincount(key, minlength=self.total.numel()))

    def result(self) -> np.ndarray:
        return self.total.view(self.shape).cpu().numpy()


class NestedVotes(Statistic):
    """Class counts of the first n_1 < n_2 < ... samples of each request's stream, shape (requests, levels,
    classes), from one pass: a sample at position p of its request counts for every level n_j > p (one bincount per batch
    over (request, first level it counts for, class), then a cumulative sum over levels)."""

    needs_position = True

    def __init__(self, levels: Sequence[int]):
        self.levels = torch.tensor(sorted(int(n) for n in levels), dtype=torch.int64)

    def start(self, requests, num_classes, device):
        self.shape = (requests, len(self.levels) + 1, num_classes)   # + a level for samples past the largest
        self.total = torch.zeros(math.prod(self.shape), dtype=torch.int64, device=device)
        self.edges = self.levels.to(device)

    def update(self, logits, owner, position):
        level = torch.searchsorted(self.edges, position, right=True)     # number of levels n_j <= p
        key = (owner * self.shape[1] + level) * self.shape[2] + logits.argmax(dim=1)
        self.total.add_(torch.bincount(key, minlength=self.total.numel()))

    def result(self) -> np.ndarray:
        return self.total.view(self.shape).cumsum(dim=1)[:, :-1].cpu().numpy()


class ScoreSums(Statistic):
    """Per request and class, the sum and the sum of squares of the softmax scores (float64): what Hoeffding and
    empirical-Bernstein bounds on soft (continuous) smoothing read (Moutaouakil §3.3.2)."""

    def start(self, requests, num_classes, device):
        self.sums = torch.zeros((requests, num_classes), dtype=torch.float64, device=device)
        self.squares = torch.zeros_like(self.sums)

    def update(self, logits, owner, position):
        scores = torch.softmax(logits.double(), dim=1)
        self.sums.index_add_(0, owner, scores)
        self.squares.index_add_(0, owner, scores * scores)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sums.cpu().numpy(), self.squares.cpu().numpy()


class MeasureHistogram(Statistic):
    """For certified confidence (001): per request, the histogram on fixed bins (chosen before sampling:
    confidence.histogram_edges) of one scalar per sample, the softmax score of the request's class ('score') or
    its margin over the best other class ('margin'), and the exact sum of that scalar (float64)."""

    def __init__(self, classes: Sequence[int], measure: str, bins: int):
        self.classes, self.measure, self.bins = torch.as_tensor(list(classes), dtype=torch.int64), measure, bins

    def start(self, requests, num_classes, device):
        from .confidence import bin_index
        self._bin = bin_index
        self.counts = torch.zeros(requests * self.bins, dtype=torch.int64, device=device)
        self.sums = torch.zeros(requests, dtype=torch.float64, device=device)
        self.cls = self.classes.to(device)

    def update(self, logits, owner, position):
        scores = torch.softmax(logits.double(), dim=1)
        a = self.cls[owner]
        value = scores.gather(1, a[:, None])[:, 0]
        if self.measure == "margin":
            value = value - scores.scatter(1, a[:, None], -1.0).max(dim=1).values
        self.counts.add_(torch.bincount(owner * self.bins + self._bin(value, self.measure, self.bins),
                                        minlength=self.counts.numel()))
        self.sums.index_add_(0, owner, value)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.counts.view(-1, self.bins).cpu().numpy(), self.sums.cpu().numpy()


class BettingScores(Statistic):
    """For soft-betting: betting accumulators (bounds.mean.Betting) fed, per request, with the softmax score of its
    class A (a lower bound on E[F_A]) and the largest score of the other classes (an upper bound on
    E[max_{c != A} F_c] >= max_{c != A} E[F_c]), each in the order the samples arrive, with bets that depend only
    on earlier samples; the grids are fixed from the selection stage. Returns the two accumulators."""

    def __init__(self, classes: Sequence[int], n: int, alpha: float, grid_a, grid_other):
        self.classes, self.n, self.alpha = torch.as_tensor(list(classes), dtype=torch.int64), n, alpha
        self.grid_a, self.grid_other = grid_a, grid_other

    def start(self, requests, num_classes, device):
        from .bounds.mean import Betting
        self.a = Betting(requests, self.n, self.alpha, self.grid_a, device=device, sides="lower")
        self.other = Betting(requests, self.n, self.alpha, self.grid_other, device=device, sides="upper")
        self.cls = self.classes.to(device)

    def update(self, logits, owner, position):
        scores = torch.softmax(logits.double(), dim=1)
        a = self.cls[owner]
        self.a.update(scores.gather(1, a[:, None])[:, 0].clamp(0, 1), owner)
        self.other.update(scores.scatter(1, a[:, None], -1.0).max(dim=1).values.clamp(0, 1), owner)

    def result(self):
        return self.a, self.other


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


class NamedSampler:
    """A Sampler as one group of inputs uses it (`Smooth.groups`): non-finite logits are blamed on the input by its
    index in `names` (the data set's), not by its position in the group."""

    def __init__(self, sampler: Sampler, names: Sequence[int]):
        self.sampler, self.names, self.device = sampler, names, sampler.device

    def run(self, inputs, requests, statistics, on_batch=None) -> list:
        try:
            return self.sampler.run(inputs, requests, statistics, on_batch)
        except NonFiniteLogits as exc:
            raise NonFiniteLogits(f"input {self.names[exc.row]}: {exc}", self.names[exc.row]) from None

    counts = Sampler.counts


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
