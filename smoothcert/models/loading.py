"""Loading a base classifier from a spec (`load_model`: a .pt2 program, a TorchScript file, a factory or a built-in
architecture with a state dict), saving one (`save_model`), telling models apart (`fingerprint`) and eval mode.

Model specs accepted by `load_model`:
    model.pt2                       a `torch.export` program (the current PyTorch format), checked and loaded by
                                    smoothcert.models.pt2guard
    model.pt                        a TorchScript file, with trust=True only (torch.jit is deprecated, and such a
                                    file runs its own code when loaded and run)
    package.module:factory          a callable returning an nn.Module, with --weights state_dict.pt
    digits-cnn | cifar-resnet20     a built-in architecture, with --weights state_dict.pt
"""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import SmoothcertError, check, first_line
from . import pt2zip
from .architectures import ARCHITECTURES, build
from .pt2guard import load_program, unpickling_reason

MAX_STATIC_BATCH = 65_536        # a program exported with a larger fixed batch is refused: every chunk is padded to it


def load_model(spec: str, weights: str | None = None, device="cpu", *, trust: bool = False,
               **arch_kwargs) -> nn.Module:
    """Load a base classifier from a spec (see the module docstring), in eval mode on `device`.

    Args:
        spec: model.pt2, model.pt, package.module:factory or a built-in architecture name.
        weights: a state dict file, for a factory or an architecture.
        device: where the model goes.
        trust: let torch load a .pt2 unchecked (its pickles and program can run code; see smoothcert.models.pt2check;
            the archive's size bounds, smoothcert.models.pt2zip, hold regardless), or load a TorchScript file at all.
        arch_kwargs: passed to a built-in architecture (num_classes is read from the weights when they have it).
    """
    is_file = spec.endswith(".pt2") or not (spec in ARCHITECTURES or ":" in spec) or os.path.exists(spec)
    check(weights is None or not is_file,
          "--weights goes with an architecture name or package.module:factory, not with a model file")
    if spec.endswith(".pt2"):
        model = _load_exported(spec, trust)
    elif spec in ARCHITECTURES or (":" in spec and not os.path.exists(spec)):
        check(weights is not None, f"--model {spec} needs --weights (a state dict file)")
        state = read_state_dict(weights)
        if spec in ARCHITECTURES:
            model = build(spec, **{**arch_kwargs, "num_classes": _classes_in(spec, state, arch_kwargs)})
        else:
            model = _from_factory(spec)
        _fit_weights(model, state, weights)
    else:
        model = _load_torchscript(spec, trust)
    return eval_mode(model.to(device))


def _classes_in(arch: str, state: Mapping, arch_kwargs: dict) -> int:
    """The number of classes of a built-in architecture's weights (its last Linear layer), so nothing the size of
    the data's labels is built before the labels are checked against the model."""
    probe = build(arch, **{**arch_kwargs, "num_classes": 1})
    last = [name for name, m in probe.named_modules() if isinstance(m, nn.Linear)][-1]
    w = state.get(f"{last}.weight")
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 2 else int(arch_kwargs.get("num_classes", 10))


def fingerprint(model: nn.Module) -> str:
    """A short hash that tells one model from another: every tensor of its state dict (names, dtypes, shapes and
    bytes, in name order, so a module and its torch.export program agree), or, for a model without tensors, its
    structure (generated code or module tree; a plain function: its name and bytecode only). Results files record
    it, so a resumed run refuses rows made by another model."""
    h = hashlib.sha256()
    state = model.state_dict() if isinstance(model, nn.Module) else {}
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if not state:
        inner = model.module if isinstance(model, StaticBatch) else model
        structure, code = getattr(inner, "code", None), getattr(inner, "__code__", None)
        if not isinstance(structure, str):
            structure = (f"{inner.__qualname__}:{code.co_consts!r}:{code.co_code.hex()}" if code is not None
                         else repr(inner))
        h.update(structure.encode())
    return "sha256:" + h.hexdigest()[:20]


def eval_mode(model: nn.Module) -> nn.Module:
    """Put a model in eval mode; an exported program was frozen in the mode it was exported in."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


def _check_file(path: str, what: str) -> None:
    check(os.path.isfile(path), f"{what} file not found: {path}")
    check(os.access(path, os.R_OK), f"{what} file is not readable: {path}")


def _load_exported(path: str, trust: bool = False) -> nn.Module:
    _check_file(path, "model")
    with open(path, "rb") as f:
        data = f.read()                           # read once: what is checked is what is loaded
    check(len(data) > 0, f"model file {path} is empty")
    program = load_program(path, data, trust)
    batch = _static_batch(program)
    if batch is not None and batch > MAX_STATIC_BATCH:
        raise SmoothcertError(f"{path} was exported with a fixed batch size of {batch:,}, over the "
                              f"{MAX_STATIC_BATCH:,} smoothcert pads every chunk of inputs to; export with a dynamic "
                              "batch instead: torch.export.export(model, (x,), dynamic_shapes=({0: "
                              "torch.export.Dim('batch')},))")
    module = program.module()
    if batch is None:
        return module
    print(f"smoothcert: {path} was exported with a fixed batch size of {batch}: every forward pass runs in chunks "
          f"of {batch} (often tens of times slower); export with a dynamic batch instead: torch.export.export(model, "
          "(x,), dynamic_shapes=({0: torch.export.Dim('batch')},))", file=sys.stderr)
    return StaticBatch(module, batch)


def _static_batch(program) -> int | None:
    """The fixed batch size of an exported program's first input, or None if its batch dimension is dynamic."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            val = node.meta.get("val")
            if val is not None and val.ndim > 0 and isinstance(val.shape[0], int):
                return int(val.shape[0])
            return None
    return None


class StaticBatch(nn.Module):
    """Runs a program exported with a fixed batch size on any batch, in chunks (the last one padded)."""

    def __init__(self, module: nn.Module, batch: int):
        super().__init__()
        self.module, self.batch = module, batch

    def forward(self, x):
        outs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            pad = self.batch - chunk.shape[0]
            if pad:
                chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
            outs.append(self.module(chunk)[: self.batch - pad])
        return torch.cat(outs)


def _load_torchscript(path: str, trust: bool) -> nn.Module:
    """A TorchScript file, only if trusted: its pickled constants run code (__setstate__) when torch.jit.load reads
    them, and its compiled code may call any TorchScript builtin (file-creating ops among them) when run."""
    _check_file(path, "model")
    if not trust:
        try:
            with zipfile.ZipFile(path) as zf:
                scripted = any("/code/" in f"/{name}" for name in zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            scripted = False
        check(not scripted, f"{path} is a TorchScript file (torch.jit, deprecated in torch 2.13), which runs its own "
                            "code when loaded and run, so it is refused: pass --trust-model only if you trust its "
                            "source, or save the model once as a torch.export program from its Python code "
                            "(smoothcert.models.save_model(model, 'model.pt2', example_input))")
        raise SmoothcertError(f"cannot load {path}: it is neither a torch.export program (.pt2) nor a TorchScript "
                              "file; a state dict needs --model ARCH_OR_FACTORY --weights FILE")
    with warnings.catch_warnings():  # torch.jit is deprecated in 2.13; the file is still the user's model
        warnings.simplefilter("ignore")
        try:
            return torch.jit.load(path, map_location="cpu")
        except Exception as exc:
            raise SmoothcertError(
                f"cannot load {path} as a TorchScript model ({first_line(exc)}); a .pt2 file is a torch.export "
                "program, and a state dict needs --model ARCH_OR_FACTORY --weights FILE") from exc


def _from_factory(spec: str) -> nn.Module:
    """Call package.module:factory with no arguments; the current directory is on the import path while it is
    imported and called (as with `python -m`), so a factory in ./pkg/mod.py is found from the folder that holds
    pkg; it is taken off again after, so later imports do not search it."""
    module_name, _, attr = spec.partition(":")
    check(module_name and attr, f"a factory is given as package.module:function, got {spec!r}")
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return _call_factory(spec, module_name, attr)
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def _call_factory(spec: str, module_name: str, attr: str) -> nn.Module:
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SmoothcertError(f"cannot find factory {spec!r}: {first_line(exc)}") from None
    except Exception as exc:                      # a syntax error, or the module raised while importing
        raise SmoothcertError(f"cannot import {module_name!r} for factory {spec!r}: {type(exc).__name__}: "
                              f"{first_line(exc)}") from None
    check(callable(factory), f"{spec!r} is a {type(factory).__name__}, not a function that returns a model")
    try:
        model = factory()
    except TypeError as exc:
        raise SmoothcertError(f"factory {spec!r} must be callable with no arguments and return a torch.nn.Module "
                              f"(wrap it in a function of your own): {first_line(exc)}") from None
    except Exception as exc:
        raise SmoothcertError(f"factory {spec!r} raised {type(exc).__name__}: {first_line(exc)}") from None
    check(isinstance(model, nn.Module), f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_state_dict(path: str) -> dict:
    """A plain state dict (name -> tensor), read with weights_only=True (no code runs), from a torch.save zip
    archive whose entries inflate within pt2zip's bound, with no tensor declaring more elements than its storage
    holds (a stride-0 view of one float declaring 20,000,000 x 64 would build a 5 GB layer)."""
    _check_file(path, "weights")
    with open(path, "rb") as f:
        data = f.read()                           # read once: what is bounded is what is loaded
    try:
        pt2zip.bound(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pt2zip.TooLarge as exc:
        raise SmoothcertError(f"weights {path} are refused: {exc}") from None
    except Exception as exc:
        why = (f"it holds pickled objects beyond tensors ({unpickling_reason(exc)}: a whole pickled model?); save "
               "only the weights with torch.save(model.state_dict(), path)") if isinstance(exc, pickle.UnpicklingError) \
            else first_line(exc)
        raise SmoothcertError(f"cannot read weights {path} as a plain state dict: {why}") from None
    del data
    if not (isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        found = f"keys {', '.join(map(str, list(state)[:4]))}" if isinstance(state, Mapping) else type(state).__name__
        raise SmoothcertError(f"weights file {path} is not a plain state dict of tensors (found {found}); "
                              "save it with torch.save(model.state_dict(), path)")
    for name, t in state.items():
        check(t.numel() * t.element_size() <= t.untyped_storage().nbytes(),
              f"weights {path}: tensor {str(name)[:80]} declares {t.numel():,} elements of shape {tuple(t.shape)} over "
              f"a storage of {t.untyped_storage().nbytes():,} bytes (a view that repeats its values), which a saved "
              "state dict never holds")
    return dict(state)


def _fit_weights(model: nn.Module, state: Mapping, path: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SmoothcertError(f"weights {path} do not fit the model: {first_line(exc)} ...") from None


def save_model(model: nn.Module, path: str, example: torch.Tensor) -> None:
    """Save as a torch.export program (.pt2, dynamic batch size) or, for any other suffix, as a state dict."""
    model = model.eval().cpu()
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    if path.endswith(".pt2"):
        batch = torch.export.Dim("batch", min=1)
        # a fresh example of its own storage: the archive stores the example input, and a view of the data
        # would carry the whole underlying tensor (the training set) into the file
        ex = torch.zeros((2, *example.shape[1:]), dtype=example.dtype)
        program = torch.export.export(model, (ex,), dynamic_shapes=({0: batch},))
        torch.export.save(program, tmp)
    else:
        torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
