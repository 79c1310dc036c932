"""What the engine accumulates per request from each batch of logits (`Statistic`): hard-vote class counts
(`Votes`), the counts at several nested n (`NestedVotes`), soft score sums (`ScoreSums`), the certified-confidence
histogram (`MeasureHistogram`) and betting capital (`BettingScores`). Each is read later by a certificate; none
computes one.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..bounds.mean import Betting
from ..measures import bin_index



class Statistic:
    """What the engine accumulates per request from each batch of logits. Subclasses: Votes (hard-vote class
    counts, what every certificate here reads) and ScoreSums (soft scores). Set needs_position to receive
    each sample's position in its request, e.g. to read one nested stream at several n."""

    needs_position = False

    def start(self, requests: int, num_classes: int, device) -> None:
        raise NotImplementedError

    def update(self, logits: torch.Tensor, owner: torch.Tensor, position: torch.Tensor | None) -> None:
        raise NotImplementedError

    def result(self):
        raise NotImplementedError


class Votes(Statistic):
    """Class counts (requests, classes) of the argmax votes, tallied with one bincount per batch."""

    def start(self, requests, num_classes, device):
        self.shape = (requests, num_classes)
        self.total = torch.zeros(requests * num_classes, dtype=torch.int64, device=device)

    def update(self, logits, owner, position):
        key = logits.argmax(dim=1).add_(owner, alpha=self.shape[1])     # request * classes + class
        self.total.add_(torch.bincount(key, minlength=self.total.numel()))

    def result(self) -> np.ndarray:
        return self.total.view(self.shape).cpu().numpy()


class NestedVotes(Statistic):
    """Class counts of the first n_1 < n_2 < ... samples of each request's stream, shape (requests, levels,
    classes), from one pass: a sample at position p of its request counts for every level n_j > p (one bincount per batch
    over (request, first level it counts for, class), then a cumulative sum over levels)."""

    needs_position = True

    def __init__(self, levels: Sequence[int]):
        self.levels = torch.tensor(sorted(int(n) for n in levels), dtype=torch.int64)

    def start(self, requests, num_classes, device):
        self.shape = (requests, len(self.levels) + 1, num_classes)   # + a level for samples past the largest
        self.total = torch.zeros(math.prod(self.shape), dtype=torch.int64, device=device)
        self.edges = self.levels.to(device)

    def update(self, logits, owner, position):
        level = torch.searchsorted(self.edges, position, right=True)     # number of levels n_j <= p
        key = (owner * self.shape[1] + level) * self.shape[2] + logits.argmax(dim=1)
        self.total.add_(torch.bincount(key, minlength=self.total.numel()))

    def result(self) -> np.ndarray:
        return self.total.view(self.shape).cumsum(dim=1)[:, :-1].cpu().numpy()


class ScoreSums(Statistic):
    """Per request and class, the sum and the sum of squares of the softmax scores (float64): what Hoeffding and
    empirical-Bernstein bounds on soft (continuous) smoothing read (Moutaouakil §3.3.2)."""

    def start(self, requests, num_classes, device):
        self.sums = torch.zeros((requests, num_classes), dtype=torch.float64, device=device)
        self.squares = torch.zeros_like(self.sums)

    def update(self, logits, owner, position):
        scores = torch.softmax(logits.double(), dim=1)
        self.sums.index_add_(0, owner, scores)
        self.squares.index_add_(0, owner, scores * scores)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sums.cpu().numpy(), self.squares.cpu().numpy()


class MeasureHistogram(Statistic):
    """For certified confidence (001): per request, the histogram on fixed bins (chosen before sampling:
    measures.histogram_edges) of one scalar per sample, the softmax score of the request's class ('score') or
    its margin over the best other class ('margin'), and the exact sum of that scalar (float64)."""

    def __init__(self, classes: Sequence[int], measure: str, bins: int):
        self.classes, self.measure, self.bins = torch.as_tensor(list(classes), dtype=torch.int64), measure, bins

    def start(self, requests, num_classes, device):
        self._bin = bin_index
        self.counts = torch.zeros(requests * self.bins, dtype=torch.int64, device=device)
        self.sums = torch.zeros(requests, dtype=torch.float64, device=device)
        self.cls = self.classes.to(device)

    def update(self, logits, owner, position):
        scores = torch.softmax(logits.double(), dim=1)
        a = self.cls[owner]
        value = scores.gather(1, a[:, None])[:, 0]
        if self.measure == "margin":
            value = value - scores.scatter(1, a[:, None], -1.0).max(dim=1).values
        self.counts.add_(torch.bincount(owner * self.bins + self._bin(value, self.measure, self.bins),
                                        minlength=self.counts.numel()))
        self.sums.index_add_(0, owner, value)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.counts.view(-1, self.bins).cpu().numpy(), self.sums.cpu().numpy()


class BettingScores(Statistic):
    """For soft-betting: betting accumulators (bounds.mean.Betting) fed, per request, with the softmax score of its
    class A (a lower bound on E[F_A]) and the largest score of the other classes (an upper bound on
    E[max_{c != A} F_c] >= max_{c != A} E[F_c]), each in the order the samples arrive, with bets that depend only
    on earlier samples; the grids are fixed from the selection stage. Returns the two accumulators."""

    def __init__(self, classes: Sequence[int], n: int, alpha: float, grid_a, grid_other):
        self.classes, self.n, self.alpha = torch.as_tensor(list(classes), dtype=torch.int64), n, alpha
        self.grid_a, self.grid_other = grid_a, grid_other

    def start(self, requests, num_classes, device):
        self.a = Betting(requests, self.n, self.alpha, self.grid_a, device=device, sides="lower")
        self.other = Betting(requests, self.n, self.alpha, self.grid_other, device=device, sides="upper")
        self.cls = self.classes.to(device)

    def update(self, logits, owner, position):
        scores = torch.softmax(logits.double(), dim=1)
        a = self.cls[owner]
        self.a.update(scores.gather(1, a[:, None])[:, 0].clamp(0, 1), owner)
        self.other.update(scores.scatter(1, a[:, None], -1.0).max(dim=1).values.clamp(0, 1), owner)

    def result(self):
        return self.a, self.other
