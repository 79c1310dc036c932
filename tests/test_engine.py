"""The sampling engine and CERTIFY/PREDICT: packing, counting, reproducibility, independence, back-off."""
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from conftest import Constant, Threshold
from smoothcert import ABSTAIN, Gaussian, Smooth, SmoothcertError
from smoothcert.engine import MIN_FORWARD, PIECE, Request, Sampler, derive_seed, make_stream
from smoothcert.modes import group_size


def sampler(model=None, batch=10, k=2):
    return Sampler(model or Threshold(), Gaussian(1.0), k, batch_size=batch)


@pytest.mark.parametrize("sizes,batch", [([3, 3, 3, 3], 10), ([25, 7, 10], 10), ([1] * 13, 4), ([100, 100], 1000),
                                         ([100, 10_000] * 3, 1000), ([100, 100] * 7, 256)])
def test_engine_draws_every_sample_once_in_full_batches(sizes, batch):
    seen = []

    class Spy(Threshold):
        def forward(self, x):
            seen.append(x.shape[0])
            return super().forward(x)

    s = Sampler(Spy(), Gaussian(1.0), 2, batch_size=batch)
    reqs = [Request(0, torch.Generator().manual_seed(i), k) for i, k in enumerate(sizes)]
    counts = s.counts(torch.zeros(1, 1), reqs)
    assert list(counts.sum(axis=1)) == sizes
    # every batch full but the last, which is padded to MIN_FORWARD rows (padding rows are not counted)
    rest = sum(sizes) - batch * (len(seen) - 1)
    assert all(b == batch for b in seen[:-1]) and 0 < rest <= batch and seen[-1] == max(rest, min(batch, MIN_FORWARD))


def _noise_of(sampler_batch, sizes, seed=5, d=3):
    """The noisy inputs (x = 0) a stream of `seed` yields when read in requests of `sizes`, one after another."""
    model = Recorder(torch.float32)          # records every batch it receives (padding rows included)
    s = Sampler(model, Gaussian(1.0), 2, batch_size=sampler_batch)
    stream = make_stream(seed, 0, 1, "cpu")
    out = []
    for k in sizes:
        model.seen.clear()
        s.counts(torch.zeros(1, d), [Request(0, stream, k)])
        out.append(torch.cat(model.seen)[:k])
    return torch.cat(out)


@pytest.mark.parametrize("sizes,batch", [([250], 64), ([7, 93, 150], 64), ([100, 150], 1000), ([1] * 5 + [245], 37)])
def test_a_stream_gives_the_same_samples_however_it_is_read(sizes, batch):
    """Sample j of a stream does not depend on how many samples are read in all, in how many requests, or on the
    batch size: nested n, input-specific n and adaptive rounds rely on it."""
    whole = _noise_of(1000, [sum(sizes)])
    assert torch.equal(_noise_of(batch, sizes), whole)
    assert torch.equal(_noise_of(batch, [sizes[0]]), whole[:sizes[0]])


def test_a_streams_samples_do_not_depend_on_how_it_is_packed():
    x = torch.tensor([[0.3]])
    alone = Sampler(Threshold(), Gaussian(1.0), 2, batch_size=64).counts(
        x, [Request(0, torch.Generator().manual_seed(9), 150)])
    crowd = Sampler(Threshold(), Gaussian(1.0), 2, batch_size=64).counts(
        torch.cat([x, x]), [Request(1, torch.Generator().manual_seed(1), 37), Request(0, torch.Generator().manual_seed(9), 150)])
    assert np.array_equal(alone[0], crowd[1])


def test_counts_add_up_and_match_the_exact_probability():
    s = sampler(batch=1000)
    x = torch.tensor([[0.0], [1.0]])
    reqs = [Request(0, make_stream(0, 0, 1, "cpu"), 20_000), Request(1, make_stream(0, 1, 1, "cpu"), 20_000)]
    counts = s.counts(x, reqs)
    assert counts.shape == (2, 2) and list(counts.sum(1)) == [20_000, 20_000]
    # class 1 frequency is Bin(20000, Phi(x/sigma)): check within 5 standard deviations
    for row, p in zip(counts, [0.5, stats.norm.cdf(1.0)]):
        assert abs(row[1] / 20_000 - p) < 5 * np.sqrt(p * (1 - p) / 20_000)


def test_derived_seeds_differ_by_index_and_stage():
    seeds = {derive_seed(0, i, s) for i in range(100) for s in range(3)}
    assert len(seeds) == 300
    assert derive_seed(7, 3, 1) == derive_seed(7, 3, 1)


def test_same_seed_same_result_other_seed_other_result():
    smooth = Smooth(Threshold(), Gaussian(1.0))
    x = torch.full((5, 1), 0.3)
    a = [c.counts for c in smooth.certify_many(x, 10, 500, 0.01, 64, seed=1)]
    b = [c.counts for c in smooth.certify_many(x, 10, 500, 0.01, 64, seed=1)]
    c = [c.counts for c in smooth.certify_many(x, 10, 500, 0.01, 64, seed=2)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    # identical inputs with different indices get different samples
    assert not np.array_equal(a[0], a[1]) or not np.array_equal(a[1], a[2])


def test_an_inputs_result_does_not_depend_on_the_other_inputs():
    smooth = Smooth(Threshold(), Gaussian(1.0))
    xs = torch.linspace(-1, 1, 9).view(9, 1)
    many = {c.index: c for c in smooth.certify_many(xs, 100, 100, 0.01, 1000, seed=3, indices=range(10, 19))}
    for j in [0, 4, 8]:
        alone = smooth.certify(xs[j], 100, 100, 0.01, 1000, seed=3, index=10 + j)
        assert np.array_equal(alone.counts, many[10 + j].counts)
        assert np.array_equal(alone.counts_selection, many[10 + j].counts_selection)
        assert alone.radius == many[10 + j].radius


def test_many_small_inputs_share_full_forward_batches():
    sizes = []

    class Spy(Threshold):
        def forward(self, x):
            sizes.append(x.shape[0])
            return super().forward(x)

    smooth = Smooth(Spy(), Gaussian(1.0))
    list(smooth.certify_many(torch.zeros(40, 1), 100, 100, 0.01, 1000))
    sizes = sizes[1:]  # the first call is the one-input probe
    assert sizes and all(s == 1000 for s in sizes)
    assert group_size(1000, [100, 100_000], 500) == 1        # 100 batches an input: rows come input by input
    assert group_size(1000, [100, 100], 500) == 40           # 5 inputs fill a batch exactly; 8 batches a group
    assert group_size(256, [100, 100], 500) == 32            # 32 * 200 = 25 * 256: no part-filled batch
    assert group_size(1000, [100, 10_000], 500) == 10
    assert group_size(1000, [100, 10_000], 3) == 3


def test_out_of_memory_backs_off_to_smaller_forward_batches_with_the_same_counts():
    class Small(Threshold):
        def forward(self, x):
            if x.shape[0] > 37:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x)

    x = torch.tensor([[0.2]])
    ok = Smooth(Threshold(), Gaussian(1.0)).certify(x[0], 10, 1000, 0.01, 250, seed=5)
    smooth = Smooth(Small(), Gaussian(1.0))
    backed = smooth.certify(x[0], 10, 1000, 0.01, 250, seed=5)
    assert np.array_equal(ok.counts, backed.counts)


def test_other_errors_are_not_mistaken_for_out_of_memory():
    class Broken(Threshold):
        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
            return super().forward(x)

    with pytest.raises(SmoothcertError, match="model raised RuntimeError on noisy samples: mat1 and mat2 shapes"):
        Smooth(Broken(), Gaussian(1.0)).certify(torch.tensor([0.2]), 10, 100, 0.01, 50)


def test_noise_is_drawn_in_the_model_dtype():
    model = nn.Linear(3, 2).double()
    s = Smooth(model, Gaussian(0.5))
    c = s.certify(torch.zeros(3), 10, 100, 0.01, 50)
    assert c.counts.sum() == 100


class Recorder(nn.Module):
    """A two-class model in `dtype` that keeps a copy of every batch it receives."""

    def __init__(self, dtype):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, dtype=dtype))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        v = x.reshape(x.shape[0], -1)[:, :1] * self.w
        return torch.cat([-v, v], dim=1)


def _received(model, x, sigma, k, seed):
    """The one batch the engine feeds `model` for k samples of x from a stream seeded with `seed` (one full batch)."""
    s = Sampler(model, Gaussian(sigma), 2, batch_size=k)
    counts = s.counts(x, [Request(0, torch.Generator().manual_seed(seed), k)])
    assert counts.sum() == k and len(model.seen) == 1
    return s, model.seen[0]


def _noise(shape, dtype, sigma, seed):
    """The engine's documented draw: one generator read in pieces of exactly PIECE samples, each drawn whole."""
    gen = torch.Generator().manual_seed(seed)
    pieces = -(-shape[0] // PIECE)
    return torch.cat([torch.empty((PIECE, *shape[1:]), dtype=dtype).normal_(0.0, sigma, generator=gen)
                      for _ in range(pieces)])[:shape[0]]


def test_sound_noise_is_drawn_in_float64_for_a_float64_model():
    """The model must receive exactly x + noise with the noise drawn in float64: noise drawn in float32 (and widened)
    would be a different, coarser sample."""
    x, k, sigma = torch.tensor([[0.1, 1 / 3]], dtype=torch.float64), 500, 0.5
    s, received = _received(Recorder(torch.float64), x, sigma, k, seed=3)
    assert s.noise_dtype == torch.float64 and received.dtype == torch.float64
    expected = _noise((k, 2), torch.float64, sigma, 3) + x
    assert torch.equal(received, expected)
    narrow = (_noise((k, 2), torch.float32, sigma, 3) + x.float()).double()
    assert not torch.equal(narrow, expected)          # the comparison above can tell the two apart


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sound_noise_is_added_to_the_unrounded_input_of_a_half_precision_model(dtype):
    """Rounding x to bfloat16 / float16 before adding noise would move the centre of the certified ball: the model
    must receive exactly round(x + noise), x and the noise in float32, rounded once (a cast that is part of the
    base classifier)."""
    x = torch.tensor([[1 + 2 ** -9 + 2 ** -13, -0.3]], dtype=torch.float64)   # not representable in either type
    k, sigma = 1000, 0.01                                  # noise of a few half-precision steps at 1
    s, received = _received(Recorder(dtype), x, sigma, k, seed=5)
    assert s.noise_dtype == torch.float32 and s._buffer((2,)).dtype == torch.float32 and received.dtype == dtype
    noise = _noise((k, 2), torch.float32, sigma, 5)
    expected = (noise + x.float()).to(dtype)
    assert torch.equal(received, expected)
    rounded_first = (noise + x.to(dtype)).to(dtype)
    narrow_noise = (_noise((k, 2), dtype, sigma, 5) + x.to(dtype)).to(dtype)
    assert not torch.equal(rounded_first, expected) and not torch.equal(narrow_noise, expected)


def test_certify_constant_classifier_gives_the_closed_form_radius():
    # every sample votes for class 2: pA_lower = alpha^(1/n) exactly, radius = sigma * Phi^-1(alpha^(1/n))
    s = Smooth(Constant(2, 5), Gaussian(0.25))
    c = s.certify(torch.zeros(3, 4, 4), 100, 1000, 0.001, 300)
    assert c.prediction == 2 and list(c.counts) == [0, 0, 1000, 0, 0] and list(c.counts_selection) == [0, 0, 100, 0, 0]
    assert c.p_lower == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)
    assert c.radius == pytest.approx(0.25 * stats.norm.ppf(0.001 ** (1 / 1000)), rel=1e-12)


def test_certify_abstains_at_a_tie_and_never_returns_a_negative_radius():
    s = Smooth(Threshold(), Gaussian(1.0))
    # pA = 1/2 exactly: each input may be certified with probability <= alpha (a 0.4 % event: counts 553/447
    # at n = 1000 happens once in 20 inputs at seed 0), so the test counts them; abstentions carry radius 0.
    cs = list(s.certify_many(torch.zeros(200, 1), 50, 1000, 0.001, 500, seed=0))
    assert all(c.radius >= 0.0 for c in cs)
    assert all(c.prediction == ABSTAIN and c.radius == 0.0 for c in cs if c.abstained)
    assert sum(not c.abstained for c in cs) <= 3        # P(Binomial(200, 0.001) > 3) < 1e-4


def test_predict_returns_the_clear_winner_and_abstains_at_a_tie():
    s = Smooth(Threshold(), Gaussian(0.1))
    p = s.predict(torch.tensor([1.0]), 1000, 0.001, 500)
    assert p.prediction == 1 and p.counts[1] == 1000 and p.pvalue < 1e-100
    ties = list(s.predict_many(torch.zeros(30, 1), 1000, 0.001, 500))
    assert sum(t.abstained for t in ties) >= 25


@pytest.mark.parametrize("kwargs,match", [(dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(n=0), "n "),
                                          (dict(n0=0), "n0"), (dict(batch_size=0), "batch")])
def test_certify_rejects_bad_settings(kwargs, match):
    args = dict(n0=10, n=100, alpha=0.01, batch_size=50) | kwargs
    with pytest.raises(SmoothcertError, match=match):
        Smooth(Threshold(), Gaussian(1.0)).certify(torch.tensor([0.1]), **args)


def test_certify_rejects_non_finite_inputs_and_wrong_shapes():
    s = Smooth(nn.Linear(3, 2), Gaussian(1.0))
    with pytest.raises(SmoothcertError, match="NaN"):
        list(s.certify_many(torch.tensor([[0.0, float("nan"), 1.0]]), 10, 100, 0.01, 50))
    with pytest.raises(SmoothcertError, match="cannot take inputs of shape"):
        s.certify(torch.zeros(4), 10, 100, 0.01, 50)


def test_certify_rejects_bad_model_outputs():
    class Flat(nn.Module):
        def forward(self, x):
            return x.sum(dim=1)

    class Nan(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"))

    with pytest.raises(SmoothcertError, match=r"\(batch, classes\)"):
        Smooth(Flat(), Gaussian(1.0)).certify(torch.zeros(3), 10, 100, 0.01, 50)
    with pytest.raises(SmoothcertError, match="non-finite"):
        Smooth(Nan(), Gaussian(1.0)).certify(torch.zeros(3), 10, 100, 0.01, 50)


def test_auto_batch_size_probes_memory_and_backs_off():
    from smoothcert.device import auto_batch_size

    class Limited(Threshold):
        def forward(self, x):
            if x.shape[0] > 3000:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return super().forward(x)

    assert auto_batch_size(Limited(), (1,), "cpu") in (64, 128, 256, 512, 1024)   # a CPU times sizes instead
    assert auto_batch_size(Limited(), (1,), "cpu", probe=True) == 1024      # 2048 fits, 4096 does not: half of 2048
    assert auto_batch_size(Threshold(), (1,), "cpu", probe=True, cap=4096) == 2048
    with pytest.raises(RuntimeError, match="shapes"):
        class Broken(Threshold):
            def forward(self, x):
                raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        auto_batch_size(Broken(), (1,), "cpu", probe=True)
    c = Smooth(Threshold(), Gaussian(1.0)).certify(torch.tensor([0.5]), 10, 3000, 0.01, None)
    assert c.counts.sum() == 3000


def test_engine_feeds_soft_scores_and_stream_positions_to_statistics():
    from smoothcert.engine import ScoreSums, Statistic, Votes

    class Positions(Statistic):
        needs_position = True

        def start(self, requests, num_classes, device):
            self.seen = [[] for _ in range(requests)]

        def update(self, logits, owner, position):
            for o, p in zip(owner.tolist(), position.tolist()):
                self.seen[o].append(p)

        def result(self):
            return self.seen

    sizes = [130, 7, 64, 300]
    reqs = [Request(i % 2, torch.Generator().manual_seed(i), k) for i, k in enumerate(sizes)]
    s = Sampler(Threshold(), Gaussian(0.5), 2, batch_size=50)
    votes, (sums, squares), positions = s.run(torch.tensor([[4.0], [0.2]]), reqs, [Votes(), ScoreSums(), Positions()])
    assert list(votes.sum(1)) == sizes
    np.testing.assert_allclose(sums.sum(1), sizes, rtol=1e-12)          # softmax scores sum to 1 per sample
    assert np.all(squares <= sums + 1e-12) and np.all(squares >= sums ** 2 / np.array(sizes)[:, None] - 1e-9)
    assert sums[0, 1] / sizes[0] > 0.99                                  # x = 4: class 1 with near certainty
    # softmax of (-v, v) at v ~ N(0.2, 0.25): mean score of class 1 is about 0.6
    assert 0.5 < sums[3, 1] / sizes[3] < 0.7
    for k, seen in zip(sizes, positions):
        assert sorted(seen) == list(range(k))                            # every position once, per stream
