"""Base classifiers: built-in architectures, and loading a model from a file or a factory.

Noise is added in the model's input space (pixels in [0, 1] for the built-in data sets), *before*
normalisation, as Cohen et al. do: every built-in architecture starts with its own `Normalize` layer, so a
saved model carries its normalisation with it.

Model specs accepted by `load_model`:
    model.pt2                       a `torch.export` program (the current PyTorch format)
    model.pt                        a TorchScript file (torch.jit is deprecated, but old files still load)
    package.module:factory          a callable returning an nn.Module, with --weights state_dict.pt
    digits-cnn | cifar-resnet20     a built-in architecture, with --weights state_dict.pt
"""
from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .errors import SmoothcertError, check


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def digits_cnn(num_classes: int = 10, in_channels: int = 1, mean=(0.3,), std=(0.4,)) -> nn.Module:
    """A small CNN for 8x8 images (scikit-learn's digits)."""
    return nn.Sequential(
        Normalize(mean * in_channels if len(mean) == 1 else mean, std * in_channels if len(std) == 1 else std),
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),  # strided, not max-pooled: 6x faster on CPU
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


def cifar_resnet(depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)) -> nn.Module:
    """He et al.'s CIFAR ResNet (depth 6k+2; 20 has 0.27M parameters; Cohen et al. use 110)."""
    check((depth - 2) % 6 == 0, f"CIFAR ResNet depth must be 6k+2, got {depth}")
    k = (depth - 2) // 6
    layers, cin = [], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(k):
            layers.append(_Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    return nn.Sequential(Normalize(mean, std), nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


ARCHITECTURES = {
    "digits-cnn": digits_cnn,
    "cifar-resnet20": lambda **kw: cifar_resnet(20, **kw),
    "cifar-resnet110": lambda **kw: cifar_resnet(110, **kw),
}


def build(arch: str, **kwargs) -> nn.Module:
    """A fresh built-in architecture by name."""
    if arch not in ARCHITECTURES:
        raise SmoothcertError(f"unknown architecture {arch!r} (built in: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](**kwargs)


def load_model(spec: str, weights: str | None = None, device="cpu", **arch_kwargs) -> nn.Module:
    """Load a base classifier from a spec (see the module docstring), in eval mode on `device`."""
    is_file = spec.endswith(".pt2") or not (spec in ARCHITECTURES or ":" in spec) or os.path.exists(spec)
    check(weights is None or not is_file,
          "--weights goes with an architecture name or package.module:factory, not with a model file")
    if spec.endswith(".pt2"):
        model = _load_exported(spec)
    elif spec in ARCHITECTURES or (":" in spec and not os.path.exists(spec)):
        model = build(spec, **arch_kwargs) if spec in ARCHITECTURES else _from_factory(spec)
        check(weights is not None, f"--model {spec} needs --weights (a state dict file)")
        load_weights(model, weights)
    else:
        model = _load_torchscript(spec)
    return eval_mode(model.to(device))


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


def _load_exported(path: str) -> nn.Module:
    _check_file(path, "model")
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise SmoothcertError(f"cannot load {path} as a torch.export program (.pt2): {_first_line(exc)}") from exc
    module = program.module()
    batch = _static_batch(program)
    return module if batch is None else StaticBatch(module, batch)


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


def _load_torchscript(path: str) -> nn.Module:
    _check_file(path, "model")
    with warnings.catch_warnings():  # torch.jit is deprecated in 2.13; the file is still the user's model
        warnings.simplefilter("ignore")
        try:
            return torch.jit.load(path, map_location="cpu")
        except Exception as exc:
            raise SmoothcertError(
                f"cannot load {path} as a TorchScript model ({_first_line(exc)}); a .pt2 file is a torch.export "
                "program, and a state dict needs --model ARCH_OR_FACTORY --weights FILE") from exc


def _from_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SmoothcertError(f"cannot find factory {spec!r}: {_first_line(exc)}") from exc
    model = factory()
    check(isinstance(model, nn.Module), f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, path: str) -> None:
    """Load a plain state dict (name -> tensor), read with weights_only=True (no code runs)."""
    _check_file(path, "weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SmoothcertError(f"cannot read weights {path} as a plain state dict: {_first_line(exc)}") from exc
    if not (isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        found = f"keys {', '.join(map(str, list(state)[:4]))}" if isinstance(state, Mapping) else type(state).__name__
        raise SmoothcertError(f"weights file {path} is not a plain state dict of tensors (found {found}); "
                              "save it with torch.save(model.state_dict(), path)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SmoothcertError(f"weights {path} do not fit the model: {_first_line(exc)} ...") from exc


def save_model(model: nn.Module, path: str, example: torch.Tensor) -> None:
    """Save as a torch.export program (.pt2, dynamic batch size) or, for any other suffix, as a state dict."""
    model = model.eval().cpu()
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    if path.endswith(".pt2"):
        batch = torch.export.Dim("batch", min=1)
        ex = example[:2].cpu() if example.shape[0] >= 2 else example.cpu().expand(2, *example.shape[1:])
        program = torch.export.export(model, (ex,), dynamic_shapes=({0: batch},))
        torch.export.save(program, tmp)
    else:
        torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
