"""The driver of a Ray run (RayExecutor): it starts the workers, cuts the inputs into tasks of whole sampling groups,
sends them, and hands the rows back in input order; the results file stays with the caller."""
from __future__ import annotations

import inspect
import logging
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass

import torch

from ..errors import SmoothcertError, check, check_count, first_line
from ..modes import GROUPING, group_size
from ..smooth import Smooth
from .cluster import join, require_ray, worker_count
from .worker import _Source, _Worker, _name

TASKS_PER_WORKER = 2      # in flight on each worker: one running, one queued behind it, so no worker waits
TASK_BATCHES = 32         # a task spans at least this many forward batches (per-task cost: a few ms) ...
TASKS_AHEAD = 4           # ... unless that would leave fewer than this many tasks per worker
TASK_RETRIES = 3          # runs of a task after its worker died, before the run fails
START_TIMEOUT = 300.0     # seconds for every worker to start and build its model

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
        from ..jobs.runner import Job
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
                from ..models import fingerprint
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
