"""Certify or predict a data set across a Ray cluster, row for row the same as a run in one process.

    from smoothcert.distributed import RayExecutor
    with RayExecutor(workers=2) as executor:         # a local cluster of 2 workers; RayExecutor("HOST:6379") joins one
        certify_dataset(smoothed, data, indices, "out.tsv", n0=100, n=100_000, alpha=0.001, batch_size=400,
                        executor=executor)

The process that calls (the driver) owns the results file: it writes, flushes and resumes it exactly as a local
run does (`jobs.runner.to_files`). The workers only compute. Each is a Ray actor that builds its `Smooth` once and keeps
it: from a picklable `Recipe` (each worker loads the model from its files itself; what the CLI's `--ray` uses)
or, by default, from the driver's `Smooth` shipped once through Ray's object store.

Why a row does not depend on where it was computed: an input's noise comes from its own streams, seeded by
(seed, input index, stage); inputs that share forward batches form sampling groups, which are cut here exactly
as `modes.common.groups` cuts them in one process (`modes.group_size` of the same batch size and sample sizes); a
task is one or more whole, consecutive groups (the last may be the partial last group); and the batch size is
fixed for the run (`batch_size=None` is resolved once, on the driver). Tasks whose inputs are all in the file
already are not sent; the others get the skip set, so their groups are sampled whole, as in a resumed local run.

Faults: a worker that dies (killed, out of memory) is restarted by Ray and its tasks are run again
(`max_task_retries`). An input that fails (non-finite logits) stops the run with one line naming it, after
every row before it is written. Nothing here changes a row: the driver decides what runs, the workers only
sample.

This is the only module that imports Ray, and only when a RayExecutor starts (`pip install 'smoothcert[ray]'`).
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import secrets
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch

from .cluster import join, worker_count
from .errors import SmoothcertError, check, check_count, first_line
from .device import NonFiniteLogits, tune_allocator
from .modes import GROUPING, group_size
from .smooth import Smooth

RAY_MISSING = "Ray is not installed: pip install 'smoothcert[ray]'"

# The arguments of each Smooth method that give an input's samples per stage (their sum sizes its group). A new
# mode that Ray should run registers its method here; anything else is refused rather than grouped wrongly.

TASKS_PER_WORKER = 2      # in flight on each worker: one running, one queued behind it, so no worker waits
TASK_BATCHES = 32         # a task spans at least this many forward batches (per-task cost: a few ms) ...
TASKS_AHEAD = 4           # ... unless that would leave fewer than this many tasks per worker
TASK_RETRIES = 3          # runs of a task after its worker died, before the run fails
START_TIMEOUT = 300.0     # seconds for every worker to start and build its model


def require_ray():
    """The `ray` module, or a SmoothcertError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise SmoothcertError(RAY_MISSING) from None
    return ray


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

    @classmethod
    def of(cls, model: str, weights: str | None, smoothed: Smooth, *, trust: bool = False, **arch_kwargs) -> "Recipe":
        """The recipe of a Smooth the driver loaded with `models.load_model(model, weights, ..., **arch_kwargs)`:
        existing paths made absolute, a CUDA device mapped to the worker's own GPU."""
        def absolute(p):
            return os.path.abspath(p) if p is not None and os.path.exists(p) else p
        device = "cuda" if smoothed.device.type == "cuda" else str(smoothed.device)
        return cls(absolute(model), smoothed.noise, absolute(weights), trust, device, smoothed.amp,
                   smoothed.num_classes, dict(arch_kwargs), (os.getcwd(),), smoothed.compile)

    def __call__(self) -> Smooth:
        from .models import load_model
        model = load_model(self.model, self.weights, self.device, trust=self.trust, **self.arch_kwargs)
        with warnings.catch_warnings():          # the driver has said it once (amp on a CPU)
            warnings.simplefilter("ignore")
            return Smooth(model, self.noise, num_classes=self.num_classes, device=self.device, amp=self.amp,
                          compile=self.compile)


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
            from .models import fingerprint
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
        from .jobs.runner import run_locally
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
        from .jobs.runner import run_locally
        if len(members) > 1:
            for j, index in enumerate(members):
                try:
                    for _ in run_locally(self.smooth, job, xs[j:j + 1], [index], None, None):
                        pass
                except SmoothcertError:
                    return f"input {index}"
        return f"input {members[0]}" if len(members) == 1 else f"{_name(members)} (one sampling group)"


@dataclass(frozen=True)
class TaskStats:
    """What the last run of a RayExecutor did: tasks, rows, noisy samples, wall seconds from the first task sent
    to the last result, and seconds the workers spent inside tasks (summed over workers)."""

    workers: int
    tasks: int
    rows: int
    samples: int
    seconds: float
    busy_seconds: float
    pids: frozenset = frozenset()       # the worker processes that ran tasks (a restarted worker has a new one)


class RayExecutor:
    """An executor for `jobs.certify_dataset` / `jobs.predict_dataset` that runs the job on a Ray cluster.

    Args:
        address: a Ray cluster's address (ray.init(address)); None starts a local cluster of `workers` CPUs
            (a Ray already initialised in this process is used as it is).
        workers: how many workers (actors); None: one per CPU of the cluster (per GPU with num_gpus).
        num_gpus: GPUs per worker (1: one worker per GPU; its device 'cuda' is that GPU).
        make_smooth: a picklable callable, run once on each worker, that returns its Smooth (e.g. a Recipe);
            None ships the driver's Smooth to the workers once.
        threads: torch threads per worker; None: 1 on a CPU (workers are the parallelism), torch's default on GPUs.
        task_groups: sampling groups per task; None: enough for TASK_BATCHES forward batches, fewer when that
            would leave under TASKS_AHEAD tasks per worker.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, num_gpus: float = 0,
                 make_smooth=None, threads: int | None = None, task_groups: int | None = None):
        require_ray()
        for name, value in (("workers", workers), ("threads", threads), ("task_groups", task_groups)):
            if value is not None:
                check_count(name, value)
        check(isinstance(num_gpus, (int, float)) and num_gpus >= 0, f"num_gpus must be >= 0, got {num_gpus!r}")
        check(make_smooth is None or callable(make_smooth), "make_smooth must be a callable that returns a Smooth")
        self.address, self.workers, self.num_gpus = address, workers, num_gpus
        self.make_smooth, self.threads, self.task_groups = make_smooth, threads, task_groups
        self.started = False            # whether this executor called ray.init (and so calls ray.shutdown)
        self.actors: list = []          # the workers, started by the first run and kept until close()
        self.pids: list[int] = []       # their processes, as they were when the last run started
        self.stats: TaskStats | None = None

    # -- the cluster ------------------------------------------------------------------------------
    def start(self) -> "RayExecutor":
        """Connect to the cluster (or start a local one); called by the first run if not before."""
        ray = require_ray()
        if not ray.is_initialized():
            quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            try:
                if self.address is None:
                    cpus = os.cpu_count() or 1
                    worker_count({"CPU": cpus, "GPU": torch.cuda.device_count()}, self.workers, self.num_gpus,
                                 "this machine")
                    ray.init(address="local", num_cpus=self.workers or cpus, **quiet)
                else:
                    join(ray, self.address, **quiet)
            except SmoothcertError:
                raise
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local cluster"
                raise SmoothcertError(f"cannot start Ray on {where}: {first_line(exc)}") from None
            self.started = True
        try:
            self.workers = worker_count(ray.cluster_resources(), self.workers, self.num_gpus)
        except SmoothcertError:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the workers, and shut Ray down if this executor started it."""
        if self.started:                         # which stops the workers too, quietly
            require_ray().shutdown()
            self.started, self.actors = False, []
        self._stop_workers()

    def __enter__(self) -> "RayExecutor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        where = self.address or ("a local Ray cluster" if self.started else "the Ray cluster of this process")
        return f"{self.workers} Ray worker{'s' * (self.workers != 1)} on {where}"

    # -- the executor -----------------------------------------------------------------------------
    def __call__(self, smoothed: Smooth, job, xs: torch.Tensor, indices, skip=None, on_batch=None):
        """Run `job` (a jobs.Job) over xs on the workers; yield its results in index order, for the inputs not
        skipped (skip(index) True: already in the file)."""
        check(job.method in GROUPING, f"the Ray executor cannot run {job.method!r}: it does not know how that "
                                      "method groups its inputs (smoothcert.modes.GROUPING)")
        indices = [int(i) for i in indices]
        check(isinstance(xs, torch.Tensor) and len(xs) == len(indices), "xs must be a tensor with one row per index")
        smoothed.check_inputs(xs, indices)
        job, sizes, batch_size = self._fixed(smoothed, job, xs)
        group = group_size(batch_size, sizes, len(xs))
        skipped = {i for i in indices if skip(i)} if skip is not None else set()
        self.start()
        tasks = self._tasks(indices, skipped, group, sum(sizes), batch_size)
        return self._stream(smoothed, job, xs, indices, skipped, group, tasks, on_batch)

    def _fixed(self, smoothed: Smooth, job, xs):
        """The job with its batch size and seed fixed on the driver (the same for every worker), its samples per
        input and stage, and its batch size."""
        from .jobs.runner import Job
        method = getattr(type(smoothed), job.method)
        try:
            bound = inspect.signature(method).bind(smoothed, xs, *job.args, **job.kwargs)
        except TypeError as exc:
            raise SmoothcertError(f"bad arguments for {job.method}: {exc}") from None
        bound.apply_defaults()
        given = bound.arguments
        check(given.get("generator") is None, "a generator cannot be shared by Ray workers: pass seed= instead")
        if "seed" in given and given["seed"] is None:      # one fresh seed for the whole run, not one per task
            given["seed"] = secrets.randbits(63)
        if given.get("batch_size") is None:                # chosen once, by the driver, as a local run would
            given["batch_size"] = smoothed.batch_size(xs.shape[1:], None)
        for name in ("indices", "skip", "on_batch"):
            given.pop(name, None)
        sizes = GROUPING[job.method](given)
        for k in sizes:
            check_count("samples per input", k, 0)
        check_count("batch size", given["batch_size"])
        args = bound.args[2:]
        return Job(job.method, tuple(args), dict(bound.kwargs)), sizes, given["batch_size"]

    def _tasks(self, indices, skipped, group: int, per_input: int, batch_size: int) -> list[tuple[int, int]]:
        """Tasks as (start, stop) positions: whole consecutive groups; those with every input done are left out."""
        groups = math.ceil(len(indices) / group)
        per_task = self.task_groups or max(1, min(math.ceil(TASK_BATCHES * batch_size / (group * per_input)),
                                                  groups // (TASKS_AHEAD * self.workers)))
        step = per_task * group
        return [(a, min(a + step, len(indices))) for a in range(0, len(indices), step)
                if any(i not in skipped for i in indices[a:a + step])]

    def _stream(self, smoothed, job, xs, indices, skipped, group, tasks, on_batch):
        ray = require_ray()
        rows = samples = 0
        busy, pids = 0.0, set()
        pending, done = {}, {}
        t0 = time.perf_counter()
        try:
            if tasks:
                source = self._start_workers(smoothed)   # held here until the run ends: restarts read it
                t0 = time.perf_counter()
            load = [0] * len(self.actors)
            sent = given = 0
            while given < len(tasks):
                while sent < len(tasks) and sent - given < TASKS_AHEAD * len(load) and min(load) < TASKS_PER_WORKER:
                    a = load.index(min(load))
                    start, stop = tasks[sent]
                    members = indices[start:stop]
                    # a copy: a pickled slice of a tensor would carry the whole data set's storage along
                    ref = self.actors[a].run.remote(source, job, xs[start:stop].clone(), members,
                                                    frozenset(i for i in members if i in skipped), group)
                    pending[ref] = (sent, a)
                    load[a] += 1
                    sent += 1
                if given not in done:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        k, a = pending.pop(ref)
                        load[a] -= 1
                        done[k] = self._outcome(ray, ref, indices[slice(*tasks[k])])
                        samples += done[k][2]
                        busy += done[k][3]
                        pids.add(done[k][4])
                        if on_batch is not None and done[k][2]:
                            on_batch(done[k][2])
                    continue
                results, error = done.pop(given)[:2]
                given += 1
                for r in results:
                    rows += 1
                    yield r
                if error:
                    raise SmoothcertError(error)
        finally:
            self.stats = TaskStats(len(self.actors), len(tasks), rows, samples, time.perf_counter() - t0, busy,
                                   frozenset(pids) - {0})
            for ref in pending:                  # stopped early: their queued work must not hold up the next run
                ray.cancel(ref)                  # (a task already running on a worker finishes, unread)

    def _outcome(self, ray, ref, members: list[int]):
        """A task's result, or its failure as (no results, one-line error naming its inputs, ...)."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:          # raised in the worker, beyond a SmoothcertError
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            return [], f"{_name(members)}: a Ray worker raised {type(cause).__name__}: {first_line(cause)}", 0, 0.0, 0
        except ray.exceptions.RayError as exc:              # the worker died more than TASK_RETRIES times, ...
            return [], (f"{_name(members)}: the Ray worker running them failed ({type(exc).__name__}; a task is "
                        f"retried {TASK_RETRIES} times): {first_line(exc)}"), 0, 0.0, 0

    def _start_workers(self, smoothed: Smooth) -> _Source:
        """Start the workers (on the first run) and have each build this run's Smooth; return the run's source,
        or raise a SmoothcertError saying why a worker could not build it."""
        ray = require_ray()
        if self.make_smooth is None:
            try:
                ref = ray.put(smoothed)
            except Exception as exc:
                raise SmoothcertError(f"cannot send the model to the Ray workers ({first_line(exc)}); give RayExecutor "
                                      "make_smooth=, e.g. a Recipe, so each worker loads it itself") from None
        else:
            ref = ray.put(self.make_smooth)
        source = _Source(secrets.token_hex(8), [ref], tuple(getattr(self.make_smooth, "path", ())),
                         tuple([os.getcwd(), *sys.path]))
        if not self.actors:
            remote = ray.remote(num_cpus=1, num_gpus=self.num_gpus, max_restarts=-1,
                                max_task_retries=TASK_RETRIES)(_Worker)
            self.actors = [remote.remote(self.threads) for _ in range(self.workers)]
        try:
            refs = [a.ready.remote(source) for a in self.actors]
            ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=START_TIMEOUT)
            check(not waiting, f"only {len(ready)} of {len(refs)} Ray workers started within {START_TIMEOUT:.0f} s "
                               f"(each needs 1 CPU{f' and {self.num_gpus} GPU' if self.num_gpus else ''}; the cluster "
                               f"has {ray.cluster_resources()})")
            started = ray.get(refs)
            for _, _, error in started:
                check(error is None, f"a Ray worker cannot build the smoothed classifier: {error}")
            if self.make_smooth is not None:
                from .models import fingerprint
                ours = fingerprint(smoothed.model)
                for _, theirs, _ in started:
                    check(theirs == ours, f"a Ray worker loaded another model than this process ({theirs}, here "
                                          f"{ours}): every node must see the same model and weights files")
        except BaseException:
            self._stop_workers()
            raise
        self.pids = [pid for pid, _, _ in started]
        return source

    def _stop_workers(self) -> None:
        if self.actors:
            ray = require_ray()
            if ray.is_initialized():             # else they went with the cluster
                for actor in self.actors:
                    ray.kill(actor)
            self.actors = []


def _name(indices: list[int]) -> str:
    """Inputs named for a message: 'input 7', 'inputs 4, 5, 6' or 'inputs 4 ... 99 (40 inputs)'."""
    if len(indices) == 1:
        return f"input {indices[0]}"
    if len(indices) <= 4:
        return "inputs " + ", ".join(map(str, indices))
    return f"inputs {indices[0]} ... {indices[-1]} ({len(indices)} inputs)"
