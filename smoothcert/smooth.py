"""The facade: `Smooth`, a smoothed classifier over a base classifier and a noise. It holds the model, its checks
and caches (probing, batch size, the sampling engine); each verb is a few lines that hand the work to its mode
(smoothcert.modes: fixed n, nested n, input-specific n, early stopping, soft, confidence).

    smoothed = Smooth(model, Gaussian(0.25))
    result = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0)
    result.prediction, result.radius            # ABSTAIN (-1) and 0.0 when it abstains

Randomness: every input's noise comes from its own streams, derived from (seed, input index, stage). A call
without `seed=` draws a fresh random seed (recorded in each result's `seed`), so calling `certify` in a loop gives
every input independent noise; pass `seed=` (and `index=`) to reproduce a result exactly.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterator, Sequence

import torch

from .device import (AMP_DTYPES, CompileCheck, NonFiniteLogits, auto_batch_size, check_batch_memory, check_compiled,
                     model_device, model_dtype, probe_model, resolve_device)
from .engine.sampler import Sampler
from .errors import SmoothcertError, check, check_count
from .models import eval_mode, fingerprint
from .modes import confidence as confidence_mode
from .modes import fixed, input_n, nested, soft, target
from .modes.outcomes import Certificate, Confidence, Prediction
from .noises import sound


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
        denoiser: a module put in front of the model (denoised smoothing, smoothcert.denoise): the base classifier is
            then `Denoised(model, denoiser)`, model(denoiser(x + noise)), and `model`, the fingerprint, amp,
            compile and the batch-size choice are the composition's.
        float_sound: draw Gaussian noise float-soundly (smoothcert.noises.sound: exactly on a grid finer than the
            inputs', added without rounding, and certified with the sampler's total-variation distance absorbed),
            so no base classifier can read floating-point rounding (the attack in smoothcert.noises.rounding_attack).
            Needs `input_grid`. Default (None): float-sound exactly when `input_grid` is given, since the API does
            not know the data's grid; False opts out. (The command line defaults to it for data on a known grid.)
        input_grid: the inputs are k / input_grid for integers k (255 for 8-bit images, 16 for scikit-learn's
            digits); an input off it is refused, named by its index.
    """

    def __init__(self, model: torch.nn.Module, noise, num_classes: int | None = None, device=None,
                 amp: bool | str | None = None, compile: bool = False, denoiser: torch.nn.Module | None = None, *,
                 float_sound: bool | None = None, input_grid: int | None = None):
        if denoiser is not None:       # Salman et al. 2020, §3: the composition is the base classifier
            from .denoise import Denoised
            model = Denoised(model, denoiser)
        check(callable(model), f"model must be a torch.nn.Module (or a callable on batches), got {type(model).__name__}")
        check(callable(getattr(noise, "sample", None)) and callable(getattr(noise, "radius", None)),
              f"noise must be a smoothcert noise such as Gaussian(sigma), got {type(noise).__name__}")
        check(float_sound in (None, True, False), f"float_sound must be True, False or None, got {float_sound!r}")
        if float_sound or (float_sound is None and input_grid is not None):
            noise = sound.float_sound(noise, input_grid)
        else:
            check(input_grid is None, "input_grid goes with float-sound sampling (float_sound=False ignores it: "
                                      "leave it out)")
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
        return fingerprint(self.model) + (f"+amp={self.amp}" if self.amp else "") + ("+compiled" if self.compile else "")

    def __getstate__(self) -> dict:
        """Pickled (e.g. sent to Ray workers) without its engines: their buffers are rebuilt where it lands."""
        return {**self.__dict__, "_samplers": {}}

    # -- the verbs: each hands its arguments to its mode (smoothcert.modes) -------------------------------------
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
            norm: the norm of the radius (default: the certificate's); 'linf' (Gaussian noise) reads the l2 radius as
                an l-inf one, r_2 / sqrt(D) for inputs of D coordinates, reported as 'linf:d=D' (noises/norms.py).
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
        return fixed.certify_many(self, xs, n0, n, alpha, batch_size, seed=seed, indices=indices, generator=generator,
                                  certificate=certificate, norm=norm, skip=skip, on_batch=on_batch)

    def predict_many(self, xs: torch.Tensor, n: int, alpha: float, batch_size: int | None = 1000, *,
                     seed: int | None = None, indices: Sequence[int] | None = None,
                     generator: torch.Generator | None = None, skip: Callable[[int], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Iterator[Prediction]:
        """PREDICT many inputs (Cohen et al. 2019, Alg. PREDICT), yielding one Prediction per input in order."""
        return fixed.predict_many(self, xs, n, alpha, batch_size, seed=seed, indices=indices, generator=generator,
                                  skip=skip, on_batch=on_batch)

    def certify_nested(self, xs: torch.Tensor, n0: int, ns: Sequence[int], alpha: float,
                       batch_size: int | None = 1000, *, seed: int | None = None,
                       indices: Sequence[int] | None = None, generator: torch.Generator | None = None,
                       certificate: str | None = None, norm: str | None = None,
                       skip: Callable[[int], bool] | None = None,
                       on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[Certificate, ...]]:
        """CERTIFY every input at each n in `ns` from one pass (modes/nested.py): yields, per input, one Certificate
        per n (ascending), each exactly the one `certify_many` gives at that n with the same seed and batch size."""
        return nested.certify_nested(self, xs, n0, ns, alpha, batch_size, seed=seed, indices=indices,
                                     generator=generator, certificate=certificate, norm=norm, skip=skip,
                                     on_batch=on_batch)

    def certify_input_n(self, xs: torch.Tensor, n0: int, n_max: int, alpha: float, batch_size: int | None = 1000,
                        *, max_loss: float = 0.02, relative: bool = True, grid: Sequence[int] | None = None,
                        seed: int | None = None, indices: Sequence[int] | None = None,
                        generator: torch.Generator | None = None, certificate: str | None = None,
                        norm: str | None = None, skip: Callable[[int], bool] | None = None,
                        on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """CERTIFY with an input-specific number of estimation samples, chosen from the selection samples alone;
        then n FRESH samples give the certificate (modes/input_n.py). `Certificate.samples` is the n used.

        Args (beyond certify_many's):
            n_max: the most estimation samples an input may get.
            max_loss: the allowed loss of expected radius, relative to the expected radius at n_max (or absolute,
                in radius units, with relative=False).
            grid: the candidate n (default: 10 per decade up to n_max).
        """
        return input_n.certify_input_n(self, xs, n0, n_max, alpha, batch_size, max_loss=max_loss, relative=relative,
                                       grid=grid, seed=seed, indices=indices, generator=generator,
                                       certificate=certificate, norm=norm, skip=skip, on_batch=on_batch)

    def certify_target(self, xs: torch.Tensor, n0: int, radius: float, n_max: int, alpha: float,
                       batch_size: int | None = 1000, *, futility: str = "upper", futility_level: float = 0.01,
                       seed: int | None = None, indices: Sequence[int] | None = None,
                       generator: torch.Generator | None = None, norm: str | None = None,
                       skip: Callable[[int], bool] | None = None,
                       on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """Decide "certified at `radius`?" with early stopping: fresh samples in rounds until an anytime-valid lower
        bound on pA certifies `radius`, or the `futility` rule gives up (modes/target.py). Yields one Certificate per
        input: the radius of the best anytime bound when it stopped, the counts drawn, `samples` = how many."""
        return target.certify_target(self, xs, n0, radius, n_max, alpha, batch_size, futility=futility,
                                     futility_level=futility_level, seed=seed, indices=indices, generator=generator,
                                     norm=norm, skip=skip, on_batch=on_batch)

    def certify_soft(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = 1000, *,
                     certificate: str = "soft-bernstein", seed: int | None = None,
                     indices: Sequence[int] | None = None, generator: torch.Generator | None = None,
                     norm: str | None = None, skip: Callable[[int], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Iterator[Certificate]:
        """CERTIFY the smoothed SOFT classifier (the class with the largest expected softmax score) with a soft
        certificate (soft-hoeffding, soft-bernstein, soft-lipschitz, soft-betting; modes/soft.py). Each Certificate
        also carries the votes (any hard certificate can be recomputed) and `scores` (the stored soft statistics)."""
        return soft.certify_soft(self, xs, n0, n, alpha, batch_size, certificate=certificate, seed=seed,
                                 indices=indices, generator=generator, norm=norm, skip=skip, on_batch=on_batch)

    def confidence(self, xs: torch.Tensor, n0: int, n: int, alpha: float, thresholds: Sequence[float],
                   batch_size: int | None = 1000, *, measure: str = "score", num_thresholds: int | None = None,
                   bins: int | None = None, seed: int | None = None, indices: Sequence[int] | None = None,
                   generator: torch.Generator | None = None, skip: Callable[[int], bool] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> Iterator[Confidence]:
        """Certified confidence (001, Kumar et al. 2020; modes/confidence.py): for each threshold c, the radius within
        which the expected measure (the selected class's softmax score, or its margin) provably stays above c, by
        the CDF certificate (Thm 2) and the baseline (Thm 1), each at level alpha."""
        return confidence_mode.confidence(self, xs, n0, n, alpha, thresholds, batch_size, measure=measure,
                                          num_thresholds=num_thresholds, bins=bins, seed=seed, indices=indices,
                                          generator=generator, skip=skip, on_batch=on_batch)

    # -- checks and the engine --------------------------------------------------------------------------
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
        first that is not is named by its index (`indices`; default: its position). Under float-sound sampling, also
        every input on the noise's grid."""
        self._refresh()
        self._check_finite(xs, indices)
        if not callable(getattr(self.noise, "off_grid", None)) or not len(xs):
            return
        j = self.noise.off_grid(xs)
        if j is not None:
            raise SmoothcertError(f"input {j if indices is None else list(indices)[j]} is off its grid: not k/"
                                  f"{self.noise.grid} for integers k, the grid float-sound sampling was declared for "
                                  "(give the data's grid, or opt out of float-sound sampling)")
        top = int(xs.reshape(len(xs), -1).abs().amax(dim=1).argmax())     # x + noise exact for the largest input
        self.noise.encode(xs[top:top + 1].to(torch.promote_types(self.dtype, torch.float32)))

    def _check_finite(self, xs: torch.Tensor, indices) -> None:
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
