"""CERTIFY and PREDICT of Cohen et al. 2019 (Alg. 2 of Seferis et al.), composed from the engine and a certificate.

    smoothed = Smooth(model, Gaussian(0.25))
    result = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0)
    result.prediction, result.radius            # ABSTAIN (-1) and 0.0 when it abstains

Randomness: every input's noise comes from its own streams, derived from (seed, input index, stage). A call
without `seed=` draws a fresh random seed (recorded in each result's `seed`), so calling `certify` in a loop gives
every input independent noise; pass `seed=` (and `index=`) to reproduce a result exactly.
"""
from __future__ import annotations

import math
import secrets
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from . import bounds, certificates
from .certificates import ABSTAIN
from .errors import SmoothcertError, check, check_alpha, check_count
from .models import eval_mode
from .device import (AMP_DTYPES, CompileCheck, NonFiniteLogits, auto_batch_size, check_batch_memory, check_compiled,
                     model_device, model_dtype, probe_model, resolve_device)
from .engine.sampler import NamedSampler, Sampler
from .engine.statistics import BettingScores, MeasureHistogram, NestedVotes, ScoreSums, Votes
from .engine.streams import ESTIMATION, PIECE, PREDICTION, SELECTION, Request, Stream, make_stream


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
    candidate: int = ABSTAIN   # the class the selection samples chose (kept when it abstains)
    reason: str = ""           # why it abstained, e.g. 'pA_lower < 1/2' ('' when certified)
    seed: int | None = None    # the run seed its streams came from (None when a generator was passed)
    scores: dict | None = None  # soft certificates: 'selection' (K,) score sums; 'sums', 'squares' (K,) estimation

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    @property
    def samples(self) -> int:
        """Estimation samples used."""
        return int(np.sum(self.counts))


@dataclass(frozen=True)
class Confidence:
    """Certified confidence (001) for one input: for each threshold c, the radii within which the expected
    measure of class A (the selection samples' top class by expected score) provably stays above c."""

    index: int
    prediction: int                # A
    thresholds: tuple[float, ...]
    cdf: np.ndarray                # (C,) radius of the CDF certificate (001 Thm 2, DKW) per threshold; 0: none
    baseline: np.ndarray           # (C,) radius of the baseline certificate (001 Thm 1, Hoeffding)
    histogram: np.ndarray          # (bins,) counts of the measure on fixed bins (confidence.histogram_edges)
    measure_sum: float             # exact sum of the measure over the n samples
    scores_selection: np.ndarray   # (K,) selection score sums (A = argmax)
    counts_selection: np.ndarray   # (K,) selection votes
    alpha: float
    measure: str
    seconds: float
    seed: int | None = None


@dataclass(frozen=True)
class Prediction:
    """The outcome of PREDICT for one input."""

    index: int
    prediction: int            # ABSTAIN (-1) when the binomial test does not reject a tie
    pvalue: float              # two-sided binomial test of the top two counts
    counts: np.ndarray
    alpha: float
    seconds: float
    candidate: int = ABSTAIN   # the most frequent class (kept when it abstains)
    seed: int | None = None

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


class Smooth:
    """A smoothed classifier g(x) = argmax_c P(f(x + noise) = c) over a base classifier f.

    Args:
        model: base classifier, (batch, *input_shape) -> (batch, num_classes) logits. It is switched to eval
            mode (`model.eval()`): dropout and batch-norm statistics must be frozen for f to be a fixed function.
        noise: e.g. `Gaussian(sigma)`, added in the model's input space (before normalisation).
        num_classes: number of classes; found from a forward pass when None.
        device: where noise is drawn and the model runs (default: the model's device).
        amp: None, 'fp16' or 'bf16' (True means 'fp16'): forward passes under autocast to that dtype. The
            autocast model is the base classifier that gets certified. On a CPU autocast is emulated and
            usually slower; it is there to measure its effect on certified accuracy.
        compile: run the forward passes through torch.compile(model). The compiled model is the base classifier
            that gets certified; once per input shape its predictions are compared with the eager model's on
            noisy samples of the first inputs (`compile_checks`; a disagreement warns).
    """

    def __init__(self, model: torch.nn.Module, noise, num_classes: int | None = None, device=None,
                 amp: bool | str | None = None, compile: bool = False):
        check(callable(model), f"model must be a torch.nn.Module (or a callable on batches), got {type(model).__name__}")
        check(callable(getattr(noise, "sample", None)) and callable(getattr(noise, "radius", None)),
              f"noise must be a smoothcert noise such as Gaussian(sigma), got {type(noise).__name__}")
        check(num_classes is None or (isinstance(num_classes, int) and num_classes >= 1),
              f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.model = eval_mode(model) if isinstance(model, torch.nn.Module) else model
        self.noise = noise
        self.num_classes = num_classes
        self.device = model_device(model) if device is None else resolve_device(str(device))
        self.dtype = model_dtype(model)
        self.amp = {False: None, None: None, True: "fp16"}.get(amp, amp) if not isinstance(amp, str) else amp
        check(self.amp is None or self.amp in AMP_DTYPES, f"amp must be None, True, 'fp16' or 'bf16', got {amp!r}")
        if self.amp and self.device.type == "cpu":
            warnings.warn(f"amp={self.amp!r} on the CPU: autocast is emulated there and usually slower than float32; "
                          "use it to measure its effect on certified accuracy", stacklevel=2)
        self._samplers: dict[int, Sampler] = {}   # the last batch size's engine: buffers are paid once, not per call
        self._shapes: set[tuple] = set()          # input shapes the model was checked on
        self._auto_batch: dict[tuple, int] = {}   # input shape -> the batch size batch_size=None chose
        self.compile = bool(compile)
        self.compile_checks: dict[tuple, CompileCheck] = {}   # input shape -> how the compiled model compared
        self._compiled = None                     # torch.compile(model), made on first use
        self._basis = self._what_samples()        # what the caches above were made for

    def _what_samples(self) -> tuple:
        """What decides the base classifier and its noise: the caches are dropped when any of it is reassigned."""
        return self.model, self.noise, self.amp, self.compile, self.device

    def _refresh(self) -> None:
        basis = self._what_samples()
        if any(a is not b and a != b for a, b in zip(basis, self._basis)):
            self._basis = basis
            self.dtype = model_dtype(self.model)
            self._samplers, self._shapes, self._auto_batch, self.compile_checks = {}, set(), {}, {}
            self._compiled = None

    def model_id(self) -> str:
        """What results files record as `model`: the weights' fingerprint, and how the forward pass runs when that
        changes the base classifier (autocast, compiled), so a resumed run cannot mix base classifiers."""
        from .models import fingerprint
        return fingerprint(self.model) + (f"+amp={self.amp}" if self.amp else "") + ("+compiled" if self.compile else "")

    def __getstate__(self) -> dict:
        """Pickled (e.g. sent to Ray workers) without its engines: their buffers are rebuilt where it lands."""
        return {**self.__dict__, "_samplers": {}}

    # -- public API -------------------------------------------------------------------------------
    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = 1000, *,
                seed: int | None = None, index: int = 0, generator: torch.Generator | None = None,
                certificate: str | None = None, norm: str | None = None) -> Certificate:
        """CERTIFY one input.

        Args:
            x: one input, shape input_shape (no batch dimension; several inputs go to `certify_many`).
            n0: selection samples that pick the top class.
            n: fresh estimation samples that bound its probability.
            alpha: the certificate is wrong with probability at most alpha.
            batch_size: noisy samples per forward pass; None chooses one, once per input shape (on CUDA the largest
                that fits, on a CPU the fastest per sample of a few sizes, timed on the model).
            seed: derives the input's streams with `index`, as in `certify_many`; None draws a fresh random seed.
            index: the input's index in the stream derivation.
            generator: draw both stages from this one generator instead (not with seed).
            certificate: name of a certificate in `smoothcert.certificates` (default: the noise's own).
            norm: the norm of the radius (default: the certificate's).
        """
        xs = self._one(x, "certify_many")
        return next(self.certify_many(xs, n0, n, alpha, batch_size, seed=seed, indices=[index],
                                      generator=generator, certificate=certificate, norm=norm))

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = 1000, *,
                seed: int | None = None, index: int = 0, generator: torch.Generator | None = None) -> Prediction:
        """PREDICT one input: top two counts of n samples, abstain unless a binomial test rejects a tie at alpha
        (arguments as for `certify`)."""
        xs = self._one(x, "predict_many")
        return next(self.predict_many(xs, n, alpha, batch_size, seed=seed, indices=[index], generator=generator))

    def certify_many(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = 1000, *,
                     seed: int | None = None, indices: Sequence[int] | None = None,
                     generator: torch.Generator | None = None, certificate: str | None = None,
                     norm: str | None = None, skip: Callable[[int], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """CERTIFY many inputs, yielding one Certificate per input in order (nothing for an empty batch).

        Inputs are processed in groups whose noisy samples share forward batches. `indices` name the inputs
        (default 0..len-1) and, with `seed`, derive their streams (seed None: a fresh random seed for the call).
        `skip(index)` marks inputs already done (a resumed run): their group is still sampled whole, so every batch
        is the same as in an uninterrupted run, but they are not yielded.
        """
        alpha = check_alpha(alpha)
        spec, norm = certificates.resolve(certificate, self.noise, norm)
        check_count("n0", n0, 1 if spec.uses_selection else 0)
        check_count("n", n)
        seed, generator = self._seed(seed, generator)
        stages = ((SELECTION, n0), (ESTIMATION, n))
        for idx, (c0, c1), seconds in self._groups(xs, stages, batch_size, seed, indices, generator, skip, on_batch):
            v = certificates.certify(spec.name, c0, c1, self.noise, alpha, norm)
            for j, index in enumerate(idx):
                yield _certificate(index, v, j, c0[j], c1[j], alpha, spec.name, norm, seconds, seed)

    def predict_many(self, xs: torch.Tensor, n: int, alpha: float, batch_size: int | None = 1000, *,
                     seed: int | None = None, indices: Sequence[int] | None = None,
                     generator: torch.Generator | None = None, skip: Callable[[int], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Iterator[Prediction]:
        """PREDICT many inputs (Cohen et al. 2019, Alg. PREDICT), yielding one Prediction per input in order."""
        alpha = check_alpha(alpha)
        check_count("n", n)
        seed, generator = self._seed(seed, generator)
        for idx, (counts,), seconds in self._groups(xs, ((PREDICTION, n),), batch_size, seed, indices, generator,
                                                    skip, on_batch):
            for index, row in zip(idx, counts):
                top2 = np.argsort(-row, kind="stable")[:2]
                n_a = int(row[top2[0]])
                n_b = int(row[top2[1]]) if len(top2) > 1 else 0
                pvalue = bounds.binomial_test_pvalue(n_a, n_a + n_b, 0.5)
                prediction = ABSTAIN if pvalue > alpha else int(top2[0])
                yield Prediction(index, prediction, pvalue, row, alpha, seconds, int(top2[0]), seed)

    # -- sample efficiency: several n in one pass, input-specific n, early stopping at a target radius ----
    def certify_nested(self, xs: torch.Tensor, n0: int, ns: Sequence[int], alpha: float,
                       batch_size: int | None = 1000, *, seed: int | None = None,
                       indices: Sequence[int] | None = None, generator: torch.Generator | None = None,
                       certificate: str | None = None, norm: str | None = None,
                       skip: Callable[[int], bool] | None = None,
                       on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[Certificate, ...]]:
        """CERTIFY every input at each n in `ns` from one pass: the estimation stream is read once to max(ns), and
        the certificate at n reads its first n samples. Yields, per input, one Certificate per n (ascending).

        A stream is read in pieces that do not depend on n, so the certificate at each n is exactly the one
        `certify_many` gives at that n with the same seed (and batch size). Each is valid at level alpha; the
        certificates of one input at different n share samples, so they are not independent of each other.
        """
        alpha = check_alpha(alpha)
        check_count("n0", n0)
        ns = _sizes(ns)
        spec, norm = certificates.resolve(certificate, self.noise, norm)
        seed, generator = self._seed(seed, generator)
        for sampler, chunk, members, keep in self.groups(xs, GROUPING["certify_nested"](dict(n0=n0, ns=ns)),
                                                         batch_size, indices, skip):
            t0 = time.perf_counter()
            sel = self.streams(members, SELECTION, seed, generator, sampler.device)
            est = self.streams(members, ESTIMATION, seed, generator, sampler.device)
            requests = [Request(j, stream, k) for j in range(len(members)) for stream, k in ((sel[j], n0),
                                                                                            (est[j], ns[-1]))]
            votes, nested = sampler.run(chunk, requests, [Votes(), NestedVotes(ns)], on_batch)
            c0, c1 = votes[0::2][keep], nested[1::2][keep]
            seconds = (time.perf_counter() - t0) / len(members)
            verdicts = [certificates.certify(spec.name, c0, c1[:, level], self.noise, alpha, norm)
                        for level in range(len(ns))]
            for j, g in enumerate(keep):
                yield tuple(_certificate(members[g], v, j, c0[j], c1[j, level], alpha, spec.name, norm, seconds, seed)
                            for level, v in enumerate(verdicts))

    def certify_input_n(self, xs: torch.Tensor, n0: int, n_max: int, alpha: float, batch_size: int | None = 1000,
                        *, max_loss: float = 0.02, relative: bool = True, grid: Sequence[int] | None = None,
                        seed: int | None = None, indices: Sequence[int] | None = None,
                        generator: torch.Generator | None = None, certificate: str | None = None,
                        norm: str | None = None, skip: Callable[[int], bool] | None = None,
                        on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """CERTIFY with an input-specific number of estimation samples (Chen et al. 2022's idea, corrected): the
        n0 selection samples choose the class A and, from A's selection count alone, the smallest n <= n_max whose
        expected radius is within `max_loss` of the expected radius at n_max (`planning.choose_n`); then n FRESH
        samples give the certificate. Conditional on the selection samples n and A are fixed and the fresh
        samples independent of them, so the certificate keeps level alpha (proof in planning.choose_n); the
        pilot samples never enter the bound. `Certificate.samples` is the n used.

        Args (beyond certify_many's):
            n_max: the most estimation samples an input may get.
            max_loss: the allowed loss of expected radius, relative to the expected radius at n_max (or absolute,
                in radius units, with relative=False).
            grid: the candidate n (default: 10 per decade up to n_max).
        """
        from .planning import choose_n
        alpha = check_alpha(alpha)
        check_count("n0", n0)
        check_count("n_max", n_max)
        spec, norm = certificates.resolve(certificate, self.noise, norm)
        proxy_norm = norm if norm in self.noise.norms else None
        seed, generator = self._seed(seed, generator)
        for sampler, chunk, members, keep in self.groups(xs, GROUPING["certify_input_n"](dict(n0=n0)), batch_size,
                                                         indices, skip):
            t0 = time.perf_counter()
            sel = self.streams(members, SELECTION, seed, generator, sampler.device)
            c0 = sampler.counts(chunk, [Request(j, sel[j], n0) for j in range(len(members))], on_batch)
            ks = [choose_n(int(row.max()), n0, n_max, alpha, self.noise, max_loss, relative, grid, proxy_norm)
                  for row in c0]
            est = self.streams(members, ESTIMATION, seed, generator, sampler.device)
            c1 = sampler.counts(chunk, [Request(j, est[j], k) for j, k in enumerate(ks)], on_batch)
            c0, c1 = c0[keep], c1[keep]
            seconds = (time.perf_counter() - t0) / len(members)
            v = certificates.certify(spec.name, c0, c1, self.noise, alpha, norm)
            for j, g in enumerate(keep):
                yield _certificate(members[g], v, j, c0[j], c1[j], alpha, spec.name, norm, seconds, seed)

    def certify_target(self, xs: torch.Tensor, n0: int, radius: float, n_max: int, alpha: float,
                       batch_size: int | None = 1000, *, futility: str = "upper", futility_level: float = 0.01,
                       seed: int | None = None, indices: Sequence[int] | None = None,
                       generator: torch.Generator | None = None, norm: str | None = None,
                       skip: Callable[[int], bool] | None = None,
                       on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """Decide "certified at `radius`?" with early stopping (the acceptance-radius use of 003): the selection
        samples choose A; fresh samples are drawn in rounds (the looks of `bounds.sequential.UnionBound`) and each
        input stops as soon as its anytime-valid lower bound on pA reaches the probability that certifies
        `radius` (certified) or, by the `futility` rule, it is judged unable to (not part of the guarantee: a
        futile input is just not certified). The bound is Clopper-Pearson at a fixed schedule of looks with alpha
        split over them, valid under any data-dependent stopping (proof in bounds/sequential.py); re-checking a
        fixed-n bound after every round would not be.

        Yields one Certificate per input: radius = the radius of the best anytime lower bound when it stopped
        (>= `radius` exactly when certified there; a smaller radius where the bound still certifies one), counts
        = the estimation counts drawn, `samples` = how many.
        """
        from .bounds.sequential import CONTINUE, UnionBound, decide, target_probability
        alpha = check_alpha(alpha)
        check_count("n0", n0)
        check_count("n_max", n_max)
        spec, norm = certificates.resolve(None, self.noise, norm)
        one_sided = "cohen" if self.noise.name == "gaussian" else "teng-binary"
        schedule = UnionBound(alpha, n_max)
        p0 = target_probability(self.noise, radius, norm)
        seed, generator = self._seed(seed, generator)
        for sampler, chunk, members, keep in self.groups(xs, GROUPING["certify_target"](dict(n0=n0)), batch_size,
                                                         indices, skip):
            t0 = time.perf_counter()
            G = len(members)
            sel = self.streams(members, SELECTION, seed, generator, sampler.device)
            c0 = sampler.counts(chunk, [Request(j, sel[j], n0) for j in range(G)], on_batch)
            top = c0.argmax(axis=1)
            est = self.streams(members, ESTIMATION, seed, generator, sampler.device)
            c1 = np.zeros_like(c0)
            best, t, live = np.zeros(G), 0, np.ones(G, dtype=bool)
            for look in schedule.rounds():
                alive = np.flatnonzero(live)
                c1[alive] += sampler.counts(chunk, [Request(j, est[j], look - t) for j in alive], on_batch)
                t = look
                k = c1[alive, top[alive]]
                best[alive] = np.maximum(best[alive], np.atleast_1d(schedule.lower(k, t)))
                live[alive] = np.atleast_1d(decide(schedule, k, t, p0, futility, futility_level)) == CONTINUE
                if not live.any():
                    break
            seconds = (time.perf_counter() - t0) / G
            ok = best >= 0.5
            radii = np.where(ok, self.noise.radius(best, norm), 0.0)
            v = certificates.Verdict(np.where(ok, top, ABSTAIN), radii, best, np.full(G, np.nan), top,
                                     np.where(ok, "", "pA_lower < 1/2").astype(object))
            for j in keep:
                yield _certificate(members[j], v, j, c0[j], c1[j], alpha, one_sided, norm, seconds, seed)

    # -- soft scores: soft certificates and certified confidence --------------------------------------
    def certify_soft(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = 1000, *,
                     certificate: str = "soft-bernstein", seed: int | None = None,
                     indices: Sequence[int] | None = None, generator: torch.Generator | None = None,
                     norm: str | None = None, skip: Callable[[int], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """CERTIFY the smoothed SOFT classifier (000 §2.4-2.5: the class with the largest expected softmax score)
        with a soft certificate of `smoothcert.certificates.soft` (soft-hoeffding, soft-bernstein, soft-lipschitz,
        soft-betting): the selection samples' score sums choose A; the n fresh samples' per-class score sums
        and squares (and, for soft-betting, betting capital) bound E_A from below and the other classes from
        above (alpha/2 each). Each Certificate also carries the votes (any hard certificate can be recomputed)
        and `scores` (the stored soft statistics)."""
        from .certificates import soft
        from .bounds.mean import centred_grid
        alpha = check_alpha(alpha)
        check_count("n0", n0)
        check_count("n", n)
        spec, norm = certificates.resolve(certificate, self.noise, norm)
        check(spec.statistic == "scores", f"{spec.name} is not a soft certificate (soft ones: {', '.join(soft.CERTIFICATES)})")
        seed, generator = self._seed(seed, generator)
        for sampler, chunk, members, keep in self.groups(xs, GROUPING["certify_soft"](dict(n0=n0, n=n)), batch_size,
                                                         indices, skip):
            t0 = time.perf_counter()
            G = len(members)
            c0, s0, top = self._soft_selection(sampler, chunk, members, n0, seed, generator, on_batch)
            stats = [Votes(), ScoreSums()]
            if spec.name == "soft-betting":              # grids around the selection means: fixed before sampling
                mean = s0 / n0
                rest = np.where(np.arange(mean.shape[1])[None, :] == top[:, None], -1.0, mean).max(axis=1)
                stats.append(BettingScores(top, n, alpha / 2, centred_grid(mean[np.arange(G), top]),
                                           centred_grid(np.clip(rest, 0, 1))))
            est = self.streams(members, ESTIMATION, seed, generator, sampler.device)
            out = sampler.run(chunk, [Request(j, est[j], n) for j in range(G)], stats, on_batch)
            c1, (s1, q1) = out[0], out[1]
            if spec.name == "soft-betting":
                v = soft.soft_betting(s0, *out[2], self.noise, alpha, norm)
            else:
                v = soft.CERTIFICATES[spec.name](s0, s1, q1, n, self.noise, alpha, norm)
            v = certificates.complete(v, top)
            seconds = (time.perf_counter() - t0) / G
            for j in keep:
                c = _certificate(members[j], v, j, c0[j], c1[j], alpha, spec.name, norm, seconds, seed)
                yield replace(c, scores={"selection": s0[j], "sums": s1[j], "squares": q1[j]})

    def confidence(self, xs: torch.Tensor, n0: int, n: int, alpha: float, thresholds: Sequence[float],
                   batch_size: int | None = 1000, *, measure: str = "score", num_thresholds: int | None = None,
                   bins: int | None = None, seed: int | None = None, indices: Sequence[int] | None = None,
                   generator: torch.Generator | None = None, skip: Callable[[int], bool] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> Iterator[Confidence]:
        """Certified confidence (001, Kumar et al. 2020): A = the class with the largest selection score sum; the
        n fresh samples give the distribution of the measure (A's softmax score, or its margin over the best
        other class) as a histogram on fixed bins, and for each threshold c the radius within which E[measure]
        provably stays above c: by the CDF certificate (Thm 2, one-sided DKW band) and the baseline (Thm 1,
        Hoeffding), each at level alpha, found by bisection and rounded down (smoothcert.certificates.confidence)."""
        from .certificates import confidence as conf
        alpha = check_alpha(alpha)
        check_count("n0", n0)
        check_count("n", n)
        check(self.noise.name == "gaussian", "certified confidence (001) is for Gaussian noise")
        low, high = conf.measure_range(measure)
        levels = tuple(float(c) for c in thresholds)
        check(levels and all(low < c < high for c in levels), f"thresholds must lie strictly inside ({low:g}, "
                                                             f"{high:g}) for the {measure} measure, got {thresholds!r}")
        num_thresholds = conf.NUM_THRESHOLDS if num_thresholds is None else num_thresholds
        bins = conf.BINS if bins is None else bins
        check_count("num_thresholds", num_thresholds)
        check_count("bins", bins)
        seed, generator = self._seed(seed, generator)
        sigma = self.noise.sigma
        for sampler, chunk, members, keep in self.groups(xs, GROUPING["confidence"](dict(n0=n0, n=n)), batch_size,
                                                         indices, skip):
            t0 = time.perf_counter()
            G = len(members)
            c0, s0, top = self._soft_selection(sampler, chunk, members, n0, seed, generator, on_batch)
            est = self.streams(members, ESTIMATION, seed, generator, sampler.device)
            (hist, sums), = sampler.run(chunk, [Request(j, est[j], n) for j in range(G)],
                                        [MeasureHistogram(top, measure, bins)], on_batch)
            layers = conf.layers_from_histogram(hist[keep], measure, num_thresholds)
            cdf = conf.cdf_radius(layers, np.array(levels), sigma, alpha)
            base = conf.baseline_radius(sums[keep], n, np.array(levels), sigma, alpha, measure)
            seconds = (time.perf_counter() - t0) / G
            for row, j in enumerate(keep):
                yield Confidence(members[j], int(top[j]), levels, cdf[row], base[row], hist[j], float(sums[j]),
                                 s0[j], c0[j], alpha, measure, seconds, seed)

    def _soft_selection(self, sampler, chunk, members, n0, seed, generator, on_batch):
        """The selection stage of a soft run: votes, per-class score sums, and A = the class of largest sum."""
        from .certificates.soft import choose
        sel = self.streams(members, SELECTION, seed, generator, sampler.device)
        c0, (s0, _) = sampler.run(chunk, [Request(j, sel[j], n0) for j in range(len(members))],
                                  [Votes(), ScoreSums()], on_batch)
        return c0, s0, choose(s0)

    # -- checks and the shared loop -----------------------------------------------------------------
    @staticmethod
    def _seed(seed, generator) -> tuple[int | None, Stream | None]:
        """(the run seed: the caller's, or a fresh random one, or None when a generator is given instead; the
        call's one stream on that generator). The stream lives for this call only: noise it drew and left unused
        is dropped with it, and the generator has moved past it, so the next call's noise is fresh."""
        check(seed is None or generator is None, "give seed= or generator=, not both (the generator would win)")
        check(generator is None or isinstance(generator, torch.Generator),
              f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator is not None:
            return None, Stream(generator)
        if seed is None:
            return secrets.randbits(63), None
        check(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool),
              f"seed must be an integer, got {seed!r}")
        return int(seed), None

    def _one(self, x, many: str) -> torch.Tensor:
        """One input (no batch dimension) as a batch of one, checked."""
        if not isinstance(x, torch.Tensor):
            raise SmoothcertError(f"x must be a torch.Tensor, got {type(x).__name__} (use torch.as_tensor(x, "
                                  "dtype=torch.float32))")
        check(x.ndim >= 1, "x must have the model's input shape (no batch dimension), got a scalar")
        xs = x.unsqueeze(0)
        try:
            self.probe(xs)
        except SmoothcertError:
            if x.ndim >= 2 and x.shape[0] > 1 and self._accepts(x[:1]):
                raise SmoothcertError(f"x has shape {tuple(x.shape)}: a batch of {x.shape[0]} inputs; this takes one "
                                      f"input without the batch dimension: use {many} for a batch") from None
            raise
        return xs

    def _accepts(self, xs: torch.Tensor) -> bool:
        try:
            probe_model(self.model, xs.to(self.device, self.dtype), self.num_classes)
            return True
        except SmoothcertError:
            return False

    def probe(self, xs: torch.Tensor, indices: Sequence[int] | None = None) -> int:
        """Check the model once per input shape on xs[:1] (named by indices[0] in a message); return the number of
        classes."""
        self._refresh()
        shape = tuple(xs.shape[1:])
        if shape not in self._shapes:
            try:
                self.num_classes = probe_model(self.model, xs[:1].to(self.device, self.dtype), self.num_classes)
            except NonFiniteLogits as exc:
                name = 0 if indices is None else list(indices)[0]
                raise NonFiniteLogits(f"input {name}: {exc}", name) from None
            self._shapes.add(shape)
        return self.num_classes

    def batch_size(self, shape, batch_size: int | None) -> int:
        """batch_size, checked; None: the size chosen once per input shape (a timing or a memory probe)."""
        if batch_size is None:
            self._refresh()
            shape = tuple(shape)
            if shape not in self._auto_batch:
                self._auto_batch[shape] = auto_batch_size(self.model, shape, self.device, self.dtype, amp=self.amp)
            batch_size = self._auto_batch[shape]
        check_count("batch size", batch_size)
        return batch_size

    def check_inputs(self, xs: torch.Tensor, indices: Sequence[int] | None = None) -> None:
        """Every input finite and within the range of the model's dtype (the noisy inputs are cast to it); the
        first that is not is named by its index (`indices`; default: its position)."""
        self._refresh()
        top = torch.finfo(self.dtype).max
        narrow = (torch.finfo if xs.is_floating_point() else torch.iinfo)(xs.dtype).max > top
        if bool(torch.isfinite(xs).all()) and not (narrow and bool(xs.abs().max() > top)):
            return
        flat = xs.reshape(len(xs), -1)
        bad = ~torch.isfinite(flat) | (flat.abs() > top)
        j = int(bad.any(dim=1).nonzero()[0])
        value = float(flat[j][bad[j]][0])
        name = j if indices is None else list(indices)[j]
        if math.isfinite(value):
            raise SmoothcertError(f"input {name} holds {value:g}, which overflows "
                                  f"{str(self.dtype).removeprefix('torch.')} (the model's dtype)")
        raise SmoothcertError(f"input {name} contains NaN or inf")

    def prepare(self, xs: torch.Tensor, batch_size: int | None, indices: Sequence[int] | None = None) -> Sampler:
        """Check the inputs (and, once per shape, the model), and return the sampling engine for batch_size;
        `indices` name the inputs in a message."""
        # messages are built only on failure: this runs on every call, and one input's call is short
        if not isinstance(xs, torch.Tensor):
            raise SmoothcertError(f"inputs must be a torch.Tensor, got {type(xs).__name__} (use "
                                  "torch.as_tensor(xs, dtype=torch.float32))")
        if xs.ndim < 2:
            raise SmoothcertError(f"inputs must have shape (count, *input_shape), got {tuple(xs.shape)}")
        if not xs.is_floating_point():
            raise SmoothcertError(f"inputs must be floating point, got {xs.dtype}")
        self.check_inputs(xs, indices)
        self.probe(xs, indices)
        batch_size = self.batch_size(xs.shape[1:], batch_size)
        sampler = self._samplers.get(batch_size)
        if sampler is None:
            check_batch_memory(batch_size, xs.shape[1:], torch.promote_types(self.dtype, torch.float32), self.device)
            if self.compile and self._compiled is None:
                self._compiled = torch.compile(self.model)
            sampler = Sampler(self._compiled if self.compile else self.model, self.noise, self.num_classes,
                              batch_size, self.device, self.amp, self.dtype)
            self._samplers = {batch_size: sampler}     # one kept: a sweep of batch sizes must not pile up buffers
        if self.compile and tuple(xs.shape[1:]) not in self.compile_checks:
            compared = check_compiled(self.model, self._compiled, xs, self.noise, batch_size, self.device, self.dtype,
                                      self.amp)
            self.compile_checks[tuple(xs.shape[1:])] = compared
            if compared.disagreements:
                warnings.warn(compared.describe(), stacklevel=3)
        return sampler

    @staticmethod
    def streams(members: Sequence[int], stage: int, seed: int | None, generator: Stream | None,
                device) -> list[Stream]:
        """One stream per input for a stage; with a generator, the call's one stream (`_seed`), shared by every
        input and stage."""
        if generator is not None:
            return [generator] * len(members)
        return [make_stream(seed, i, stage, device) for i in members]

    def groups(self, xs, per_input: Sequence[int], batch_size, indices, skip):
        """(sampler, inputs of the group, their indices, the positions within it not skipped), group by group."""
        if not isinstance(xs, torch.Tensor):
            raise SmoothcertError(f"inputs must be a torch.Tensor, got {type(xs).__name__}")
        if len(xs) == 0:
            return
        indices = list(range(len(xs))) if indices is None else [int(i) for i in indices]
        if len(indices) != len(xs):
            raise SmoothcertError(f"{len(indices)} indices for {len(xs)} inputs")
        sampler = self.prepare(xs, batch_size, indices)
        skip = skip or (lambda i: False)
        group = group_size(sampler.batch_size, per_input, len(xs))
        for start in range(0, len(xs), group):
            members = indices[start:start + group]
            keep = [j for j, i in enumerate(members) if not skip(i)]
            if keep:
                yield NamedSampler(sampler, members), xs[start:start + group], members, keep

    def _groups(self, xs, stages, batch_size, seed, indices, generator, skip, on_batch):
        """Sample inputs group by group; yield (indices, [counts (G, K) per stage], seconds per input) for the
        members not skipped."""
        for sampler, chunk, members, keep in self.groups(xs, [k for _, k in stages], batch_size, indices, skip):
            t0 = time.perf_counter()
            per_stage = [self.streams(members, stage, seed, generator, sampler.device) for stage, _ in stages]
            requests = [Request(j, per_stage[s][j], k) for j in range(len(members)) for s, (_, k) in enumerate(stages)]
            counts = sampler.counts(chunk, requests, on_batch)
            counts = counts.reshape(len(members), len(stages), -1)[keep]
            seconds = (time.perf_counter() - t0) / len(members)
            yield [members[j] for j in keep], [counts[:, s] for s in range(len(stages))], seconds


# The per-input samples by which each method groups its inputs (`group_size`), from its bound arguments: the one
# place that says it, so a distributed run (smoothcert.distributed) cuts its tasks into the very same groups.
# The adaptive modes group as for n = PIECE: many inputs share each round's forward batches.
GROUPING = {
    "certify_many": lambda a: [a["n0"], a["n"]],
    "predict_many": lambda a: [a["n"]],
    "certify_nested": lambda a: [a["n0"], max(_sizes(a["ns"]))],
    "certify_input_n": lambda a: [a["n0"], PIECE],
    "certify_target": lambda a: [a["n0"], PIECE],
    "certify_soft": lambda a: [a["n0"], a["n"]],
    "confidence": lambda a: [a["n0"], a["n"]],
}


def _sizes(ns) -> list[int]:
    """Sample sizes, checked, ascending and without repeats."""
    ns = [ns] if isinstance(ns, int) else list(ns)
    check(len(ns) > 0, "give at least one number of samples")
    for n in ns:
        check_count("n", n)
    return sorted(set(int(n) for n in ns))


def _certificate(index, v, j, c0, c1, alpha, name, norm, seconds, seed) -> Certificate:
    """Row j of a Verdict as a Certificate."""
    return Certificate(index, int(v.prediction[j]), float(v.radius[j]), float(v.p_lower[j]), float(v.p_upper[j]),
                       c0, c1, alpha, name, norm, seconds, int(v.candidate[j]), str(v.reason[j]), seed)


def group_size(batch_size: int, stage_sizes: Sequence[int], count: int) -> int:
    """Inputs per group. An input of 32 batches or more goes alone (rows are written, and a resumed run picks
    up, input by input; its last batch wastes at most a few per cent). Smaller inputs are grouped so that their
    samples fill whole forward batches — a multiple of lcm(batch_size, s) / s inputs, s = samples per input —
    and a group spans at least 8 batches, which spreads the per-group work (streams, bounds) thin; at most 256
    inputs."""
    per_input = sum(stage_sizes)
    s = per_input % batch_size
    if s == 0 or per_input >= 32 * batch_size:
        return 1 if per_input >= 32 * batch_size else max(1, min(count, math.ceil(8 * batch_size / per_input), 256))
    exact = batch_size // math.gcd(batch_size, s)
    if exact > 256:
        group = min(256, math.ceil(8 * batch_size / per_input))
    else:
        group = exact * min(256 // exact, math.ceil(8 * batch_size / (exact * per_input)))
    return max(1, min(count, group))
