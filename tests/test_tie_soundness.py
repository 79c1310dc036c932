"""Every mode of the engine at a tie, failures counted: fixed n, nested n, input-specific n, early stopping, soft
certificates and certified confidence, each run through a real Smooth on a classifier whose answer is known
exactly, placed where P(class 1) = 1/2 + 1e-4 under the noise. There the selection is a coin flip and each bound
is nearly exact, so a mistake in how the samples are split between choosing the class and bounding it shows.

A failure is a claim beyond the truth: a class other than the true one certified, or a radius beyond the exact
robust radius (the distance to the boundary). Every test is sized by PLAN = plan(ALPHA, 1.4 ALPHA): a sound
mode passes with probability >= 1 - 1e-4, and one failing at 1.4 alpha is caught with probability >= 0.99.
Repetitions are copies of one input in one call: each input index has its own streams.

Next to each sound case its realistic unsound variant (tests/unsound.py) runs through the same harness and plan
and must be caught; for the vote certificates its exact failure rate, computed below with scipy from the two
binomial stages, shows it is above 1.4 alpha. The variants of issue 13: (a) early stopping drawing its
estimation samples from the selection stream (here in every vote mode), (b) input-specific n adding the pilot
votes into the estimate; then alpha spent at every look of early stopping, a soft-lipschitz constant too large,
plug-in soft means, a layer cake off by one at coarse confidence thresholds, and non-predictable betting.
"""
import numpy as np
import pytest
import torch
from scipy import integrate, optimize, special, stats

import unsound
from conftest import Steep, Threshold
from smoothcert import Gaussian, Smooth
from smoothcert.modes import common as modes_common
from smoothcert.bounds.mean import Betting
from smoothcert.bounds.sequential import UnionBound
from smoothcert.certificates import ABSTAIN
from smoothcert.planning import choose_n
from soundness import assert_caught, assert_sound, plan

pytestmark = pytest.mark.usefixtures("one_thread")

ALPHA, TIE, SIGMA = 0.1, 0.5 + 1e-4, 0.5
PLAN = plan(ALPHA, 1.4 * ALPHA)                  # 2392 repetitions, pass iff <= 295 failures
N0, BATCH = 50, 20_000
NESTED = (60, 100)
INPUT_N = dict(n_max=300, max_loss=0.2)          # n from 50 to 160 at the tie, by the pilot count
LOOKS_N_MAX = 400                                # early stopping over the looks 100, 150, 225, 338, 400


def margin(sigma, p_a=TIE):
    """The threshold classifier's x_0 (= its exact l2 radius) where P(class 1) = p_a under N(0, sigma^2)."""
    return sigma * stats.norm.ppf(p_a)


def copies(m, reps=PLAN.reps):
    return torch.full((reps, 1), m, dtype=torch.float64)


def failures(certificates, m) -> int:
    """Wrong claims at x_0 = m > 0, where class 1 is the true class and m the exact radius."""
    return sum(c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > m * (1 + 1e-12)) for c in certificates)


# -- exact failure rates of the vote modes (two classes; class 1 has probability TIE) --------------------------------
def _cp_lower(k, n, level):
    """Clopper-Pearson lower bound, the level-quantile of Beta(k, n - k + 1) (0 at k = 0)."""
    return np.where(k > 0, stats.beta.ppf(level, np.maximum(k, 1), n - k + 1), 0.0)


def _stages():
    """(probability, chosen class, its selection votes, its probability) for each selection count k0 of class 1
    (ties go to class 0)."""
    for k0 in range(N0 + 1):
        one = k0 > N0 - k0
        yield stats.binom.pmf(k0, N0, TIE), int(one), (k0 if one else N0 - k0), (TIE if one else 1 - TIE)


def _wrong(lower, chosen):
    return lower > TIE if chosen == 1 else lower >= 0.5           # a radius beyond m, or class 0 certified


def fixed_rate(fresh, pilot=False):
    """P(wrong) when the chosen class A is bounded by Clopper-Pearson at ALPHA from fresh(A's selection votes)
    fresh votes, plus, with pilot=True, A's selection votes among N0 more samples. The first N0 of n samples read
    from the selection stream is fresh = n - N0 with pilot=True."""
    rate = 0.0
    for weight, chosen, top, p in _stages():
        n = fresh(top)
        j = np.arange(n + 1)
        lower = _cp_lower(j + pilot * top, n + pilot * N0, ALPHA)
        rate += weight * stats.binom.pmf(j, n, p) @ _wrong(lower, chosen)
    return rate


def input_n(top):
    return choose_n(top, N0, INPUT_N["n_max"], ALPHA, Gaussian(SIGMA), INPUT_N["max_loss"])


def sequential_rate(n_max, every_look=False):
    """P(wrong) of early stopping at r0 = 0 (stop when the bound reaches 1/2) without futility: the votes for A
    accumulate over the looks of UnionBound(ALPHA, n_max), each at its level (or at ALPHA); it fails if it stops
    on a bound above TIE (A = 1) or certifies class 0."""
    schedule = UnionBound(ALPHA, n_max)
    levels = [ALPHA] * len(schedule.looks) if every_look else schedule.levels
    rate = 0.0
    for weight, chosen, _, p in _stages():
        pmf, t = np.array([1.0]), 0
        for look, level in zip(schedule.looks, levels):
            pmf, t = np.convolve(pmf, stats.binom.pmf(np.arange(look - t + 1), look - t, p)), look
            lower = _cp_lower(np.arange(t + 1), t, level)
            rate += weight * pmf[_wrong(lower, chosen)].sum()
            pmf = np.where(lower >= 0.5, 0.0, pmf)                # stopped: certified
    return rate


# -- the vote modes ------------------------------------------------------------------------------------------------
# name -> (run(smooth, xs, seed) -> certificates, exact failure rate, exact rate under unsound variant (a))
MODES = {
    "fixed n": (lambda s, xs, seed: s.certify_many(xs, N0, 100, ALPHA, BATCH, seed=seed),
                lambda: fixed_rate(lambda _: 100), lambda: fixed_rate(lambda _: 100 - N0, pilot=True)),
    **{f"nested n={n}": (lambda s, xs, seed, level=level: (c[level] for c in s.certify_nested(xs, N0, NESTED, ALPHA,
                                                                                             BATCH, seed=seed)),
                         lambda n=n: fixed_rate(lambda _: n), lambda n=n: fixed_rate(lambda _: n - N0, pilot=True))
       for level, n in enumerate(NESTED)},
    "input-specific n": (lambda s, xs, seed: s.certify_input_n(xs, N0, INPUT_N["n_max"], ALPHA, BATCH,
                                                                max_loss=INPUT_N["max_loss"], seed=seed),
                         lambda: fixed_rate(input_n), None),
    # n_max = 100 is one look, at ALPHA: the fixed-n certificate at n = 100 (test_one_look_is_fixed_n)
    "early stopping": (lambda s, xs, seed: s.certify_target(xs, N0, 0.0, 100, ALPHA, BATCH, seed=seed),
                       lambda: fixed_rate(lambda _: 100), lambda: fixed_rate(lambda _: 100 - N0, pilot=True)),
    "early stopping, 5 looks": (lambda s, xs, seed: s.certify_target(xs, N0, 0.0, LOOKS_N_MAX, ALPHA, BATCH,
                                                                      futility="none", seed=seed),
                                lambda: sequential_rate(LOOKS_N_MAX), None),
}


def mode_failures(mode, seed):
    run = MODES[mode][0]
    m = margin(SIGMA)
    return failures(list(run(Smooth(Threshold(), Gaussian(SIGMA)), copies(m), seed)), m)


def test_one_look_is_fixed_n():
    assert UnionBound(ALPHA, 100).looks == (100,) and UnionBound(ALPHA, 100).levels == (ALPHA,)
    assert sequential_rate(100) == pytest.approx(fixed_rate(lambda _: 100), rel=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_every_vote_mode_is_sound_at_a_tie(mode):
    assert MODES[mode][1]() <= ALPHA                               # the design, computed exactly
    assert_sound(mode_failures(mode, seed=1), PLAN)                # the engine, counted


@pytest.mark.parametrize("mode", [m for m in MODES if MODES[m][2] is not None])
def test_estimation_from_the_selection_stream_is_caught(mode, monkeypatch):
    """Variant (a): 1.84 alpha at n = 100 (fixed n, nested, early stopping: the sound modes 0.97 alpha), 1.55
    alpha at n = 60 (sound 0.78 alpha)."""
    assert MODES[mode][2]() >= 1.4 * ALPHA
    unsound.estimation_from_selection_stream(monkeypatch)
    assert_caught(mode_failures(mode, seed=2), PLAN)


def test_pilot_votes_added_to_input_specific_n_are_caught(monkeypatch):
    """Variant (b): 1.60 alpha here (against 0.88 alpha for the sound mode)."""
    assert fixed_rate(input_n, pilot=True) >= 1.4 * ALPHA
    unsound.pilot_votes_added(monkeypatch)
    assert_caught(mode_failures("input-specific n", seed=3), PLAN)


def test_alpha_spent_at_every_look_is_caught(monkeypatch):
    """The union bound's accounting: alpha at each of the 5 looks fails at 2.06 alpha (0.61 alpha split)."""
    assert sequential_rate(LOOKS_N_MAX, every_look=True) >= 1.4 * ALPHA
    unsound.alpha_at_every_look(monkeypatch)
    assert_caught(mode_failures("early stopping, 5 looks", seed=4), PLAN)


def test_the_input_specific_n_varies_with_the_pilot_count():
    m = margin(SIGMA)
    certs = list(MODES["input-specific n"][0](Smooth(Threshold(), Gaussian(SIGMA)), copies(m, 200), 5))
    assert len({c.samples for c in certs}) >= 2 and {c.samples for c in certs} <= {input_n(t) for t in range(N0 + 1)}


# -- every mode's streams: a stream made twice in one call replays its noise -----------------------------------------
STREAM_MODES = {
    "certify_many": lambda s, xs: s.certify_many(xs, 10, 30, ALPHA, BATCH, seed=0),
    "certify_nested": lambda s, xs: s.certify_nested(xs, 10, [20, 30], ALPHA, BATCH, seed=0),
    "certify_input_n": lambda s, xs: s.certify_input_n(xs, 10, 100, ALPHA, BATCH, seed=0),
    "certify_target": lambda s, xs: s.certify_target(xs, 10, 0.1, 300, ALPHA, BATCH, seed=0),
    "certify_soft": lambda s, xs: s.certify_soft(xs, 10, 30, ALPHA, BATCH, seed=0),
    "soft-betting": lambda s, xs: s.certify_soft(xs, 10, 30, ALPHA, BATCH, certificate="soft-betting", seed=0),
    "confidence": lambda s, xs: s.confidence(xs, 10, 30, ALPHA, [0.3], BATCH, seed=0),
    "predict_many": lambda s, xs: s.predict_many(xs, 30, ALPHA, BATCH, seed=0),
}


def _streams_made(monkeypatch, mode):
    made = []
    make = modes_common.make_stream
    monkeypatch.setattr(modes_common, "make_stream", lambda *key: made.append(key[:3]) or make(*key))
    list(STREAM_MODES[mode](Smooth(Threshold(), Gaussian(SIGMA)), copies(0.1, 3)))
    return made


@pytest.mark.parametrize("mode", STREAM_MODES)
def test_no_mode_reads_a_stream_twice(mode, monkeypatch):
    """The soft and confidence bounds are too conservative at a tie for variant (a) to show in their failure
    counts (below), so every mode is also held to this: each (seed, input, stage) stream made once per call."""
    made = _streams_made(monkeypatch, mode)
    assert len(made) == len(set(made)) >= 3
    if mode != "predict_many":
        unsound.estimation_from_selection_stream(monkeypatch)
        again = _streams_made(monkeypatch, mode)
        assert len(again) > len(set(again))                       # the variant is seen


# -- soft certificates ------------------------------------------------------------------------------------------------
# Steep (logits +-50 x_0) is symmetric about x_0 = 0, so its smoothed SOFT classifier predicts class 1 at m > 0
# with exact radius m, like the vote classifier; at the vote tie its expected scores are 1/2 +- about 1e-4.
SOFT = ["soft-hoeffding", "soft-bernstein", "soft-lipschitz",
        pytest.param("soft-betting", marks=pytest.mark.slow)]


def soft_failures(name, sigma, seed, n=100, m=None):
    m = margin(sigma) if m is None else m
    certs = list(Smooth(Steep(), Gaussian(sigma)).certify_soft(copies(m), N0, n, ALPHA, BATCH, certificate=name,
                                                               seed=seed))
    return failures(certs, m), certs


@pytest.mark.parametrize("sigma", [0.25, 0.5])
@pytest.mark.parametrize("name", SOFT)
def test_soft_certificates_are_sound_at_a_tie(name, sigma):
    assert_sound(soft_failures(name, sigma, seed=6)[0], PLAN)


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_plug_in_soft_means_are_caught_at_a_tie(sigma, monkeypatch):
    """The margin radius of the sample means, no confidence bound: wrong about half the time at a tie."""
    from smoothcert.certificates import soft
    plug = lambda s0, s1, q1, n, noise, alpha, norm="l2", mode="margin": soft.from_bounds(   # noqa: E731
        soft.choose(s0), (s1 / n)[np.arange(len(s1)), soft.choose(s0)],
        np.where(np.arange(s1.shape[1])[None] == soft.choose(s0)[:, None], -1, s1 / n).max(1), noise, norm)
    monkeypatch.setitem(soft.CERTIFICATES, "soft-bernstein", plug)
    assert_caught(soft_failures("soft-bernstein", sigma, seed=7)[0], PLAN)


# soft-lipschitz against the truth where it is nearly tight: at m = 0.3 sigma the exact margin E_1 - E_0 is about
# 2 Phi(0.3) - 1 and sigma sqrt(pi/2) times it is 0.98 m; with n = 4000 the certified radius reaches ~0.8 m, so a
# constant too large by 1.25 already fails at 4.5 alpha (measured), and twice it (the [0, 1] constant misapplied)
# at 9.6 alpha, while the valid one fails at 0.006 alpha.
@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_soft_lipschitz_is_sound_where_it_is_nearly_tight(sigma):
    fails, certs = soft_failures("soft-lipschitz", sigma, seed=8, n=4000, m=0.3 * sigma)
    assert_sound(fails, PLAN)
    assert np.mean([c.radius for c in certs]) > 0.75 * 0.3 * sigma


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_a_lipschitz_constant_too_large_is_caught(sigma, monkeypatch):
    unsound.lipschitz_constant_of_a_unit_range(monkeypatch)
    assert_caught(soft_failures("soft-lipschitz", sigma, seed=8, n=4000, m=0.3 * sigma)[0], PLAN)


# -- certified confidence with coarse thresholds (10 layers, 32 bins) -----------------------------------------------
def steep_score(t, sigma):
    """E[score of class 1] of Steep at x_0 = t: E[sigmoid(2 k (t + sigma Z))]."""
    f = lambda z: special.expit(2 * Steep.k * (t + sigma * z)) * stats.norm.pdf(z)      # noqa: E731
    return integrate.quad(f, -12, 12, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def true_confidence_radius(m, sigma, c, cls):
    """The largest R with E[score of cls] >= c at every shift of norm <= R: the worst shift moves x_0 toward the
    boundary (down for class 1, up for class 0), along which the expected score is monotone."""
    level = c if cls == 1 else 1 - c
    t = optimize.brentq(lambda u: steep_score(u, sigma) - level, -20 * sigma, 20 * sigma, xtol=1e-14)
    return max(m - t, 0.0) if cls == 1 else max(t - m, 0.0)


THRESHOLDS = (0.2, 0.35, 0.45)                   # below 1/2: the class chosen at the tie has real radii


def confidence_failures(sigma, seed, measure="score"):
    """(CDF failures, baseline failures, results) over PLAN.reps inputs at the vote tie, 1000 samples each."""
    m = margin(sigma)
    levels = THRESHOLDS if measure == "score" else tuple(2 * c - 1 for c in THRESHOLDS)
    out = list(Smooth(Steep(), Gaussian(sigma)).confidence(copies(m), N0, 1000, ALPHA, levels, BATCH, seed=seed,
                                                           measure=measure, num_thresholds=10, bins=32))
    truth = {cls: np.array([true_confidence_radius(m, sigma, c, cls) for c in THRESHOLDS]) for cls in (0, 1)}
    cdf = sum(int(np.any(o.cdf > truth[o.candidate] + 1e-9)) for o in out)
    base = sum(int(np.any(o.baseline > truth[o.candidate] + 1e-9)) for o in out)
    return cdf, base, out


@pytest.mark.parametrize("sigma,measure", [(0.25, "score"), (0.5, "score"), (0.5, "margin")])
def test_confidence_with_coarse_thresholds_is_sound_at_a_tie(sigma, measure):
    """A result fails if any of its thresholds' radii is beyond the truth (a union over thresholds: stricter)."""
    cdf, base, out = confidence_failures(sigma, seed=9, measure=measure)
    assert_sound(cdf, PLAN)
    assert_sound(base, PLAN)
    assert np.mean([o.cdf[0] > 0 for o in out]) > 0.9               # it certifies a real radius at c = 0.2


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_a_layer_cake_off_by_one_is_caught_at_coarse_thresholds(sigma, monkeypatch):
    unsound.layers_weighted_by_the_width_above(monkeypatch)
    assert_caught(confidence_failures(sigma, seed=10)[0], PLAN)


# -- betting: predictable bets on a rare class's scores, fed as one batch -------------------------------------------
def betting_failures(seed, n=300, mu=0.03):
    """Bernoulli(mu) values of PLAN.reps rows, all in ONE update laid out as the engine does (row after row):
    every bet inside it must come from the row's earlier values only. (lower failures, upper failures)."""
    x = (np.random.default_rng(seed).random((PLAN.reps, n)) < mu).astype(float)
    bt = Betting(PLAN.reps, n, ALPHA, grid=128)
    bt.update(x.reshape(-1), np.repeat(np.arange(PLAN.reps), n))
    return int(np.sum(bt.lower(ALPHA) > mu)), int(np.sum(bt.upper(ALPHA) < mu))


def test_betting_fed_one_batch_is_sound_on_a_rare_class():
    low, up = betting_failures(seed=11)
    assert_sound(low, PLAN)
    assert_sound(up, PLAN)


def test_bets_placed_with_their_own_block_are_caught(monkeypatch):
    unsound.bets_from_their_own_block(monkeypatch)
    low, up = betting_failures(seed=11)
    assert_caught(low, PLAN)
    assert_caught(up, PLAN)
