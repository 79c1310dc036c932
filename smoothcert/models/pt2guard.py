"""Loading a .pt2 file: its checks (smoothcert.models.pt2check) first, then torch.export.load under a guard, one-line
errors for every refusal.

While torch.export.load runs, torch.load is forced to weights_only=True (tensors and plain containers only) and
the unrestricted unpicklers (pickle.load(s), pickle.Unpickler, torchbind's _pickle_load_obj) refuse; every
refusal is recorded, so one that torch catches and works around is still seen. torch.export itself falls back to
weights_only=False for sample inputs and unpickles pickled weights and constants unrestricted: a crafted archive
would otherwise run code. Importing a module is refused too unless it is already imported or belongs to torch or a
package torch imports lazily (sympy, mpmath, functorch, and triton, which CUDA builds of torch import while
loading), found outside the current folder; the JSON check refuses the pytree contexts that would name one.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import pickle
import re
import sys
import warnings

import torch

from ..errors import SmoothcertError, first_line
from .pt2check import Refused, check_archive
from .pt2zip import TooLarge, Unreadable

_TORCH_OWN = ("torch", "sympy", "mpmath", "functorch", "triton")


def load_program(path: str, data: bytes, trust: bool = False):
    """The torch.export program in `data` (the bytes of `path`, read once: what is checked is what is loaded)."""
    refusals: list[str] = []
    guard = contextlib.nullcontext() if trust else _weights_only_unpickling(refusals)
    try:
        check_archive(data, trust)
        with _quiet_torch(), guard:
            program = torch.export.load(io.BytesIO(data))
    except Refused as exc:
        refusals.append(str(exc))
    except Unreadable as exc:
        raise SmoothcertError(f"cannot load {path} as a torch.export program (.pt2): {exc}") from None
    except TooLarge as exc:
        raise SmoothcertError(f"{path} is refused: {exc} (a bound that --trust-model does not lift)") from None
    except Exception as exc:
        if not refusals:
            raise SmoothcertError(f"cannot load {path} as a torch.export program (.pt2): {first_line(exc)}") from None
    if refusals:
        raise SmoothcertError(f"{path} holds more than plain tensors and a graph of torch operators ({refusals[0]}); "
                              "loading it could run code, so it is refused: pass --trust-model only if you trust "
                              "its source")
    return program


@contextlib.contextmanager
def _weights_only_unpickling(refusals: list):
    """The guard of the module docstring, for the duration of one torch.export.load."""
    load = torch.load

    def restricted(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return load(f, *args, **kwargs)
        except Exception as exc:
            refusals.append(unpickling_reason(exc))
            raise Refused(refusals[-1]) from None

    def refuse(*args, **kwargs):
        refusals.append("a pickled object that is not a tensor")
        raise Refused(refusals[-1])

    class Refusing:
        def __init__(self, *args, **kwargs):
            refuse()

    import_module = importlib.import_module

    def imported_only(name, package=None):     # a second line behind check_program_json
        try:
            full = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        except (ImportError, ValueError):
            full = name
        parts = full.split(".")
        if full not in sys.modules and (parts[0] not in _TORCH_OWN or "__main__" in parts
                                        or (parts[0] not in sys.modules and _in_current_folder(parts[0]))):
            refusals.append(f"it imports the module {full[:80]!r}")
            raise Refused(refusals[-1])
        return import_module(name, package)

    patches = [(torch, "load", restricted), (torch.serialization, "load", restricted), (pickle, "load", refuse),
               (pickle, "loads", refuse), (pickle, "Unpickler", Refusing), (torch._C, "_pickle_load_obj", refuse),
               (importlib, "import_module", imported_only)]
    patches = [p for p in patches if hasattr(p[0], p[1])]          # what this torch lacks, it cannot call
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _in_current_folder(top: str) -> bool:
    """Whether package `top` would come from the current folder (python -m puts it first on the import path): a
    downloaded model's folder must not supply a 'triton'. Not found at all counts as from there."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return True
    where = (list(spec.submodule_search_locations or []) or [spec.origin]) if spec else [None]
    return where[0] is None or os.path.dirname(os.path.abspath(where[0])) == os.path.abspath(os.getcwd())


@contextlib.contextmanager
def _quiet_torch():
    """torch.export.load logs whole tracebacks at WARNING before raising; our one-line error says it all."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.export.pt2_archive")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def unpickling_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, in a few words (its message is a page long)."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"[Uu]nsupported[^.\n]*", text)
    if found:
        return f"it needs {found.group(1)}" if found.re.pattern.startswith("GLOBAL") else found.group(0).strip()
    return first_line(exc)[:160]
