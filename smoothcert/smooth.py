"""CERTIFY and PREDICT of Cohen et al. 2019 (Alg. 2 of Seferis et al.), composed from the engine and a certificate.

    smoothed = Smooth(model, Gaussian(0.25))
    result = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0)
    result.prediction, result.radius            # ABSTAIN (-1) and 0.0 when it abstains
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from . import bounds, certificates
from .certificates import ABSTAIN
from .errors import check, check_alpha, check_count
from .models import eval_mode
from .sampling import (
    ESTIMATION,
    PREDICTION,
    SELECTION,
    Request,
    Sampler,
    auto_batch_size,
    check_batch_memory,
    make_stream,
    model_device,
    model_dtype,
    probe_model,
)


@dataclass(frozen=True)
class Certificate:
    """The outcome of CERTIFY for one input, with the statistics it was computed from."""

    index: int
    prediction: int            # certified class, ABSTAIN (-1) when it abstains
    radius: float              # certified radius (0.0 when it abstains; never negative)
    p_lower: float             # lower confidence bound on the top class's probability (nan if not used)
    p_upper: float             # upper bound on the runner-up's probability (nan if not used)
    counts_selection: np.ndarray   # class counts of the n0 selection samples
    counts: np.ndarray             # class counts of the n estimation samples
    alpha: float
    certificate: str
    norm: str
    seconds: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass(frozen=True)
class Prediction:
    """The outcome of PREDICT for one input."""

    index: int
    prediction: int            # ABSTAIN (-1) when the binomial test does not reject a tie
    pvalue: float              # two-sided binomial test of the top two counts
    counts: np.ndarray
    alpha: float
    seconds: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


class Smooth:
    """A smoothed classifier g(x) = argmax_c P(f(x + noise) = c) over a base classifier f.

    Args:
        model: base classifier, (batch, *input_shape) -> (batch, num_classes) logits, in eval mode.
        noise: e.g. `Gaussian(sigma)`, added in the model's input space (before normalisation).
        num_classes: number of classes; found from a forward pass when None.
        device: where noise is drawn and the model runs (default: the model's device).
        amp: mixed-precision forward passes on CUDA.
    """

    def __init__(self, model: torch.nn.Module, noise, num_classes: int | None = None, device=None,
                 amp: bool = False):
        self.model = eval_mode(model)
        self.noise = noise
        self.num_classes = num_classes
        self.device = device
        self.amp = amp

    # -- public API -------------------------------------------------------------------------------
    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = 1000, *,
                seed: int = 0, index: int = 0, generator: torch.Generator | None = None,
                certificate: str | None = None, norm: str | None = None) -> Certificate:
        """CERTIFY one input.

        Args:
            x: one input, shape input_shape (no batch dimension).
            n0: selection samples that pick the top class.
            n: fresh estimation samples that bound its probability.
            alpha: the certificate is wrong with probability at most alpha.
            batch_size: noisy samples per forward pass; None chooses one (on CUDA, the largest that fits).
            seed, index: the input's streams are derived from (seed, index), as in `certify_many`.
            generator: use this one generator for both stages instead of derived streams.
            certificate: name of a certificate in `smoothcert.certificates` (default: the noise's own).
            norm: the norm of the radius (default: the certificate's).
        """
        return next(self.certify_many(x.unsqueeze(0), n0, n, alpha, batch_size, seed=seed, indices=[index],
                                      generator=generator, certificate=certificate, norm=norm))

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = 1000, *, seed: int = 0,
                index: int = 0, generator: torch.Generator | None = None) -> Prediction:
        """PREDICT one input: top two counts of n samples, abstain unless a binomial test rejects a tie at alpha."""
        return next(self.predict_many(x.unsqueeze(0), n, alpha, batch_size, seed=seed, indices=[index],
                                      generator=generator))

    def certify_many(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = 1000, *,
                     seed: int = 0, indices: Sequence[int] | None = None, generator: torch.Generator | None = None,
                     certificate: str | None = None, norm: str | None = None, skip: Callable[[int], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """CERTIFY many inputs, yielding one Certificate per input in order.

        Inputs are processed in groups whose noisy samples share forward batches. `indices` name the inputs
        (default 0..len-1) and seed their streams. `skip(index)` marks inputs already done (a resumed run):
        their group is still sampled whole, so every batch is the same as in an uninterrupted run, but they
        are not yielded.
        """
        alpha = check_alpha(alpha)
        check_count("n0", n0)
        check_count("n", n)
        spec, norm = certificates.resolve(certificate, self.noise, norm)
        stages = ((SELECTION, n0), (ESTIMATION, n))
        for idx, (c0, c1), seconds in self._groups(xs, stages, batch_size, seed, indices, generator, skip, on_batch):
            v = certificates.certify(spec.name, c0, c1, self.noise, alpha, norm)
            for j, index in enumerate(idx):
                yield Certificate(index, int(v.prediction[j]), float(v.radius[j]), float(v.p_lower[j]),
                                  float(v.p_upper[j]), c0[j], c1[j], alpha, spec.name, norm, seconds)

    def predict_many(self, xs: torch.Tensor, n: int, alpha: float, batch_size: int | None = 1000, *, seed: int = 0,
                     indices: Sequence[int] | None = None, generator: torch.Generator | None = None,
                     skip: Callable[[int], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Iterator[Prediction]:
        """PREDICT many inputs (Cohen et al. 2019, Alg. PREDICT), yielding one Prediction per input."""
        alpha = check_alpha(alpha)
        check_count("n", n)
        for idx, (counts,), seconds in self._groups(xs, ((PREDICTION, n),), batch_size, seed, indices, generator,
                                                    skip, on_batch):
            for index, row in zip(idx, counts):
                top2 = np.argsort(-row, kind="stable")[:2]
                n_a = int(row[top2[0]])
                n_b = int(row[top2[1]]) if len(top2) > 1 else 0
                pvalue = bounds.binomial_test_pvalue(n_a, n_a + n_b, 0.5)
                prediction = ABSTAIN if pvalue > alpha else int(top2[0])
                yield Prediction(index, prediction, pvalue, row, alpha, seconds)

    # -- the shared loop --------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else model_device(self.model)

    def probe(self, x: torch.Tensor) -> int:
        """Run the model on one input (shape (1, *input_shape)); check its output; return the number of classes."""
        self.num_classes = probe_model(self.model, x.to(self._device(), model_dtype(self.model)), self.num_classes)
        return self.num_classes

    def prepare(self, xs: torch.Tensor, batch_size: int) -> Sampler:
        """Check the inputs and the model once, and build the sampling engine."""
        check(isinstance(xs, torch.Tensor), f"inputs must be a torch.Tensor, got {type(xs).__name__}")
        check(xs.ndim >= 2 and xs.shape[0] >= 1, f"inputs must have shape (count, *input_shape), got {tuple(xs.shape)}")
        check(xs.is_floating_point(), f"inputs must be floating point, got {xs.dtype}")
        bad = (~torch.isfinite(xs.reshape(len(xs), -1))).any(dim=1).nonzero()
        check(len(bad) == 0, f"inputs contain NaN or inf (first at position {int(bad[0]) if len(bad) else 0})")
        self.probe(xs[:1])
        if batch_size is None:
            batch_size = auto_batch_size(self.model, xs.shape[1:], self._device(), model_dtype(self.model))
        check_count("batch size", batch_size)
        sampler_dtype = torch.promote_types(model_dtype(self.model), torch.float32)
        check_batch_memory(batch_size, xs.shape[1:], sampler_dtype, self._device())
        return Sampler(self.model, self.noise, self.num_classes, batch_size, self.device, self.amp)

    def _groups(self, xs, stages, batch_size, seed, indices, generator, skip, on_batch):
        """Sample inputs group by group; yield (indices, [counts (G, K) per stage], seconds per input) for the
        members not skipped."""
        sampler = self.prepare(xs, batch_size)
        indices = list(range(len(xs))) if indices is None else [int(i) for i in indices]
        check(len(indices) == len(xs), f"{len(indices)} indices for {len(xs)} inputs")
        skip = skip or (lambda i: False)
        group = group_size(sampler.batch_size, [k for _, k in stages], len(xs))
        for start in range(0, len(xs), group):
            members = indices[start:start + group]
            keep = [j for j, i in enumerate(members) if not skip(i)]
            if not keep:
                continue
            t0 = time.perf_counter()
            requests = [Request(j, generator if generator is not None else make_stream(seed, i, stage, sampler.device), k)
                        for j, i in enumerate(members) for stage, k in stages]
            counts = sampler.counts(xs[start:start + group], requests, on_batch)
            counts = counts.reshape(len(members), len(stages), -1)[keep]
            seconds = (time.perf_counter() - t0) / len(members)
            yield [members[j] for j in keep], [counts[:, s] for s in range(len(stages))], seconds


def group_size(batch_size: int, stage_sizes: Sequence[int], count: int) -> int:
    """Inputs per group. An input of 32 batches or more goes alone (rows are written, and a resumed run picks
    up, input by input; its remainder blocks waste at most a few per cent of a batch). Smaller inputs are
    grouped so that their remainder blocks (sizes k mod batch_size, s per input) fill whole forward batches —
    a multiple of lcm(batch_size, s) / s inputs — and a group spans at least 8 batches, which spreads the
    per-group work (streams, bounds) thin; at most 256 inputs."""
    per_input = sum(stage_sizes)
    s = sum(k % batch_size for k in stage_sizes)
    if s == 0 or per_input >= 32 * batch_size:
        return 1
    exact = batch_size // math.gcd(batch_size, s)
    if exact > 256:
        group = min(256, math.ceil(8 * batch_size / per_input))
    else:
        group = exact * min(256 // exact, math.ceil(8 * batch_size / (exact * per_input)))
    return max(1, min(count, group))
