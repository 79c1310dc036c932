"""Soft scores through the engine (issue 9): soft certificates and certified confidence from `certify`,
`confidence` and `recertify`, their stored statistics, and their soundness on a classifier whose smoothed
expected score is known in closed form."""
import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

from conftest import Steep, Threshold, certify_args, rows, without_time
from smoothcert import Gaussian, Smooth
from smoothcert.certificates import confidence as conf
from smoothcert.bounds import cdf as cdf_bounds
from smoothcert.bounds.mean import Betting
from smoothcert.certificates import ABSTAIN
from smoothcert.cli import main
from smoothcert.engine import BettingScores, MeasureHistogram, Request, Sampler, ScoreSums
from soundness import assert_caught, assert_sound, plan

# Threshold's logits are (-x0, x0): its softmax score of class 1 is sigmoid(2 x0). Under N(0, sigma^2) noise the
# expected score of class 1 at x0 = m is E[sigmoid(2 (m + sigma Z))], increasing in m, 1/2 exactly at m = 0: the
# smoothed SOFT classifier's decision boundary is x0 = 0, so its exact l2 robust radius at m is |m|, and the worst
# shift of norm R for any expected-score claim is along x0.


def expected_score(m, sigma):
    """E[sigmoid(2 (m + sigma Z))], Z ~ N(0, 1): a one-dimensional integral."""
    f = lambda z: stats.norm.pdf(z) / (1 + np.exp(-2 * (m + sigma * z)))
    return integrate.quad(f, -12, 12, epsabs=1e-13)[0]


def true_confidence_radius(m, sigma, c):
    """The largest R with expected_score(m - R) >= c (0 if already below): the exact certified-confidence radius."""
    if expected_score(m, sigma) <= c:
        return 0.0
    return optimize.brentq(lambda r: expected_score(m - r, sigma) - c, 0, m + 20 * sigma, xtol=1e-12)


# -- the statistics ------------------------------------------------------------------------------------------------
def test_score_statistics_match_a_direct_computation_on_the_same_samples():
    recorded = []

    class Recording(Threshold):
        def forward(self, x):
            recorded.append(x.clone())
            return super().forward(x)

    s = Sampler(Recording(), Gaussian(0.5), 2, batch_size=64)
    xs = torch.tensor([[0.3], [-0.2]], dtype=torch.float64)
    reqs = [Request(0, torch.Generator().manual_seed(1), 150), Request(1, torch.Generator().manual_seed(2), 90)]
    classes = [1, 0]
    (hist, sums), (a, other), (ssum, ssq) = s.run(xs, reqs, [MeasureHistogram(classes, "margin", 4096),
                                                             BettingScores(classes, 150, 0.05, 256, 256), ScoreSums()])
    noisy = torch.cat(recorded)
    rows_ = noisy[:240, 0]                                  # requests lie back to back: 150 then 90 (no padding)
    owner = np.repeat([0, 1], [150, 90])
    scores = torch.softmax(torch.stack([-rows_, rows_], 1).double(), 1).numpy()
    a_score = scores[np.arange(240), np.array(classes)[owner]]
    margin = a_score - scores[np.arange(240), 1 - np.array(classes)[owner]]
    for r in range(2):
        mine = owner == r
        assert hist[r].sum() == mine.sum() and sums[r] == pytest.approx(margin[mine].sum(), abs=1e-9)
        assert np.array_equal(hist[r], conf.histogram(margin[mine], "margin")[0])
        np.testing.assert_allclose(ssum[r], scores[mine].sum(0), atol=1e-9)
    ref = Betting(2, 150, 0.05, 256, sides="lower")
    ref.update(torch.as_tensor(a_score), torch.as_tensor(owner))
    np.testing.assert_array_equal(ref.lower(0.05), a.lower(0.05))


# -- soft certificates -----------------------------------------------------------------------------------------------
SOFT = ["soft-hoeffding", "soft-bernstein", "soft-lipschitz", "soft-betting"]


def _soft_failures(name, m, sigma, alpha, reps, seed=0):
    xs = torch.full((reps, 1), m, dtype=torch.float64)
    certs = list(Smooth(Steep(), Gaussian(sigma)).certify_soft(xs, 20, 200, alpha, 20_000, seed=seed,
                                                               certificate=name))
    true_class = 1 if m > 0 else 0
    return sum(c.prediction != ABSTAIN and (c.prediction != true_class or c.radius > abs(m) * (1 + 1e-12))
               for c in certs), certs


@pytest.mark.parametrize("name,alpha", [(name, 0.1) for name in SOFT[:3]] + [   # soft-betting's fast soundness
    pytest.param("soft-betting", 0.1, marks=pytest.mark.slow)])                      # tests are in test_soft.py
def test_soft_certificates_through_the_engine_are_sound(name, alpha):
    sigma = 0.5
    p = plan(alpha)
    for m in (0.02, 0.6):                                  # near the boundary; where the radius nearly reaches m
        fails, certs = _soft_failures(name, m, sigma, alpha, p.reps)
        assert_sound(fails, p)
    assert np.mean([c.radius for c in certs]) > 0.1 * m    # it does certify a real radius


def test_sound_harness_catches_plug_in_soft_means(monkeypatch):
    """Negative control: the soft margin radius of the empirical means, with no confidence bound."""
    from smoothcert.certificates import soft
    plug = lambda s0, s1, q1, n, noise, alpha, norm="l2", mode="margin": soft.from_bounds(
        soft.choose(s0), (s1 / n)[np.arange(len(s1)), soft.choose(s0)],
        np.where(np.arange(s1.shape[1])[None] == soft.choose(s0)[:, None], -1, s1 / n).max(1), noise, norm)
    monkeypatch.setitem(soft.CERTIFICATES, "soft-bernstein", plug)
    p = plan(0.1)
    fails, _ = _soft_failures("soft-bernstein", 0.6, 0.5, 0.1, p.reps)
    assert_caught(fails, p)


def test_soft_cli_stores_scores_and_recertify_converts_between_soft_names(tmp_path, model_pt2, npz_data):
    out = tmp_path / "soft.tsv"
    assert main(certify_args(model_pt2, npz_data, out, "--certificate", "soft-bernstein")) == 0
    table = rows(out)
    assert {"scores_selection", "scores"} <= set(table[0]) and table[0]["certificate"] == "soft-bernstein"
    for name in ("soft-hoeffding", "soft-lipschitz", "cohen"):
        again, direct = tmp_path / f"re_{name}.tsv", tmp_path / f"direct_{name}.tsv"
        assert main(["recertify", str(out), "--certificate", name, "--out", str(again)]) == 0
        if name.startswith("soft"):
            assert main(certify_args(model_pt2, npz_data, direct, "--certificate", name)) == 0
            assert without_time(again) == without_time(direct)
        else:                                                    # the votes are stored too
            hard = tmp_path / "hard.tsv"
            assert main(certify_args(model_pt2, npz_data, hard)) == 0
            assert [r["radius"] for r in rows(again)] == [r["radius"] for r in rows(hard)]


def test_a_soft_run_resumes_like_any_other(tmp_path, model_pt2, npz_data):
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    assert main(certify_args(model_pt2, npz_data, full, "--certificate", "soft-betting")) == 0
    assert main(certify_args(model_pt2, npz_data, part, "--certificate", "soft-betting", "--max", "5")) == 0
    assert main(certify_args(model_pt2, npz_data, part, "--certificate", "soft-betting")) == 0
    assert without_time(part) == without_time(full)


# -- certified confidence -------------------------------------------------------------------------------------------
def _confidence_failures(m, sigma, alpha, c, reps, seed=0, num_thresholds=None):
    xs = torch.full((reps, 1), m, dtype=torch.float64)
    out = list(Smooth(Threshold(), Gaussian(sigma)).confidence(xs, 20, 1000, alpha, [c], 20_000, seed=seed,
                                                               num_thresholds=num_thresholds))
    truth = true_confidence_radius(m, sigma, c)
    wrong = lambda r, pred: pred != 1 and r > 0 or r > truth + 1e-9
    return (sum(wrong(o.cdf[0], o.candidate) for o in out), sum(wrong(o.baseline[0], o.candidate) for o in out),
            out, truth)


@pytest.mark.parametrize("m,c", [(0.4, 0.55), (0.8, 0.6)])
def test_certified_confidence_radii_are_sound(m, c):
    """The score is a monotone function of one Gaussian coordinate, so Thm 2 at the TRUE distribution is exact:
    the CDF certificate's own formula at the truth is the true radius; only the DKW band keeps it below."""
    sigma, alpha = 0.5, 0.1
    p = plan(alpha)
    cdf_fails, base_fails, out, truth = _confidence_failures(m, sigma, alpha, c, p.reps)
    assert truth > 0 and np.mean([o.cdf[0] for o in out]) > 0.5 * truth     # it certifies a real radius
    assert_sound(cdf_fails, p)
    assert_sound(base_fails, p)


def test_sound_harness_catches_the_cdf_certificate_without_its_dkw_band(monkeypatch):
    """Negative control: the empirical CDF used as if it were the true one (the DKW band shrunk a millionfold)."""
    real = cdf_bounds.dkw_epsilon
    monkeypatch.setattr(cdf_bounds, "dkw_epsilon", lambda m, alpha, two_sided=False: 1e-6 * real(m, alpha, two_sided))
    p = plan(0.1)
    cdf_fails, _, _, _ = _confidence_failures(0.8, 0.5, 0.1, 0.6, p.reps)
    assert_caught(cdf_fails, p)


def test_confidence_cli_resumes_and_recertifies_to_the_same_radii(tmp_path, model_pt2, npz_data, capsys):
    args = ["confidence"] + certify_args(model_pt2, npz_data, tmp_path / "c.tsv")[1:]
    args[args.index("--n0") + 1] = "50"
    i = args.index("--sigma")
    args = args[:i] + args[i + 2:] + ["--sigma", "0.25"]
    assert main(args + ["--thresholds", "0.4,0.6"]) == 0
    table = rows(tmp_path / "c.tsv")
    assert {"cdf@0.4", "baseline@0.4", "cdf@0.6", "baseline@0.6", "histogram", "measure_sum"} <= set(table[0])
    assert all(sum(int(kv.split(":")[1]) for kv in r["histogram"].split(",")) == 300 for r in table)
    again = tmp_path / "again.tsv"
    assert main(["recertify", str(tmp_path / "c.tsv"), "--out", str(again)]) == 0
    assert without_time(again) == without_time(tmp_path / "c.tsv")
    part = tmp_path / "part.tsv"
    pargs = [a if a != str(tmp_path / "c.tsv") else str(part) for a in args]
    assert main(pargs + ["--thresholds", "0.4,0.6", "--max", "4"]) == 0
    assert main(pargs + ["--thresholds", "0.4,0.6"]) == 0
    assert without_time(part) == without_time(tmp_path / "c.tsv")
    capsys.readouterr()
    assert main(pargs + ["--thresholds", "1.5"]) == 2 and "thresholds must lie" in capsys.readouterr().err
    assert main(pargs + ["--thresholds", "0.4,0.6", "--noise", "laplace", "--lam", "0.2"]) == 2


def test_analyze_reads_a_confidence_file_into_a_table_and_001s_figures(tmp_path, model_pt2, npz_data, capsys):
    from smoothcert.analysis import load_confidence
    path = tmp_path / "c.tsv"
    args = ["confidence"] + certify_args(model_pt2, npz_data, path)[1:] + ["--thresholds", "0.4,0.6"]
    assert main(args) == 0
    res = load_confidence(path)
    table = rows(path)
    np.testing.assert_array_equal(res.cdf[:, 1], [float(r["cdf@0.6"]) for r in table])
    capsys.readouterr()
    assert main(["analyze", str(path), "--radii", "0", "0.1", "--plot", str(tmp_path / "c.svg")]) == 0
    out = capsys.readouterr().out
    ok = res.correct == 1
    expected = 100 * np.mean(ok & (res.baseline[:, 0] >= 0.1) & (res.baseline[:, 0] > 0))
    assert "cdf" in out and "baseline" in out and f"{expected:.1f}" in out
    assert (tmp_path / "c.svg").read_bytes().lstrip().startswith(b"<?xml")
    certify_out = tmp_path / "r.tsv"
    assert main(certify_args(model_pt2, npz_data, certify_out)) == 0
    capsys.readouterr()
    assert main(["analyze", str(path), str(certify_out)]) == 2 and "on their own" in capsys.readouterr().err
