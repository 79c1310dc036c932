"""Float-sound sampling (smoothcert.noises.sound) and the floating-point attack it defeats (rounding_attack.py).

The attack test runs the real engine (Smooth.certify / Smooth.predict): under default sampling it must find a
false certificate, under float-sound sampling none. The rest: the rounding pattern the attack reads is exact;
the alias table realises its law exactly and that law is the rounded normal to within the declared tv; the
sampler draws it; x + delta is exact; the certificate is sound on a ground truth (and an off-by-half-step noise is
caught); exact radii; same seed, same samples; refusals.
"""
import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import ndtri

from smoothcert import Gaussian, Laplace, Smooth, SmoothcertError
from smoothcert.bounds import clopper_pearson_lower
from smoothcert.certificates import ABSTAIN
from smoothcert.noises.rounding_attack import RoundingReader, rounding_attack
from smoothcert.device import check_compiled
from smoothcert.engine import PIECE, Request, Sampler
from smoothcert.noises.sound import MAX_DIMS, RANDOM_BITS, SoundGaussian, float_sound, lookup, table_law

from conftest import Threshold
from soundness import assert_caught, assert_sound, plan

ONE = 1 << RANDOM_BITS


# -- the attack ---------------------------------------------------------------------------------------------------
def violation(noise, seed=0, n=2_000):
    """Certify the attack's black image x under `noise`, then estimate the smoothed class at the gray x_adv inside
    the certified ball (PREDICT). Returns a description of the violated certificate, or None when it holds. The
    certificate must cover x_adv, so that None is not vacuous."""
    a = rounding_attack()
    smoothed = Smooth(a.model, noise, num_classes=2)
    cert = smoothed.certify(a.x, 100, n, 0.001, batch_size=1000, seed=seed)
    assert cert.prediction != ABSTAIN and cert.radius > a.distance, \
        f"the certificate at x does not cover x_adv: {cert.prediction}, radius {cert.radius:.3f} <= {a.distance:.3f}"
    pred = smoothed.predict(a.x_adv, 500, 0.001, batch_size=1000, seed=seed + 1)
    assert pred.prediction != ABSTAIN, "PREDICT abstained at x_adv"
    if pred.prediction != cert.prediction:
        return (f"{noise.describe()}: class {cert.prediction} certified at x with l2 radius {cert.radius:.3f}, but the "
                f"smoothed classifier at x_adv (distance {a.distance:.3f}) is {pred.prediction} "
                f"(p-value {pred.pvalue:.2g})")
    return None


@pytest.mark.parametrize("noise,falls", [
    (Gaussian(0.25), True),                        # today's default: the attack must succeed
    (SoundGaussian(0.25, 255), False),             # the paper's step (the input grid itself)
    (SoundGaussian(0.25, 255, bits=6), False),     # a fine power-of-two step
], ids=["default", "float-sound", "float-sound-fine"])
def test_rounding_attack_breaks_default_sampling_and_not_float_sound(noise, falls):
    found = violation(noise)
    if falls:
        assert found is not None, "default sampling no longer falls to the rounding attack: update attack or docs"
    else:
        assert found is None, "FALSE CERTIFICATE: " + found


@pytest.mark.parametrize("level", [1, 2])
def test_the_rounding_pattern_read_by_the_attack_is_exact(level):
    """Every float32 delta whose sum fl(c + delta) lands below t in magnitude gives a multiple of q (exhaustively,
    over every float32 in and around the range Sterbenz's lemma covers), while Gaussian noise added to 0 gives such
    small values off that lattice."""
    a = rounding_attack((1,), level)
    t, q, c = a.model.below, a.model.quantum, a.level
    lo, hi = np.float32(c - t), np.float32(c + t)          # -delta in [c - t, c + t]: below t needs no other
    assert abs(np.float32(c) - np.nextafter(hi, np.float32(1))) >= t and np.float32(c) - np.nextafter(lo, 0) >= t
    bits = torch.arange(int(np.float32(lo).view(np.int32)), int(np.float32(hi).view(np.int32)) + 1, dtype=torch.int32)
    delta = -bits.view(torch.float32)
    z = torch.tensor(c, dtype=torch.float32) + delta                 # what the engine computes
    small = z.abs() < t
    assert small.sum() > 1000
    assert (torch.frac(z[small].double() / q) == 0).all()
    assert a.model(z[:, None])[:, 1].sum() == 0                      # the reader never fires near x_adv
    noise = Gaussian(0.25).sample(torch.empty(1_000_000), torch.Generator().manual_seed(level))
    below_t = 2 * stats.norm.cdf(t / 0.25) - 1
    assert a.model(noise[:, None]).argmax(1).float().mean() > 0.5 * below_t     # fires near x = 0


def test_rounding_reader_reads_nothing_from_float_sound_noise():
    """Under float-sound sampling the reader sees fl((k + delta_u) / 255) with the exact sum k + delta_u: its firing
    rate depends on the noisy point only, so it is the same at x and x_adv up to the Gaussian's shift."""
    a = rounding_attack((1,), 2)
    noise = SoundGaussian(0.25, 255, bits=6)
    delta = noise.sample(torch.empty(2_000_000), torch.Generator().manual_seed(0))
    fire = [float(a.model(noise.decode(delta + k)[:, None])[:, 1].mean()) for k in (0.0, 2.0)]
    assert fire[0] > 0.005 and fire[1] > 0.005
    assert fire[0] == pytest.approx(fire[1], rel=0.1)


# -- the table and the sampler -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma,grid,bits", [(0.25, 255, 0), (0.5, 255, None), (0.25, 16, None), (0.12, 255, 2)])
def test_table_is_the_rounded_normal_to_within_its_tv(sigma, grid, bits):
    """Independent of build_table: atom masses by mpmath.erfc, and the table's law recomputed from its packed
    columns; every atom within one unit of 2^-63 of the rounded normal, the TV within the declared bound."""
    noise = SoundGaussian(sigma, grid, bits)
    t = noise.table
    assert table_law(t.column_bits, t.packed, len(t.counts)) == list(t.counts)
    assert sum(t.counts) == ONE and t.counts == t.counts[::-1]
    with mpmath.workdps(40):
        s = mpmath.mpf(sigma) * grid * mpmath.ldexp(1, noise.bits)
        cdf = lambda v: mpmath.erfc(-v / (s * mpmath.sqrt(2))) / 2
        p = [cdf(j + mpmath.mpf(0.5)) - cdf(j - mpmath.mpf(0.5)) for j in range(-t.half, t.half + 1)]
        outside = 2 * cdf(-t.half - mpmath.mpf(0.5))
        q = [mpmath.mpf(c) / ONE for c in t.counts]
        errors = [abs(a - b) for a, b in zip(q, p)]
        assert max(errors[1:-1]) <= mpmath.mpf(1) / ONE                # rounded CDF: one unit at most
        assert errors[0] <= mpmath.mpf(1) / ONE + outside
        tv = (sum(errors) + outside) / 2
        assert tv <= t.tv <= tv * (1 + 1e-9) + 1e-30
    assert noise.tv == pytest.approx(MAX_DIMS * t.tv, rel=1e-12) and noise.tv >= MAX_DIMS * t.tv


def test_packed_device_table_picks_own_atom_or_alias_as_the_integer_table_says():
    """Low bits just below and at each column's threshold: own atom below it (where it is > 0), alias from it on."""
    t = SoundGaussian(0.25, 16).table
    shift = RANDOM_BITS - t.column_bits
    packed = torch.tensor(t.packed, dtype=torch.int64)
    columns = torch.arange(1 << t.column_bits, dtype=torch.int64)
    thresholds, aliases = packed & ((1 << shift) - 1), packed >> shift
    below = lookup((columns << shift) | (thresholds - 1).clamp(min=0), packed, shift)
    assert torch.equal(below, torch.where(thresholds > 0, columns, aliases))
    assert torch.equal(lookup((columns << shift) | thresholds, packed, shift), aliases)
    top = lookup((columns << shift) | ((1 << shift) - 1), packed, shift)
    assert torch.equal(top, aliases)


@pytest.mark.parametrize("sigma,grid", [(0.25, 255), (0.25, 16)])
def test_sampler_draws_the_table_law(sigma, grid):
    """Chi-square of 2 million draws against the exact table law (atoms with expected count >= 20, tails merged);
    the same test rejects a sampler shifted by one step."""
    noise = SoundGaussian(sigma, grid)
    t = noise.table
    draws = noise.sample(torch.empty(2_000_000, dtype=torch.float64), torch.Generator().manual_seed(3))
    atoms = (draws / noise.step).round().long() + t.half
    assert torch.equal(atoms.double() - t.half, draws / noise.step)     # every draw is an atom
    observed = torch.bincount(atoms, minlength=len(t.counts)).numpy()
    expected = np.array(t.counts, dtype=np.float64) / ONE * len(draws)

    def pvalue(obs):
        keep = expected >= 20
        lo, hi = np.argmax(keep), len(keep) - np.argmax(keep[::-1])
        o = np.concatenate([[obs[:lo].sum()], obs[lo:hi], [obs[hi:].sum()]])
        e = np.concatenate([[expected[:lo].sum()], expected[lo:hi], [expected[hi:].sum()]])
        return stats.chisquare(o, e * o.sum() / e.sum()).pvalue
    assert pvalue(observed) > 1e-4
    assert pvalue(np.roll(observed, 1)) < 1e-10
    assert float(draws.std()) == pytest.approx(sigma * grid, rel=0.01)               # grid units


def test_random_bits_are_63_fair_bits():
    """The sampler's one assumption about torch: int64 random_() gives 63 independent fair bits (bit 63 zero)."""
    u = torch.empty(100_000, dtype=torch.int64).random_(generator=torch.Generator().manual_seed(0))
    assert (u >= 0).all()
    ones = ((u[:, None] >> torch.arange(63)) & 1).sum(dim=0).tolist()
    for b, k in enumerate(ones):
        assert stats.binomtest(k, len(u)).pvalue > 1e-6, b


# -- exactness -----------------------------------------------------------------------------------------------------
class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.zeros(x.shape[0], 2)


@pytest.mark.parametrize("noise,exact", [(SoundGaussian(0.25, 255, bits=3), True), (Gaussian(0.25), False)],
                         ids=["float-sound", "default"])
def test_the_model_sees_the_exact_sum(noise, exact):
    """The engine's model input, against x + delta computed exactly (float64 holds these sums exactly) from the
    same stream drawn again: float-sound gives fl32(exact sum / 255) for every sample; default sampling rounds."""
    x = torch.tensor([[0.0, 1.0, 37 / 255, 200 / 255]], dtype=torch.float32)
    model = Recorder()
    Sampler(model, noise, 2, batch_size=PIECE).counts(x, [Request(0, torch.Generator().manual_seed(5), PIECE)])
    seen = torch.cat(model.seen)
    delta = noise.sample(torch.empty(PIECE, 4), torch.Generator().manual_seed(5)).double()
    if exact:
        total = (x.double() * 255).round() + delta                    # exact in float64
        assert torch.equal(total.float().double(), total)             # representable in float32: nothing rounded
        assert torch.equal(seen, total.float() / 255)
    else:
        assert not torch.equal(seen.double(), x.double() + delta)


def test_exactness_condition_is_needed_and_checked():
    """16-bit images (grid 65535) with noise steps of 2^-8: max|k| 2^bits + J exceeds 2^24, so float32 is refused,
    and rightly: 65535 plus the largest atom rounds in float32. Float64, or inputs up to about 1/2, fit."""
    noise = SoundGaussian(0.2 / 65535, 65535, bits=8)
    assert 65535 * 256 + noise.table.half > 1 << 24
    with pytest.raises(SmoothcertError, match="cannot be exact in float32"):
        noise.encode(torch.tensor([[0.0, 1.0]]))
    assert noise.encode(torch.tensor([[0.0, 1.0]], dtype=torch.float64)).tolist() == [[0.0, 65535.0]]
    assert noise.encode(torch.tensor([[0.0, 32768 / 65535]])).tolist() == [[0.0, 32768.0]]
    j = noise.table.half - (noise.table.half % 2 == 0)       # the largest odd atom: it needs the 2^-8 bit
    assert float(torch.tensor(65535.0) + torch.tensor(j * noise.step)) != 65535.0 + j * noise.step


# -- the certificate ----------------------------------------------------------------------------------------------
def test_radius_absorbs_tv():
    noise = SoundGaussian(0.5, 255)
    for p in (0.6, 0.99, 0.999999):
        assert noise.radius(p) == pytest.approx(0.5 * ndtri(p - noise.tv), rel=1e-12)
        assert noise.radius(p) < Gaussian(0.5).radius(p)
    assert noise.margin_radius(0.9, 0.05) == pytest.approx(0.25 * (ndtri(0.9 - noise.tv) - ndtri(0.05 + noise.tv)))
    assert noise.radius(0.5 + noise.tv / 2) == 0.0
    assert 0 < noise.tv < 1e-8
    assert SoundGaussian(0.5, 255, max_dims=3072).tv < noise.tv / 1000


@pytest.mark.parametrize("sigma,grid,k", [(0.25, 16, 4), (0.25, 255, 40), (0.5, 255, 200)])
def test_threshold_radius_exact(sigma, grid, k):
    """f(z) = 1[z_0 > 0] at x_0 = k / grid: f o Q is 1 iff y_u >= h/2, a hyperplane at distance (k - h/2) / grid,
    which is the exact robust radius of its Gaussian smoothing. P(A) summed over the table's atoms (Python
    integers) matches Phi((k - h/2) / sigma_u) within tv, and the radius of that probability is the distance."""
    noise = SoundGaussian(sigma, grid)
    t, h = noise.table, noise.step
    first = next(j for j in range(-t.half, t.half + 1) if k + j * h > 0)
    p_table = sum(t.counts[first + t.half:]) / ONE
    with mpmath.workdps(30):
        p_exact = float(mpmath.ncdf((k - h / 2) / (mpmath.mpf(sigma) * grid)))
    assert abs(p_table - p_exact) <= noise.tv
    distance = (k - h / 2) / grid
    assert noise.radius(p_exact) <= distance
    assert noise.radius(p_exact) == pytest.approx(distance, abs=1e-6)


class HalfStepUp(SoundGaussian):
    """Negative control: the rounded normal off by half a step (atoms at (j + 1/2) h, as a table built with ceil
    instead of round would give)."""

    def sample(self, out, generator):
        return super().sample(out, generator).add_(self.step / 2)


def _ground_truth_failures(noise_cls, reps, alpha, sigma=0.25, grid=16, k=4, n0=20, n=200):
    noise = noise_cls(sigma, grid)
    smooth = Smooth(Threshold(), noise)
    xs = torch.full((reps, 1), k / grid)
    distance = (k - noise.step / 2) / grid
    certs = list(smooth.certify_many(xs, n0, n, alpha, 10_000, seed=11))
    return sum(c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > distance * (1 + 1e-12)) for c in certs)


def test_float_sound_certificate_is_sound_on_threshold_ground_truth():
    p = plan(0.05)
    assert_sound(_ground_truth_failures(SoundGaussian, p.reps, 0.05), p)


def test_sound_harness_catches_a_half_step_offset():
    """Its exact failure rate: the CP bound exceeds the true P(A) = Phi((k - h/2)/sigma_u) while X ~ Bin(n, p')."""
    alpha, n, p = 0.05, 200, plan(0.05)
    noise = SoundGaussian(0.25, 16)
    t = noise.table
    p_true = stats.norm.cdf((4 - noise.step / 2) / 4)
    p_shifted = sum(c for j, c in zip(range(-t.half, t.half + 1), t.counts) if 4 + (j + 0.5) * noise.step > 0) / ONE
    x = np.arange(n + 1)
    rate = float(stats.binom.pmf(x, n, p_shifted)[clopper_pearson_lower(x, n, alpha) > p_true].sum())
    assert rate >= 2 * alpha
    assert_caught(_ground_truth_failures(HalfStepUp, p.reps, alpha), p)


# -- seeds, hook, refusals ----------------------------------------------------------------------------------------
def test_same_seed_same_samples():
    noise = SoundGaussian(0.25, 255)
    a = noise.sample(torch.empty(1000, 7), torch.Generator().manual_seed(1))
    b = noise.sample(torch.empty(1000, 7), torch.Generator().manual_seed(1))
    c = noise.sample(torch.empty(1000, 7), torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    smooth = Smooth(Threshold(), noise)
    x = torch.tensor([3 / 255])
    r1, r2 = (smooth.certify(x, 50, 777, 0.01, batch_size=64, seed=4) for _ in range(2))
    assert np.array_equal(r1.counts, r2.counts) and r1.radius == r2.radius


def test_compile_check_sees_decoded_inputs():
    """check_compiled draws noise like the engine: encoded inputs, decoded before the model."""
    noise = SoundGaussian(0.25, 255)
    model = Recorder()
    check_compiled(model, model, torch.full((4, 3), 1.0), noise, rows=64, device="cpu")
    seen = torch.cat(model.seen)
    units = seen.double() * 255
    assert seen.abs().max() < 1 + 10 * 0.25 and ((units - units.round()).abs() < 1e-3).all()


@pytest.mark.parametrize("make,message", [
    (lambda: SoundGaussian(0.25, None), "needs the input grid"),
    (lambda: SoundGaussian(0.25, 255.0), "integer >= 1"),
    (lambda: SoundGaussian(0.25, 0), "integer >= 1"),
    (lambda: SoundGaussian(0.001, 255, bits=0), "too small for a noise step"),
    (lambda: SoundGaussian(0.25, 255, bits=-1), r"integer in \[0, 48\]"),
    (lambda: SoundGaussian(0.25, 255, bits=9), "use fewer noise bits"),
    (lambda: SoundGaussian(1000.0, 255), "sigma is too large"),
    (lambda: SoundGaussian(-1.0, 255), "sigma must be"),
    (lambda: float_sound(Laplace(0.3), 255), "for Gaussian noise"),
    (lambda: float_sound(Gaussian(0.3), None), "needs the input grid"),
])
def test_bad_settings_are_refused_in_one_line(make, message):
    with pytest.raises(SmoothcertError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_bad_inputs_are_refused_in_one_line():
    smooth = Smooth(Threshold(), SoundGaussian(0.25, 255))
    with pytest.raises(SmoothcertError, match="off its grid") as info:
        smooth.certify(torch.tensor([0.5 / 255]), 10, 100, 0.01, seed=0)
    assert "\n" not in str(info.value)
    with pytest.raises(SmoothcertError, match="coordinates"):
        SoundGaussian(0.25, 255, max_dims=10).encode(torch.zeros(2, 11))
    with pytest.raises(SmoothcertError, match="float32 or float64"):
        SoundGaussian(0.25, 255).encode(torch.zeros(2, 3, dtype=torch.float16))
    with pytest.raises(SmoothcertError, match="float32 or float64"):
        SoundGaussian(0.25, 255).sample(torch.empty(3, dtype=torch.bfloat16), torch.Generator())


def test_float_sound_api():
    noise = float_sound(Gaussian(0.25), 255)
    assert noise == SoundGaussian(0.25, 255, bits=0) and float_sound(noise, 255) is noise
    assert noise.name == "gaussian" and noise.scale == 0.25 and noise.norms == ("l2", "l1")
    assert "float-sound" in noise.describe() and noise != Gaussian(0.25)
    assert SoundGaussian(0.25, 16).bits == 1 and SoundGaussian(0.05, 255).bits == 0
    assert SoundGaussian(0.01, 255).bits == 2
    assert SoundGaussian(0.001, 255).bits == 5


def test_sampling_in_chunks_and_into_strided_buffers():
    """A buffer larger than one chunk and a non-contiguous one get the same law and the same seed -> same values."""
    noise = SoundGaussian(0.25, 255)
    big = noise.sample(torch.empty(3, 1 << 19), torch.Generator().manual_seed(9))
    again = noise.sample(torch.empty(3, 1 << 19), torch.Generator().manual_seed(9))
    assert torch.equal(big, again) and float(big.std()) == pytest.approx(63.75, rel=0.01)
    strided = noise.sample(torch.empty(1000, 2)[:, 0], torch.Generator().manual_seed(4))
    assert torch.equal(strided, noise.sample(torch.empty(1000), torch.Generator().manual_seed(4)))
