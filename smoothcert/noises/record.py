"""How a results file records its noise, and how a noise is rebuilt from that record (recertify, analyze, planning).

The `noise` column holds the noise's name, and for float-sound sampling everything that decides the law the run
drew from besides `scale` (sigma): `gaussian-sound:grid=G:bits=B` (and `:dims=D` when the noise covers another number
of coordinates than the default, which changes its `tv`). `rebuild(cell, scale)` gives back the very noise the run
used, so a re-certified row keeps absorbing the sampler's total-variation distance; `NOISES[name](scale)` would
quietly lose float-sound.
"""
from __future__ import annotations

import re

from ..errors import SmoothcertError
from . import NOISES
from .sound import MAX_DIMS, SoundGaussian

SOUND = "gaussian-sound"
_SOUND_CELL = re.compile(r"gaussian-sound:grid=([1-9][0-9]{0,9}):bits=([0-9]{1,2})(?::dims=([1-9][0-9]{0,12}))?")


def noise_cell(noise) -> str:
    """The `noise` column's text for this noise."""
    if isinstance(noise, SoundGaussian):
        return f"{SOUND}:grid={noise.grid}:bits={noise.bits}" + \
            (f":dims={noise.max_dims}" if noise.max_dims != MAX_DIMS else "")
    return noise.name


def parse_cell(text: str) -> tuple[str, dict]:
    """(the noise's name in NOISES, float-sound settings {grid, bits, max_dims} or {}) of a `noise` cell, checked in
    form only (nothing is built)."""
    if text in NOISES:
        return text, {}
    match = _SOUND_CELL.fullmatch(text)
    if match is None:
        raise SmoothcertError(f"unknown noise {text!r} (known: {', '.join(NOISES)}, or "
                              f"{SOUND}:grid=G:bits=B[:dims=D] for float-sound Gaussian sampling)")
    grid, bits, dims = match.groups()
    return "gaussian", {"grid": int(grid), "bits": int(bits), "max_dims": int(dims) if dims else MAX_DIMS}


def is_float_sound(text: str) -> bool:
    """Whether a `noise` cell records float-sound sampling."""
    return text.startswith(SOUND + ":")


def base_name(text: str) -> str:
    """The noise's name of a `noise` cell ('gaussian' for a float-sound one); the cell itself when unknown."""
    try:
        return parse_cell(text)[0]
    except SmoothcertError:
        return text


def rebuild(text: str, scale: float):
    """The noise a `noise` cell and a `scale` describe (gaussian: sigma; laplace and uniform: lam), float-sound ones
    with their grid, bits and coordinates."""
    name, sound = parse_cell(text)
    if sound:
        return SoundGaussian(scale, **sound)
    return NOISES[name](scale)
