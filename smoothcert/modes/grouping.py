"""The one grouping table: by how many samples per input each mode groups its inputs (`GROUPING`, read with the
mode's bound arguments), and the group size those give (`group_size`). Inputs that share forward batches form a
sampling group; a distributed run (smoothcert.distributed) cuts its tasks from this same table, so a row does not
depend on where it was computed.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..engine.streams import PIECE
from ..errors import check, check_count

# The per-input samples by which each method groups its inputs (`group_size`), from its bound arguments: the one
# place that says it, so a distributed run (smoothcert.distributed) cuts its tasks into the very same groups.
# The adaptive modes group as for n = PIECE: many inputs share each round's forward batches.
GROUPING = {
    "certify_many": lambda a: [a["n0"], a["n"]],
    "predict_many": lambda a: [a["n"]],
    "certify_nested": lambda a: [a["n0"], max(sample_sizes(a["ns"]))],
    "certify_input_n": lambda a: [a["n0"], PIECE],
    "certify_target": lambda a: [a["n0"], PIECE],
    "certify_soft": lambda a: [a["n0"], a["n"]],
    "confidence": lambda a: [a["n0"], a["n"]],
}


def sample_sizes(ns) -> list[int]:
    """Sample sizes, checked, ascending and without repeats."""
    ns = [ns] if isinstance(ns, int) else list(ns)
    check(len(ns) > 0, "give at least one number of samples")
    for n in ns:
        check_count("n", n)
    return sorted(set(int(n) for n in ns))


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

