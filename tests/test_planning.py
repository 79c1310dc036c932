"""smoothcert.planning: exact expectations against brute force, the papers' approximations against them (where
ERRATA says they are off), predictions from a run, and the input-specific n (sound; Chen et al.'s reuse is not)."""
import math

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import betaln

from smoothcert import Gaussian, Laplace, SmoothcertError
from smoothcert import planning as P
from smoothcert.bounds import clopper_pearson_lower
from smoothcert.certificates import certify
from smoothcert.cli import main
from smoothcert.files import CERTIFY_COLUMNS, encode_counts, write_all
from soundness import assert_caught, assert_sound, plan

G = Gaussian(0.25)


def brute_radii(n, alpha, noise, norm):
    """r_k for every k, from scipy.stats.beta.ppf (not smoothcert's betaincinv) and CERTIFY's abstain rule."""
    k = np.arange(n + 1)
    low = np.where(k == 0, 0.0, stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1))
    return low, np.where(low >= 0.5, noise.radius(low, norm), 0.0)


@pytest.mark.parametrize("noise,norm", [(G, "l2"), (Laplace(0.2), "l1")])
@pytest.mark.parametrize("n", [1, 30, 257])
def test_expected_radius_and_certified_probability_match_full_enumeration(noise, norm, n):
    alpha, ps = 0.01, np.array([0.0, 0.3, 0.5, 0.77, 0.9, 0.99, 1.0])
    low, r = brute_radii(n, alpha, noise, norm)
    pmf = stats.binom.pmf(np.arange(n + 1)[None, :], n, ps[:, None])
    assert P.expected_radius(ps, n, alpha, noise, norm) == pytest.approx(pmf @ r, rel=1e-9, abs=1e-14)
    for radius in (0.0, 0.1, 0.3):
        hit = (low >= 0.5) & (r >= radius)
        assert P.certified_probability(ps, n, alpha, noise, radius, norm) == pytest.approx(pmf @ hit, abs=1e-12)


def test_expected_radius_at_large_n_matches_an_mpmath_sum_over_its_window():
    # n = 100,000, pA = 0.97: the exact pmf in mpmath over +-12 sd (the rest is < 1e-30) against the 1e-14 window
    n, p, alpha = 100_000, 0.97, 0.001
    sd = math.sqrt(n * p * (1 - p))
    k = np.arange(int(n * p - 12 * sd), int(n * p + 12 * sd))
    _, r = brute_radii(n, alpha, G, "l2")
    mp.mp.dps = 30
    pmf = [float(mp.binomial(n, int(j)) * mp.mpf(p) ** int(j) * mp.mpf(1 - p) ** int(n - j)) for j in k]
    assert P.expected_radius(p, n, alpha, G) == pytest.approx(float(np.dot(pmf, r[k])), rel=1e-10)


def test_certainty_gives_the_radius_of_unanimous_votes():
    # pA = 1: X = n, radius = sigma Phi^-1(alpha^(1/n)) (CP lower bound of n out of n)
    unanimous = 0.25 * stats.norm.ppf(0.001 ** (1 / 1000))
    assert P.expected_radius(1.0, 1000, 0.001, G) == pytest.approx(unanimous, rel=1e-12)
    assert P.expected_radius(0.2, 1000, 0.001, G) == 0.0
    assert 0 < P.expected_radius(0.5, 1000, 0.001, G) < 1e-5       # only the far upper tail certifies


def test_bad_arguments_raise_smoothcert_errors():
    for call in (lambda: P.expected_radius(1.2, 10, 0.1, G), lambda: P.expected_radius(0.5, 0, 0.1, G),
                 lambda: P.expected_radius(0.5, 10, 1.5, G), lambda: P.expected_radius(0.5, 10, 0.1, Laplace(1), "l2"),
                 lambda: P.choose_n(101, 100, 1000, 0.01, G, 0.02), lambda: P.choose_n(50, 100, 1000, 0.01, G, 1.5),
                 lambda: P.theta(0.3)):
        with pytest.raises(SmoothcertError):
            call()


# ---- the papers' approximations against the exact values (shared/papers/ERRATA.md, 002/003) ----

def test_z_is_one_sided():
    assert P.z_one_sided(0.001) == pytest.approx(3.0902, abs=1e-4)      # 003 uses the two-sided 3.2905


def test_lemma_4_2_delta_is_not_negligible():
    # ERRATA: delta ~ -0.0022 at pA = 0.95, n = 1000 with 003's two-sided z (not +-0.0006); with the one-sided z
    # of the bound actually computed Clopper-Pearson sits even further below the Wald approximation.
    exact = P.expected_lower_bound(0.95, 1000, 0.001)
    assert exact - (0.95 - 3.2905 * math.sqrt(0.95 * 0.05 / 1000)) == pytest.approx(-0.0022, abs=1e-4)
    assert exact - P.lower_bound_approx(0.95, 1000, 0.001) == pytest.approx(-0.0036, abs=1e-4)


def test_theta_and_h_follow_the_errata_not_003():
    assert P.theta(0.5) == pytest.approx(2.02, abs=0.01)                  # Thm 4.5 case 2 (003 rounds to 2)
    thetas = [P.theta(b) for b in np.linspace(0.8, 0.99, 20)]
    assert min(thetas) == pytest.approx(1.46, abs=0.01) and max(thetas) == pytest.approx(2.18, abs=0.01)  # not 1.64
    h = P.h_ratio(np.linspace(0.8, 0.99, 2000))
    assert h.min() == pytest.approx(9.61, abs=0.01) and h.max() == pytest.approx(12.65, abs=0.01)   # not ~12.14
    assert P.h_ratio(0.999) > 20 and P.h_ratio(1 - 1e-9) > 40                # diverges as p -> 1
    # 003 eq. 28: sigma (0.796 - 1.603 z / sqrt(n)); exactly phi(0) / (1/2) = 0.798, and Theta(1/2) = 1.609 / 0.797
    assert P.uniform_average_radius(10_000, 0.001, 1.0)[1] == pytest.approx(2 * stats.norm.pdf(0), rel=1e-12)


def test_uniform_average_radius_matches_quadrature_of_the_expected_radius():
    n, alpha = 300, 0.01
    f = lambda p: P.expected_radius(p, n, alpha, Gaussian(1.0))
    want = integrate.quad(f, 0.6, 1, limit=200, epsabs=1e-10)[0] / 0.4
    assert P.uniform_average_radius(n, alpha, 1.0, beta=0.6)[0] == pytest.approx(want, rel=1e-6)
    inf = integrate.quad(lambda p: stats.norm.ppf(p), 0.6, 1)[0] / 0.4
    assert P.uniform_average_radius(n, alpha, 1.0, beta=0.6)[1] == pytest.approx(inf, rel=1e-8)


def test_average_radius_ratio_approximation_is_off_at_small_n():
    # ERRATA: 1 - Theta z / sqrt(n) is negative for small n and badly off for n <= 100; fine by n = 10,000.
    ratio = lambda n: np.divide(*P.uniform_average_radius(n, 0.001, 1.0))
    assert P.radius_ratio_approx(38, 0.001) < 0 < ratio(38)
    assert ratio(100) - P.radius_ratio_approx(100, 0.001) > 0.1
    assert abs(ratio(10_000) - P.radius_ratio_approx(10_000, 0.001)) < 0.002


def test_accuracy_drop_of_thm_4_6_is_attained_and_exceeded():
    # ERRATA: z / sqrt(n) is a first-order approximation, not a bound: with the one-sided z it is exceeded near r0 = 0
    for n in (1000, 10_000):
        drop = P.uniform_accuracy_drop(n, 0.001, 1.0, 0.0)
        assert drop > P.accuracy_drop_approx(n, 0.001)
        assert drop == pytest.approx(P.accuracy_drop_approx(n, 0.001), rel=0.02)


def test_approximation_table_good_at_large_n_and_off_at_small_n():
    rows = {row.n: row for row in P.approximation_table(0.9, [25, 1000, 100_000], 0.001, 0.25)}
    assert rows[100_000].radius_eq10 == pytest.approx(rows[100_000].radius_exact, rel=1e-3)
    assert rows[1000].radius_eq10 == pytest.approx(rows[1000].radius_exact, rel=0.02)
    assert rows[1000].radius_eq11 == pytest.approx(rows[1000].radius_exact, rel=0.01)
    assert rows[25].radius_eq10 > 1.9 * rows[25].radius_exact       # eq. 10 doubles the radius at n = 25
    assert rows[1000].lower_exact < rows[1000].lower_approx         # Clopper-Pearson is below the Wald approximation
    rows = {row.n: row for row in P.approximation_table(0.99, [10], 0.001, 0.25)}
    assert rows[10].radius_eq11 < 0 < rows[10].radius_exact < 0.001 < rows[10].radius_eq10 / 100   # eq. 11 negative


# ---- predictions from a results run ----

def write_run(path, p_true, n, alpha=0.001, rng=None, label_wrong=(), certificate="cohen"):
    """A certify TSV whose input i has class 1 selected and Bin(n, p_true[i]) estimation votes for it."""
    rng = np.random.default_rng(0) if rng is None else rng
    rows = []
    for i, p in enumerate(p_true):
        k = int(rng.binomial(n, p))
        sel, est = np.array([0, 100]), np.array([n - k, k])
        v = certify("cohen", sel, est, G, alpha)
        label = 0 if i in label_wrong else 1
        rows.append({"idx": i, "label": label, "predict": int(v.prediction[0]), "radius": repr(float(v.radius[0])),
                     "correct": int(v.prediction[0] == label), "time": "0:00:00", "noise": "gaussian", "scale": 0.25,
                     "certificate": certificate, "norm": "l2", "alpha": alpha, "n0": 100, "n": n, "seed": 0,
                     "mode": "fixed", "model": "sha256:0", "samples": n,
                     "pA_lower": repr(float(v.p_lower[0])), "pB_upper": "nan", "num_classes": 2,
                     "counts_selection": encode_counts(sel), "counts": encode_counts(est)})
    write_all(str(path), CERTIFY_COLUMNS, rows)
    return rows


def test_prediction_from_a_large_run_matches_the_exact_expectation_at_the_true_pa(tmp_path):
    rng = np.random.default_rng(1)
    p_true = np.concatenate([rng.uniform(0.5, 1, 150), np.ones(50)])
    write_run(tmp_path / "run.tsv", p_true, 100_000, label_wrong=range(10), rng=rng)
    run = P.load_run(str(tmp_path / "run.tsv"))
    assert run.n == 100_000 and run.correct.sum() == 190
    pred = P.predict(run, [100, 1000], radii=[0.25, 0.5])
    w = (np.arange(200) >= 10) / 200
    for j, n in enumerate((100, 1000)):
        assert pred.acr[j] == pytest.approx(w @ P.expected_radius(p_true, n, 0.001, G), rel=0.005)
        assert pred.certified_accuracy[j, 1] == pytest.approx(
            w @ P.certified_probability(p_true, n, 0.001, G, 0.5), abs=0.005)


def test_prediction_matches_a_measured_small_run(tmp_path):
    # the measured ACR at n = 1000 of 400 inputs vs the prediction from their n = 100,000 run: within 5 %
    rng = np.random.default_rng(2)
    p_true = rng.beta(8, 1, 400)
    write_run(tmp_path / "big.tsv", p_true, 100_000, rng=rng)
    small = write_run(tmp_path / "small.tsv", p_true, 1000, rng=rng)
    measured = np.mean([float(r["radius"]) for r in small])
    assert P.predict(P.load_run(str(tmp_path / "big.tsv")), [1000]).acr[0] == pytest.approx(measured, rel=0.05)


def test_recommend_n_is_the_smallest_grid_n_keeping_the_fraction(tmp_path):
    write_run(tmp_path / "run.tsv", np.random.default_rng(3).uniform(0.6, 1, 100), 10_000)
    run = P.load_run(str(tmp_path / "run.tsv"))
    grid = P.default_grid(10_000)
    acr = P.predict(run, grid).acr
    assert np.all(np.diff(acr) >= -1e-12)
    n = P.recommend_n(run, keep=0.9)
    assert acr[grid.index(n)] >= 0.9 * acr[-1] > acr[grid.index(n) - 1]
    assert P.recommend_n(run, keep=1.0) == 10_000


def test_load_run_refuses_what_it_cannot_predict(tmp_path):
    write_run(tmp_path / "margin.tsv", [0.9, 0.8], 1000, certificate="margin")
    with pytest.raises(SmoothcertError, match="^[^(]*certificate 'margin' is not the one-sided"):
        P.load_run(str(tmp_path / "margin.tsv"))
    rows = write_run(tmp_path / "mixed.tsv", [0.9, 0.8], 1000)
    rows[1]["n"] = rows[1]["samples"] = 2000
    rows[1]["counts"] = "0:1000,1:1000"
    write_all(str(tmp_path / "mixed.tsv"), CERTIFY_COLUMNS, rows)
    with pytest.raises(SmoothcertError, match="varies"):
        P.load_run(str(tmp_path / "mixed.tsv"))
    rows[1]["n"] = rows[1]["samples"] = 1000
    rows[1]["counts"] = "1:x"
    write_all(str(tmp_path / "bad.tsv"), CERTIFY_COLUMNS, rows)
    with pytest.raises(SmoothcertError, match="line 3: a count in counts must be an integer"):
        P.load_run(str(tmp_path / "bad.tsv"))
    (tmp_path / "other.tsv").write_text("idx\tlabel\n0\t1\n")
    with pytest.raises(SmoothcertError, match="not a smoothcert results file of this kind"):
        P.load_run(str(tmp_path / "other.tsv"))


# ---- input-specific n (issue 8 item 3) ----

def posterior_radius(k0, n0, n):
    """E over the Jeffreys posterior Beta(k0 + 1/2, n0 - k0 + 1/2) of the expected radius (adaptive quadrature)."""
    a, b = k0 + 0.5, n0 - k0 + 0.5
    f = lambda p: float(P.expected_radius(p, n, 0.001, G)) * math.exp((a - 1) * math.log(p) - betaln(a, b))
    body = integrate.quad(lambda p: f(p) * (1 - p) ** (b - 1), 0.4, 0.99, limit=200)[0]   # the radius is 0 below 0.4
    return body + integrate.quad(f, 0.99, 1, weight="alg", wvar=(0, b - 1), limit=200)[0]  # (1 - p)^(b - 1) as weight


@pytest.mark.parametrize("estimate", ["jeffreys", "posterior"])
def test_choose_n_meets_its_loss_criterion_and_is_the_smallest_on_the_grid(estimate):
    grid = P.default_grid(100_000)
    for k0 in (60, 97, 100):
        for relative, loss in ((True, 0.02), (False, 0.01)):
            n = P.choose_n(k0, 100, 100_000, 0.001, G, loss, relative=relative, estimate=estimate)
            if estimate == "jeffreys":
                e = lambda m: float(P.expected_radius((k0 + 0.5) / 101, m, 0.001, G))
            else:
                e = lambda m: posterior_radius(k0, 100, m)
            need = (1 - loss) * e(100_000) if relative else e(100_000) - loss
            assert e(n) >= need - 1e-6
            assert n == grid[0] or e(grid[grid.index(n) - 1]) < need
    assert P.choose_n(20, 100, 100_000, 0.001, G, 0.02, estimate=estimate) == 10   # pA ~ 0.2: abstains anyway
    assert P.choose_n(100, 100, 100_000, 0.001, G, 0.0, estimate=estimate) == 100_000


def chosen_table(n0, alpha, loss):
    grid = (10, 30, 100, 300, 1000)
    return {k0: P.choose_n(k0, n0, 1000, alpha, G, loss, grid=grid) for k0 in range(n0 + 1)}


def cp_lower_scipy(k, n, alpha):
    return np.where(k == 0, 0.0, stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1))


def test_input_specific_n_keeps_level_alpha_exactly():
    # P(failure) = sum_k0 P(k0) P(CP_lower(Bin(n(k0), p), n(k0)) > p), computed exactly: <= alpha at every p
    n0, alpha = 50, 0.05
    table = chosen_table(n0, alpha, 0.2)
    assert len(set(table.values())) >= 3                       # the choice really varies with the selection
    for p in (0.55, 0.7, 0.81, 0.9, 0.97):
        fail = sum(stats.binom.pmf(k0, n0, p) * stats.binom.pmf(np.arange(n + 1), n, p)
                   @ (cp_lower_scipy(np.arange(n + 1), n, alpha) > p) for k0, n in table.items())
        assert fail <= alpha


# Two classes at exactly 1/2: A is the class with more of the n0 pilot votes, n = choose_n(its count), and the
# bound on P(A) must not exceed 1/2. Chen et al.'s code counts the pilot votes in the bound (reuse).
TIE = dict(n0=30, alpha=0.05, loss=0.5)


def tie_failure_rate(reuse):
    n0, alpha = TIE["n0"], TIE["alpha"]
    table, rate = chosen_table(n0, alpha, TIE["loss"]), 0.0
    for k0 in range(n0 + 1):
        top = max(k0, n0 - k0)
        total, base = (max(table[top], n0), top) if reuse else (table[top], 0)
        fresh = total - n0 if reuse else total
        j = np.arange(fresh + 1)                                 # the fresh votes for A
        wrong = cp_lower_scipy(base + j, total, alpha) > 0.5
        rate += stats.binom.pmf(k0, n0, 0.5) * stats.binom.pmf(j, fresh, 0.5) @ wrong
    return rate


def tie_failures(reps, reuse, seed):
    n0, alpha = TIE["n0"], TIE["alpha"]
    rng, table = np.random.default_rng(seed), chosen_table(n0, alpha, TIE["loss"])
    k0 = rng.binomial(n0, 0.5, reps)
    top = np.maximum(k0, n0 - k0)
    n = np.array([table[k] for k in top])
    if reuse:
        total = np.maximum(n, n0)
        k = top + rng.binomial(total - n0, 0.5)
    else:
        total, k = n, rng.binomial(n, 0.5)
    return int(np.sum(clopper_pearson_lower(k, total, alpha) > 0.5))


def test_input_specific_n_is_sound_at_a_tie():
    assert tie_failure_rate(reuse=False) <= TIE["alpha"]
    p = plan(TIE["alpha"], bad=tie_failure_rate(reuse=True))
    assert_sound(tie_failures(p.reps, reuse=False, seed=0), p)


def test_reusing_the_pilot_samples_is_caught():
    rate = tie_failure_rate(reuse=True)
    assert rate > 1.4 * TIE["alpha"]                           # exactly: 1.53 alpha
    assert_caught(tie_failures(plan(TIE["alpha"], bad=rate).reps, reuse=True, seed=0), plan(TIE["alpha"], bad=rate))


# ---- smoothcert plan ----

def test_cli_plan_prints_the_expected_radius_against_n(capsys):
    assert main(["plan", "--p-a", "0.9", "--sigma", "0.25", "--alpha", "0.001", "--n", "100,1000"]) == 0
    out = capsys.readouterr().out
    assert "1000" in out and f"{P.expected_radius(0.9, 1000, 0.001, G):.4f}" in out


def test_cli_plan_predicts_from_a_run_and_recommends_n(tmp_path, capsys):
    write_run(tmp_path / "run.tsv", np.random.default_rng(4).uniform(0.6, 1, 50), 10_000)
    assert main(["plan", "--results", str(tmp_path / "run.tsv"), "--n", "100,1000", "--keep", "0.9"]) == 0
    out = capsys.readouterr().out
    run = P.load_run(str(tmp_path / "run.tsv"))
    assert f"{P.predict(run, [1000]).acr[0]:.4f}" in out and f"n = {P.recommend_n(run, 0.9)}" in out


@pytest.mark.parametrize("args", [["--p-a", "1.5", "--sigma", "0.25"], ["--p-a", "0.9"], ["--n", "100"],
                                  ["--results", "/nonexistent.tsv"], ["--p-a", "0.9", "--sigma", "0.25", "--n", "x"]])
def test_cli_plan_bad_input_is_one_line(args, capsys):
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smoothcert plan: error:") and err.count("\n") == 1


@pytest.mark.parametrize("column,value,message", [
    ("scale", "abc", "line 2: scale and alpha must be numbers, got 'abc'"),
    ("n", "1e3", "line 2: n must be an integer, got '1e3'"),
    ("alpha", "x", "line 2: scale and alpha must be numbers"),
    ("radius", "abc", "line 2: radius must be a number, got 'abc'"),
])
def test_load_run_checks_every_row_before_reading_its_settings(tmp_path, column, value, message):
    """The settings used to be parsed with float()/int() before any row check: 'could not convert string...'."""
    rows = write_run(tmp_path / "run.tsv", [0.9, 0.8], 1000)
    for row in rows:
        row[column] = value
    write_all(str(tmp_path / "bad.tsv"), CERTIFY_COLUMNS, rows)
    with pytest.raises(SmoothcertError, match=f"^{tmp_path / 'bad.tsv'} {message}"):
        P.load_run(str(tmp_path / "bad.tsv"))


def test_load_run_names_the_line_whose_parsed_setting_varies(tmp_path):
    rows = write_run(tmp_path / "run.tsv", [0.9, 0.8, 0.7], 1000)
    rows[2]["scale"] = "0.5"
    write_all(str(tmp_path / "mixed.tsv"), CERTIFY_COLUMNS, rows)
    with pytest.raises(SmoothcertError, match=r"line 4: scale 0.5 varies between rows \(0.25 on line 2\)"):
        P.load_run(str(tmp_path / "mixed.tsv"))
    rows[2]["scale"] = "0.250"                         # the same number written otherwise: one setting
    write_all(str(tmp_path / "same.tsv"), CERTIFY_COLUMNS, rows)
    assert P.load_run(str(tmp_path / "same.tsv")).noise == G


@pytest.mark.parametrize("args,message", [
    (["--radii", "nan"], "--radii must be finite numbers >= 0"),
    (["--radii", "-1"], "--radii must be finite numbers >= 0"),
    (["--radii", "inf"], "--radii must be finite numbers >= 0"),
    (["--radii", ","], "--radii ',' gives no radii"),
    (["--keep", "2"], "keep must lie in (0, 1]"),
    (["--n", ","], "--n ',' gives no numbers of samples"),
    (["--n", "0"], "--n must be integers in [1, "),
    (["--sigma", "0.5"], "--sigma: for --p-a only"),
    (["--noise", "laplace", "--lam", "0.2"], "--noise, --lam: for --p-a only"),
    (["--alpha", "0.01"], "--alpha: for --p-a only"),
])
def test_cli_plan_from_a_run_refuses_bad_options_before_printing(tmp_path, capsys, args, message):
    write_run(tmp_path / "run.tsv", [0.9, 0.8], 1000)
    assert main(["plan", "--results", str(tmp_path / "run.tsv"), "--n", "100,1000", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("smoothcert plan: error:") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("args,message", [
    (["--n", ","], "--n ',' gives no numbers of samples"),
    (["--keep", "0.5"], "--radii and --keep go with --results"),
    (["--radii", "0,1"], "--radii and --keep go with --results"),
    (["--p-a", "nan"], "--p-a must lie in [0, 1]"),
])
def test_cli_plan_at_one_pa_refuses_what_it_would_ignore(capsys, args, message):
    base = {"--p-a": "0.9", "--sigma": "0.25"}
    base.update(zip(args[::2], args[1::2]))
    assert main(["plan", *[x for kv in base.items() for x in kv]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("smoothcert plan: error:") and err.count("\n") == 1 and message in err
