"""Float-sound sampling on the command line: the flags (`--float-sound`, `--no-float-sound`, `--input-grid`) and the
noise a run samples. The default path is the sound one: Gaussian noise on data whose grid is known (the built-in
loaders: digits 16, cifar10 255, 8-bit image folders 255) is drawn float-soundly (smoothcert.noises.sound) unless
--no-float-sound; .npz data declare their grid with --input-grid. Training always uses plain Gaussian noise."""
from __future__ import annotations

import argparse

from ..errors import check


def _grid(text: str) -> int:
    try:
        grid = int(text)
    except ValueError:
        grid = 0
    if not 1 <= grid <= 1 << 24:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {1 << 24:,} (inputs k/G), got {text!r}")
    return grid


def add_float_sound_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--float-sound", action=argparse.BooleanOptionalAction, default=None,
                   help="draw Gaussian noise float-soundly: exactly, on a grid finer than the inputs', added without "
                        "rounding, with a certificate that holds in floating point (README, Floating-point "
                        "soundness). Default: on for data on a known grid (digits, cifar10, 8-bit image folders, or "
                        "--input-grid), off otherwise; --no-float-sound samples as earlier versions did")
    p.add_argument("--input-grid", type=_grid, metavar="G",
                   help="the inputs are k/G for integers k (255 for 8-bit images); needed for float-sound sampling "
                        "of .npz data (the built-in loaders know theirs)")


def sampled_noise(args, noise, data):
    """The noise a run samples: `noise` made float-sound on the data's grid where asked or by default, checked in one
    line: an explicit --float-sound (or --input-grid) needs Gaussian noise and a known or declared grid."""
    from ..noises.sound import float_sound
    wanted, declared = getattr(args, "float_sound", None), getattr(args, "input_grid", None)
    check(not (wanted is False and declared is not None), "--input-grid goes with float-sound sampling, not with "
                                                          "--no-float-sound")
    grid = declared if declared is not None else data.grid
    if wanted is None:        # the default: sound where it can be, and wherever a grid is declared
        wanted = declared is not None or (grid is not None and noise.name == "gaussian")
    if not wanted:
        return noise
    check(noise.name == "gaussian", f"float-sound sampling is for Gaussian noise, not {noise.name} (leave out "
                                    "--float-sound and --input-grid)")
    check(grid is not None, f"float-sound sampling needs the input grid of {data.name}: give --input-grid G (inputs "
                            "k/G, e.g. 255 for 8-bit images) or --no-float-sound")
    return float_sound(noise, grid)
