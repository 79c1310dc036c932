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

worker.py holds what runs on a worker (Recipe, the actor); executor.py the driver (RayExecutor); cluster.py
reaching a cluster within a deadline. This is the only package that imports Ray, and only when a RayExecutor starts (`pip install 'smoothcert[ray]'`).
"""
from .cluster import RAY_MISSING, require_ray
from .executor import RayExecutor, TaskStats
from .worker import Recipe

__all__ = ["RAY_MISSING", "RayExecutor", "Recipe", "TaskStats", "require_ray"]
