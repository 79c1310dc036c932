"""The `smoothcert` command line: argument parsing and one-line errors over the Python API, nothing else.

parser.py holds every command's arguments; runs.py the commands that write results files (certify, predict,
confidence, recertify); analyze.py those that read them (analyze, plan); tools.py train, bench-latency and demo;
denoise.py --denoiser (loaded for every command that builds a Smooth) and train-denoiser."""
from __future__ import annotations

import sys

from ..device import tune_allocator
from ..errors import SmoothcertError
from .analyze import cmd_analyze, cmd_plan
from .denoise import cmd_train_denoiser
from .parser import build_parser
from .runs import cmd_certify, cmd_confidence, cmd_predict, cmd_recertify
from .tools import cmd_bench_latency, cmd_demo, cmd_train

__all__ = ["COMMANDS", "build_parser", "main", "tune_allocator"]

COMMANDS = {"certify": cmd_certify, "predict": cmd_predict, "train": cmd_train, "recertify": cmd_recertify,
            "analyze": cmd_analyze, "demo": cmd_demo, "bench-latency": cmd_bench_latency,
            "confidence": cmd_confidence, "plan": cmd_plan, "train-denoiser": cmd_train_denoiser}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()
    try:
        COMMANDS[args.command](args)
    except SmoothcertError as exc:
        print(f"smoothcert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsmoothcert {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:  # files we could not read or write, bad values from libraries
        print(f"smoothcert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0

