"""Shared fixtures: small models whose smoothed behaviour is known exactly, data, and CLI helpers."""
import csv
import socket

import numpy as np
import pytest
import torch
from torch import nn


class Threshold(nn.Module):
    """f(x) = 1 if x[..., 0] > 0 else 0, on inputs of shape (1,). Under N(0, s^2) noise the smoothed classifier
    at x = m > 0 predicts 1 with pA = Phi(m / s), and its exact l2 robustness radius is m (the distance to the
    decision boundary), which is s * Phi^-1(pA) (Cohen et al. 2019, Thm 1 is tight for linear classifiers)."""

    def forward(self, x):
        v = x.reshape(x.shape[0], -1)[:, :1]
        return torch.cat([-v, v], dim=1)


class Steep(Threshold):
    """Logits (-k x0, k x0): still symmetric about x0 = 0 (the soft smoothed classifier's exact radius at m is
    |m|), and with k = 50 its scores are nearly votes, so the soft radius sigma Phi^-1(E_A) nearly reaches |m|:
    the case where an overstated bound shows. Its softmax score of class 1 is sigmoid(2 k x0)."""

    k = 50.0

    def forward(self, x):
        return self.k * super().forward(x)


class Constant(nn.Module):
    """Always votes for class `c` out of `k`."""

    def __init__(self, c=2, k=5):
        super().__init__()
        self.c, self.k = c, k

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k, dtype=x.dtype, device=x.device)
        out[:, self.c] = 1.0
        return out


@pytest.fixture
def threshold():
    return Threshold()


def tiny_cnn(num_classes=3, in_channels=1):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, num_classes))


class WithConstant(nn.Module):
    """A lifted tensor constant (an attribute that is neither a parameter nor a buffer) and a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.scale = torch.tensor([1.5, 0.5, 2.0]).view(1, 3, 1, 1)
        self.head = nn.Linear(3 * 16, 3)

    def forward(self, x):
        return self.head((self.bn(self.conv(x)) * self.scale).flatten(1))


@pytest.fixture
def npz_data(tmp_path):
    """A small 3-class image data set (N, 1, 4, 4) saved as .npz."""
    rng = np.random.default_rng(0)
    y = np.arange(12) % 3
    x = (rng.random((12, 1, 4, 4)) * 0.2 + y[:, None, None, None] * 0.4).astype(np.float32)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def model_pt2(tmp_path, npz_data):
    from smoothcert.models import save_model
    path = tmp_path / "model.pt2"
    save_model(tiny_cnn(), str(path), torch.zeros(2, 1, 4, 4))
    return path


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def without_time(path):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows(path)]


def one_line_error(capsys, code):
    """The one line a refused command printed (asserting exit 2 and nothing else on stderr)."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smoothcert "), err
    return lines[0]


def certify_args(model, data, out, *extra):
    return ["certify", "--model", str(model), "--data", f"npz:{data}", "--sigma", "0.25", "--n0", "20", "--n", "300",
            "--alpha", "0.01", "--batch", "128", "--seed", "0", "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def one_thread():
    """Small tensor ops: one torch thread is faster than two and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (loading a diffusers folder must stay local)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
