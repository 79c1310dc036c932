"""What runs on a Ray worker: the picklable Recipe that builds a worker's Smooth from the model's files, and the actor
that keeps that Smooth and samples the tasks the driver sends (distributed/executor.py)."""
from __future__ import annotations

import time
import os
import sys
import warnings
from dataclasses import dataclass, field

import torch

from ..errors import SmoothcertError, check, first_line
from ..device import NonFiniteLogits, tune_allocator
from ..smooth import Smooth

@dataclass(frozen=True)
class Recipe:
    """How a worker builds its own Smooth, loading the model from its files (small and picklable).

    Args:
        model: a model spec as for `models.load_model` (file paths absolute: a worker may run elsewhere).
        noise: the noise, e.g. Gaussian(0.25).
        weights: a state dict file, for a factory or a built-in architecture.
        trust: let a .pt2 unpickle more than tensors (as --trust-model).
        device: where the worker runs the model; 'cuda' is the GPU Ray gives the worker.
        amp: None, 'fp16' or 'bf16', as for Smooth.
        compile: run the forward pass through torch.compile, as for Smooth.
        num_classes: the driver's number of classes (checked again by the worker's probe).
        arch_kwargs: passed to a built-in architecture (num_classes, in_channels).
        path: folders put first on the worker's import path (the driver's working folder, for factories).
        denoiser: a denoiser spec as for `denoise.load_denoiser` (None: no denoiser), in front of the model;
            with denoiser_weights and diffusion_range (None: (-1, 1)); it is loaded with `trust` too.
    """

    model: str
    noise: object
    weights: str | None = None
    trust: bool = False
    device: str = "cpu"
    amp: str | None = None
    num_classes: int | None = None
    arch_kwargs: dict = field(default_factory=dict)
    path: tuple[str, ...] = ()
    compile: bool = False
    denoiser: str | None = None
    denoiser_weights: str | None = None
    diffusion_range: tuple[float, float] | None = None

    @classmethod
    def of(cls, model: str, weights: str | None, smoothed: Smooth, *, trust: bool = False,
           denoiser: str | None = None, denoiser_weights: str | None = None, diffusion_range=None,
           **arch_kwargs) -> "Recipe":
        """The recipe of a Smooth the driver loaded with `models.load_model(model, weights, ..., **arch_kwargs)`
        (and `denoise.load_denoiser(denoiser, denoiser_weights, ...)` in front of it): existing paths made
        absolute, a CUDA device mapped to the worker's own GPU."""
        def absolute(p):
            if p is not None and p.startswith("diffusion:"):
                return "diffusion:" + absolute(p.removeprefix("diffusion:"))
            return os.path.abspath(p) if p is not None and os.path.exists(p) else p
        device = "cuda" if smoothed.device.type == "cuda" else str(smoothed.device)
        return cls(absolute(model), smoothed.noise, absolute(weights), trust, device, smoothed.amp,
                   smoothed.num_classes, dict(arch_kwargs), (os.getcwd(),), smoothed.compile, absolute(denoiser),
                   absolute(denoiser_weights), None if diffusion_range is None else tuple(diffusion_range))

    def __call__(self) -> Smooth:
        from ..models import load_model
        model = load_model(self.model, self.weights, self.device, trust=self.trust, **self.arch_kwargs)
        denoiser = None
        if self.denoiser is not None:            # as the driver's --denoiser (cli/denoise.py)
            from ..denoise import load_denoiser
            denoiser = load_denoiser(self.denoiser, self.denoiser_weights, self.device, trust=self.trust,
                                     sigma=getattr(self.noise, "sigma", None),
                                     diffusion_range=self.diffusion_range)
        with warnings.catch_warnings():          # the driver has said it once (amp on a CPU)
            warnings.simplefilter("ignore")
            return Smooth(model, self.noise, num_classes=self.num_classes, device=self.device, amp=self.amp,
                          compile=self.compile, denoiser=denoiser)


@dataclass(frozen=True)
class _Source:
    """What a worker builds its Smooth from, for one run: a token naming the run, the object reference of a Smooth
    or of a make_smooth callable (inside a list, so the worker unpickles it after setting its import path), and
    the folders to put first and last on that path."""

    token: str
    ref: list
    first: tuple[str, ...]
    last: tuple[str, ...]


class _Worker:
    """A Ray actor that lives as long as its executor and builds its Smooth once per run (again after Ray
    restarts it: every call carries the run's _Source)."""

    def __init__(self, threads: int | None):
        self.threads = threads
        self.token, self.smooth, self.identity = None, None, None

    def _build(self, source: _Source) -> None:
        if source.token == self.token:
            return
        import ray
        for folder in reversed(source.first):    # where a factory's module is found, as in the driver
            if os.path.isdir(folder) and folder not in sys.path:
                sys.path.insert(0, folder)
        for folder in source.last:               # where the driver found its modules, after the worker's own
            if os.path.isdir(folder) and folder not in sys.path:
                sys.path.append(folder)
        self.token, self.smooth = None, None
        made = ray.get(source.ref[0])
        smooth = made if isinstance(made, Smooth) else made()
        check(isinstance(smooth, Smooth), f"make_smooth returned {type(smooth).__name__}, not a Smooth")
        if smooth.device.type == "cpu":
            torch.set_num_threads(self.threads or 1)      # the workers are the parallelism
            tune_allocator()
        elif self.threads:
            torch.set_num_threads(self.threads)
        if not isinstance(made, Smooth):         # loaded here: the driver checks it is the same model
            from ..models import fingerprint
            self.identity = fingerprint(smooth.model)
        self.token, self.smooth = source.token, smooth

    def ready(self, source: _Source) -> tuple[int, str | None, str | None]:
        """Build the run's Smooth: (process id, model fingerprint when built from a recipe, error or None)."""
        try:
            self._build(source)
        except Exception as exc:                 # the driver fails with it, in one line
            return os.getpid(), None, first_line(exc)
        return os.getpid(), self.identity, None

    def run(self, source: _Source, job, xs: torch.Tensor, indices: list[int], skipped: frozenset, group: int):
        """Run `job` on whole groups of `group` inputs: (results, error naming the input or None, samples drawn,
        seconds busy, process id). A failing group stops the task; the results before it are returned."""
        from ..jobs.runner import run_locally
        t0 = time.perf_counter()
        self._build(source)
        samples = [0]

        def count(k):
            samples[0] += k
        out, error = [], None
        for start in range(0, len(indices), group):
            members = indices[start:start + group]
            try:
                out.extend(run_locally(self.smooth, job, xs[start:start + group], members, skipped.__contains__,
                                       count))
            except NonFiniteLogits as exc:       # names its input already
                error = str(exc)
                break
            except SmoothcertError as exc:
                error = f"{self._culprit(job, xs[start:start + group], members)}: {exc}"
                break
            except Exception as exc:             # anything else (the model's own errors arrive as SmoothcertError):
                # the rows before it still count
                error = f"{_name(members)}: {type(exc).__name__}: {first_line(exc)}"
                break
        return out, error, samples[0], time.perf_counter() - t0, os.getpid()

    def _culprit(self, job, xs, members: list[int]) -> str:
        """Name the input of a failing group: the first member that fails alone (its noise is the same alone),
        else the whole group."""
        from ..jobs.runner import run_locally
        if len(members) > 1:
            for j, index in enumerate(members):
                try:
                    for _ in run_locally(self.smooth, job, xs[j:j + 1], [index], None, None):
                        pass
                except SmoothcertError:
                    return f"input {index}"
        return f"input {members[0]}" if len(members) == 1 else f"{_name(members)} (one sampling group)"




def _name(indices: list[int]) -> str:
    """Inputs named for a message: 'input 7', 'inputs 4, 5, 6' or 'inputs 4 ... 99 (40 inputs)'."""
    if len(indices) == 1:
        return f"input {indices[0]}"
    if len(indices) <= 4:
        return "inputs " + ", ".join(map(str, indices))
    return f"inputs {indices[0]} ... {indices[-1]} ({len(indices)} inputs)"
