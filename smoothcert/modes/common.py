"""The loop every mode shares: the run's seed, one stream per input and stage, inputs cut into sampling groups (each
with its engine, `Smooth.prepare`), the counts of fixed-size stages, a soft run's selection stage, and a Verdict's
row as a Certificate. A mode takes the Smooth it runs for (its `prepare` and `noise`): nothing here keeps state.
"""
from __future__ import annotations

import secrets
import time
from typing import Sequence

import numpy as np
import torch

from ..certificates.soft import choose
from ..engine.sampler import NamedSampler
from ..engine.statistics import ScoreSums, Votes
from ..engine.streams import SELECTION, Request, Stream, make_stream
from ..errors import SmoothcertError, check
from .grouping import group_size
from .outcomes import Certificate


def run_seed(seed, generator) -> tuple[int | None, Stream | None]:
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


def streams(members: Sequence[int], stage: int, seed: int | None, generator: Stream | None, device) -> list[Stream]:
    """One stream per input for a stage; with a generator, the call's one stream (`run_seed`), shared by every
    input and stage."""
    if generator is not None:
        return [generator] * len(members)
    return [make_stream(seed, i, stage, device) for i in members]


def groups(smooth, xs, per_input: Sequence[int], batch_size, indices, skip):
    """(sampler, inputs of the group, their indices, the positions within it not skipped), group by group."""
    if not isinstance(xs, torch.Tensor):
        raise SmoothcertError(f"inputs must be a torch.Tensor, got {type(xs).__name__}")
    if len(xs) == 0:
        return
    indices = list(range(len(xs))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(xs):
        raise SmoothcertError(f"{len(indices)} indices for {len(xs)} inputs")
    sampler = smooth.prepare(xs, batch_size, indices)
    skip = skip or (lambda i: False)
    group = group_size(sampler.batch_size, per_input, len(xs))
    for start in range(0, len(xs), group):
        members = indices[start:start + group]
        keep = [j for j, i in enumerate(members) if not skip(i)]
        if keep:
            yield NamedSampler(sampler, members), xs[start:start + group], members, keep


def grouped_counts(smooth, xs, stages, batch_size, seed, indices, generator, skip, on_batch):
    """Sample inputs group by group; yield (indices, [counts (G, K) per stage], seconds per input) for the
    members not skipped."""
    for sampler, chunk, members, keep in groups(smooth, xs, [k for _, k in stages], batch_size, indices, skip):
        t0 = time.perf_counter()
        per_stage = [streams(members, stage, seed, generator, sampler.device) for stage, _ in stages]
        requests = [Request(j, per_stage[s][j], k) for j in range(len(members)) for s, (_, k) in enumerate(stages)]
        counts = sampler.counts(chunk, requests, on_batch)
        counts = counts.reshape(len(members), len(stages), -1)[keep]
        seconds = (time.perf_counter() - t0) / len(members)
        yield [members[j] for j in keep], [counts[:, s] for s in range(len(stages))], seconds


def soft_selection(sampler, chunk, members, n0, seed, generator, on_batch):
    """The selection stage of a soft run: votes, per-class score sums, and A = the class of largest sum."""
    sel = streams(members, SELECTION, seed, generator, sampler.device)
    c0, (s0, _) = sampler.run(chunk, [Request(j, sel[j], n0) for j in range(len(members))],
                              [Votes(), ScoreSums()], on_batch)
    return c0, s0, choose(s0)


def as_certificate(index, v, j, c0, c1, alpha, name, norm, seconds, seed) -> Certificate:
    """Row j of a Verdict as a Certificate."""
    return Certificate(index, int(v.prediction[j]), float(v.radius[j]), float(v.p_lower[j]), float(v.p_upper[j]),
                       c0, c1, alpha, name, norm, seconds, int(v.candidate[j]), str(v.reason[j]), seed)
