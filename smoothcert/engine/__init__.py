"""The Monte Carlo engine: random streams (streams.py), the sampler that packs many inputs' noisy samples into full
forward batches (sampler.py) and the statistics it accumulates from their logits (statistics.py). It samples and
counts; bounds and radii are the certificates' (smoothcert.certificates)."""
from .sampler import MIN_FORWARD, NamedSampler, Sampler
from .statistics import BettingScores, MeasureHistogram, NestedVotes, ScoreSums, Statistic, Votes
from .streams import ESTIMATION, PIECE, PREDICTION, SELECTION, Request, Stream, derive_seed, make_stream

__all__ = ["BettingScores", "ESTIMATION", "MIN_FORWARD", "MeasureHistogram", "NamedSampler", "NestedVotes", "PIECE",
           "PREDICTION", "Request", "SELECTION", "Sampler", "ScoreSums", "Statistic", "Stream", "Votes", "derive_seed",
           "make_stream"]
