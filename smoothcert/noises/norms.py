"""The norms a radius is measured in, as results files write them in their `norm` cell: 'l2', 'l1', and
'linf:d=D', the l-inf reading of an l2 radius for inputs of D coordinates (issue 16 item 5; `--norm linf`).

The l-inf reading (Gaussian noise; Kumar, Levine, Goldstein, Feizi 2020, "Curse of Dimensionality on Randomized
Smoothing", show that for p > 2 no i.i.d. smoothing certifies l-p radii shrinking slower with d than this
reading of the Gaussian's l2 radius does, up to a constant; Yang et al. 2020 prove a like limit): every delta
with ||delta||_inf <= r has ||delta||_2 <= sqrt(D) r (each of the D coordinates adds at most r^2 to ||delta||_2^2),
so the l-inf ball of radius r_2 / sqrt(D) lies inside the l2 ball of radius r_2. Whatever an l2 certificate proves
on its ball (the prediction is constant there, with probability >= 1 - alpha) it proves on every subset of it: the
l-inf radius is sound wherever the l2 radius is, with the same bounds and the same alpha. The inclusion is tight
(the corners (+-r, ..., +-r) lie on the l2 sphere), so the l-inf radius is as tight as the l2 one is towards a
corner; it shrinks as 1/sqrt(D), which is why l-inf certificates of l2 smoothing are small on large inputs.

D is the number of coordinates of one input (every channel and pixel: the space the noise is added in; for a
denoised classifier, the denoiser's input). A row stores it in its norm cell, 'linf:d=784', so that `recertify`
recomputes the reading from the row alone; the API and the CLI take a bare 'linf' and fill D in from the inputs.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import SmoothcertError, check

LINF = "linf"
MAX_DIMS = 1 << 40          # more coordinates than any input: a larger D in a file is an error, not an input


def parse(norm: str) -> tuple[str, int | None]:
    """(kind, D): ('linf', D) for 'linf:d=D', ('linf', None) for a bare 'linf' (D not known yet), (norm, None) for
    any other norm. A malformed 'linf:...' is refused in one line."""
    check(isinstance(norm, str), f"a norm must be a name such as 'l2', got {norm!r}")
    if not norm.startswith(LINF + ":"):
        return norm, None
    text = norm[len(LINF) + 1:]
    try:
        dims = int(text[2:]) if text.startswith("d=") and text[2:].isdigit() else None
    except ValueError:
        dims = None
    check(dims is not None and 1 <= dims <= MAX_DIMS, f"norm {norm!r}: the l-inf reading is written 'linf:d=D', D "
                                                       f"the input's number of coordinates (an integer >= 1)")
    return LINF, dims


def kind(norm: str) -> str:
    """'l2', 'l1' or 'linf' (a 'linf:d=D' without its dimension)."""
    return parse(norm)[0]


def dims_of(xs) -> int | None:
    """D of a batch of inputs (N, *input_shape): the number of coordinates of one input (None for what has no
    shape: the caller refuses it)."""
    shape = getattr(xs, "shape", None)
    return None if shape is None or len(shape) < 1 else int(np.prod(tuple(shape[1:]), dtype=np.int64))


def with_dims(norm: str | None, dims: int | None) -> str | None:
    """`norm` with the input dimension filled in: 'linf' -> 'linf:d=dims'; a 'linf:d=D' is checked to have D == dims
    (a radius read for other inputs would be wrong); any other norm (and None) unchanged, as is anything when dims
    is None."""
    if norm is None or dims is None:
        return norm
    name, given = parse(norm)
    if name != LINF:
        return norm
    if given is not None and given != dims:
        raise SmoothcertError(f"norm {norm!r} is for inputs of {given:,} coordinates, but these have {dims:,}")
    return f"{LINF}:d={int(dims)}"


def read(radius_l2, norm: str):
    """The radius in `norm` of an l2 radius: r_2 / sqrt(D) for 'linf:d=D' (the module docstring's ball inclusion),
    r_2 itself for 'l2' and 'l1' (||d||_2 <= ||d||_1: the l1 ball sits inside the l2 ball of the same radius)."""
    name, dims = parse(norm)
    if name != LINF:
        return radius_l2
    if dims is None:
        raise SmoothcertError("gaussian noise cannot certify the 'linf' norm without the input dimension D: the "
                              "l-inf reading of an l2 radius is r_2 / sqrt(D), norm 'linf:d=D' (Smooth and the CLI "
                              "fill D in from the inputs)")
    return np.asarray(radius_l2, dtype=np.float64) / math.sqrt(dims)


def label(norm: str | None) -> str:
    """A plot's axis label: 'ℓ2 radius', 'ℓ1 radius', 'ℓ∞ radius (d = 784)'."""
    if not norm:
        return "radius"
    name, dims = parse(norm)
    if name == LINF:
        return "ℓ∞ radius" + (f" (d = {dims:,})" if dims else "")
    return f"ℓ{norm[1:]} radius" if norm.startswith("l") else f"{norm} radius"
