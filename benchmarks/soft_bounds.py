"""Soft-score bounds: tightness, cost and the stored-histogram loss (issue 9, items 1-3).

    python benchmarks/soft_bounds.py tightness    # betting vs empirical Bernstein vs Hoeffding, Beta scores
    python benchmarks/soft_bounds.py cost         # seconds per engine batch of the betting accumulator
    python benchmarks/soft_bounds.py histogram    # CDF radius lost by a fixed-edge histogram vs the samples
    python benchmarks/soft_bounds.py thresholds   # CDF radius vs the number of thresholds, and the baseline
    python benchmarks/soft_bounds.py digits --model digits.pt2   # a digits CNN trained at sigma = 0.25:
        smoothcert train --arch digits-cnn --data digits --sigma 0.25 --epochs 40 --out digits.pt2

Everything runs on one CPU thread unless --threads says otherwise; alpha = 0.001 unless --alpha.
"""
import argparse
import time

import numpy as np
import torch
from scipy.special import ndtri

from smoothcert import Gaussian
from smoothcert.certificates import confidence as cf
from smoothcert.certificates import soft
from smoothcert.bounds import Betting, bernstein_lower, hoeffding_lower
from smoothcert.bounds.mean import centred_grid

SHAPES = [(2, 5), (8, 2), (50, 1), (500, 1)]


def _betting_lower(x, alpha, grid, batch=1000):
    bt = Betting(x.shape[0], x.shape[1], alpha, grid=grid, sides="lower")
    for s in range(0, x.shape[1], batch):
        bt.update(x[:, s:s + batch])
    return bt.lower(alpha)


def tightness(args):
    """Mean lower bound over `reps` draws, and Phi^-1 of it (the radius scale, in units of sigma)."""
    rng = np.random.default_rng(0)
    print(f"alpha = {args.alpha}; mean over {args.reps} draws; betting fed in engine batches of 1,000 "
          f"(bets refreshed every 16 values, then 16 times per doubling); 'centred' = grid centred on 100 independent selection samples")
    print(f"{'Beta':>9} {'n':>6} {'mean':>8} {'hoeffding':>9} {'bernstein':>9} {'bet-1024':>9} {'bet-centred':>11}"
          f" {'z(bern)':>8} {'z(bet-c)':>8}")
    for a, b in SHAPES:
        for n in (100, 1_000, 10_000):
            x = rng.beta(a, b, size=(args.reps, n))
            sel = rng.beta(a, b, size=(args.reps, 100)).mean(1)
            h = hoeffding_lower(x.sum(1), n, args.alpha)
            eb = bernstein_lower(x.sum(1), (x * x).sum(1), n, args.alpha)
            bet = _betting_lower(x, args.alpha, 1024)
            betc = _betting_lower(x, args.alpha, centred_grid(sel))
            print(f"({a:>3},{b:>3}) {n:>6} {a / (a + b):8.5f} {h.mean():9.5f} {eb.mean():9.5f} {bet.mean():9.5f}"
                  f" {betc.mean():11.5f} {ndtri(eb).mean():8.4f} {ndtri(betc).mean():8.4f}")


def cost(args):
    """Seconds per engine batch of B values (median of 5), beside the digits CNN's forward pass on B inputs."""
    from smoothcert.models import digits_cnn
    model = digits_cnn().eval()
    rng = np.random.default_rng(0)
    print(f"threads = {torch.get_num_threads()}; seconds per update of one engine batch (median of 5)")
    for batch in (1000,):
        with torch.inference_mode():
            x = torch.rand(batch, 1, 8, 8)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        print(f"digits-cnn forward, {batch} inputs: {np.median(times):.4f} s")
        for rows in (1, 10):
            for grid in (256, 1024):
                bt = Betting(rows, 100_000, args.alpha, grid=grid, sides="lower")
                values = torch.as_tensor(rng.random(batch))
                owner = torch.as_tensor(np.repeat(np.arange(rows), batch // rows))
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    bt.update(values, owner)
                    times.append(time.perf_counter() - t0)
                print(f"betting, {batch} values of {rows:>2} inputs, grid {grid:>4}, one side: "
                      f"{np.median(times):.4f} s")


def _bimodal(rng, size):
    return np.where(rng.random(size) < 0.8, rng.beta(40, 2, size), rng.beta(2, 5, size))


def _digits_like(rng, size, measure="score"):
    """Softmax score of the top class of a 10-class model under noise (logit gap ~ N(6, 2.5^2)), or its margin
    over the best other class."""
    gap = rng.normal(6.0, 2.5, size)[..., None] - rng.normal(0.0, 1.0, size + (9,))
    rest = np.exp(-gap)
    top = 1.0 / (1.0 + rest.sum(-1))
    return top if measure == "score" else top * (1.0 - rest.max(-1))


def histogram(args):
    """Radius lost by storing a histogram on fixed edges instead of the samples (every threshold both ways), for
    the score and then the margin (bins of width 2/bins: twice the score's)."""
    rng = np.random.default_rng(1)
    dists = {"Beta(8,2)": lambda s: rng.beta(8, 2, s), "Beta(50,1)": lambda s: rng.beta(50, 1, s),
             "bimodal": lambda s: _bimodal(rng, s), "digits-like": lambda s: _digits_like(rng, s)}
    margins = {"Beta(8,2) 2-class": lambda s: 2 * rng.beta(8, 2, s) - 1,      # two classes: margin = 2 score - 1
               "bimodal 2-class": lambda s: 2 * _bimodal(rng, s) - 1,
               "digits-like": lambda s: _digits_like(rng, s, "margin")}
    sigma = 0.25
    for measure, draws, cs in (("score", dists, np.array([0.5, 0.7, 0.9])),
                               ("margin", margins, np.array([0.0, 0.4, 0.8]))):
        print(f"{measure}: sigma = {sigma}, alpha = {args.alpha}, {args.reps} draws; radius (samples) and the largest "
              f"/ mean loss of the histogram over draws and c in {list(cs)}; nonzero bins = the stored entries")
        worst = 0.0
        for name, draw in draws.items():
            for m in (2_000, 10_000):
                x = draw((args.reps, m))
                r_s = cf.cdf_radius(cf.layers_from_samples(x, measure), cs, sigma, args.alpha)
                line = f"{name:>17} m={m:>6}: radius {r_s.mean(0).round(4)}"
                for bins in (2 ** 12, 2 ** 16):
                    counts = cf.histogram(x, measure, bins)
                    r_h = cf.cdf_radius(cf.layers_from_histogram(counts, measure), cs, sigma, args.alpha)
                    loss = r_s - r_h
                    assert np.all(loss >= -1e-9)
                    worst = max(worst, loss.max()) if bins == cf.BINS else worst
                    line += (f" | 2^{int(np.log2(bins))}: max loss {loss.max():.2e}, mean {loss.mean():.2e},"
                             f" nonzero bins {int((counts > 0).sum(1).mean())}")
                print(line)
        print(f"{measure}: largest loss with the {cf.BINS:,} bins smoothcert stores: {worst:.2e}")


def thresholds(args):
    """CDF radius with 100, 1,000 and all (<= 10^4) equal-count thresholds, and with 16 or 128 equal-width bins,
    against the baseline (Thm 1, Hoeffding)."""
    rng = np.random.default_rng(2)
    sigma, cs = 0.25, np.array([0.5, 0.7, 0.9])
    print(f"sigma = {sigma}, alpha = {args.alpha}; mean radius over {args.reps} draws for c in {list(cs)}")
    for name, draw in {"Beta(8,2)": lambda s: rng.beta(8, 2, s), "bimodal": lambda s: _bimodal(rng, s),
                       "digits-like": lambda s: _digits_like(rng, s)}.items():
        for m in (2_000, 10_000, 100_000):
            x = draw((args.reps, m))
            out = f"{name:>11} m={m:>6}: baseline {cf.baseline_radius(x.sum(1), m, cs, sigma, args.alpha).mean(0).round(4)}"
            for t in (100, 1_000, 10_000):
                out += f" | T={t}: {cf.cdf_radius(cf.layers_from_samples(x, num_thresholds=t), cs, sigma, args.alpha).mean(0).round(4)}"
            for bins in (16, 128):                      # equal-WIDTH bins: every bin edge a threshold
                layers = cf.layers_from_histogram(cf.histogram(x, bins=bins))
                out += f" | {bins} bins: {cf.cdf_radius(layers, cs, sigma, args.alpha).mean(0).round(4)}"
            print(out)


class _Scores:
    """An engine statistic that keeps every sample's softmax vector (benchmark only: n x classes per input)."""

    needs_position = False

    def start(self, requests, num_classes, device):
        self.rows = [[] for _ in range(requests)]

    def update(self, logits, owner, position):
        scores = torch.softmax(logits.double(), dim=1).cpu().numpy()
        owner = owner.cpu().numpy()
        for r in np.unique(owner):
            self.rows[r].append(scores[owner == r])

    def result(self):
        return [np.concatenate(r) for r in self.rows]


def digits(args):
    """Hard (cohen) vs soft certificates and CDF vs baseline certified confidence on the digits test set."""
    from smoothcert.data import load_data
    from smoothcert.models import eval_mode, load_model
    from smoothcert.engine import ESTIMATION, SELECTION, Request, Sampler, make_stream
    from smoothcert import certificates
    ds = load_data("digits", "test")
    model = eval_mode(load_model(args.model))
    xs, ys = ds.x[:args.inputs], np.asarray(ds.y[:args.inputs])
    sigma, alpha, noise = 0.25, args.alpha, Gaussian(0.25)
    sampler = Sampler(model, noise, 10, batch_size=1000)
    t0 = time.perf_counter()
    sel = sampler.run(xs, [Request(i, make_stream(0, i, SELECTION, "cpu"), args.n0) for i in range(len(xs))], [_Scores()])[0]
    est = sampler.run(xs, [Request(i, make_stream(0, i, ESTIMATION, "cpu"), args.n) for i in range(len(xs))], [_Scores()])[0]
    print(f"digits test[:{len(xs)}], sigma = {sigma}, n0 = {args.n0}, n = {args.n}, alpha = {alpha} "
          f"(sampling {time.perf_counter() - t0:.0f} s)")
    sums_sel = np.stack([s.sum(0) for s in sel])
    sums, squares = np.stack([e.sum(0) for e in est]), np.stack([(e * e).sum(0) for e in est])
    votes_sel = np.stack([np.bincount(s.argmax(1), minlength=10) for s in sel])
    votes = np.stack([np.bincount(e.argmax(1), minlength=10) for e in est])
    c_a = soft.choose(sums_sel)
    rows = np.arange(len(xs))
    a_scores = np.stack([e[:, k] for e, k in zip(est, c_a)])
    masked = [e.copy() for e in est]
    for e, k in zip(masked, c_a):
        e[:, k] = -1
    other = np.stack([e.max(1) for e in masked])
    radii = [0.0, 0.25, 0.5, 0.75, 1.0]

    def report(name, v, seconds=None):
        ok = (v.prediction == ys)
        acc = [np.mean(ok & (v.radius >= r)) for r in radii]
        extra = f"  ({seconds:.2f} s)" if seconds is not None else ""
        print(f"{name:>22}: certified accuracy at {radii}: {np.round(acc, 3)}, ACR {np.mean(np.where(ok, v.radius, 0)):.4f}{extra}")

    report("cohen (hard votes)", certificates.certify("cohen", votes_sel, votes, noise, alpha))
    report("margin (hard votes)", certificates.certify("margin", votes_sel, votes, noise, alpha))
    for name in ("soft-hoeffding", "soft-bernstein", "soft-lipschitz"):
        report(name, soft.CERTIFICATES[name](sums_sel, sums, squares, args.n, noise, alpha))
    report("soft-bernstein 1-sided", soft.soft_bernstein(sums_sel, sums, squares, args.n, noise, alpha, mode="one-sided"))
    for label, grid in (("probit 1024", 1024), ("centred 1024", None)):
        guess_a = sums_sel[rows, c_a] / args.n0
        other_sel = sums_sel.copy()
        other_sel[rows, c_a] = -1
        t0 = time.perf_counter()
        guess_o = other_sel.max(1) / args.n0
        ba = Betting(len(xs), args.n, alpha / 2, grid=grid if grid else centred_grid(guess_a), sides="lower")
        bo = Betting(len(xs), args.n, alpha / 2, sides="upper",
                     grid=grid if grid else centred_grid(guess_o, np.maximum(1 - guess_a, guess_o)))
        for s in range(0, args.n, 1000):
            ba.update(a_scores[:, s:s + 1000])
            bo.update(other[:, s:s + 1000])
        report(f"soft-betting {label}", soft.soft_betting(sums_sel, ba, bo, noise, alpha), time.perf_counter() - t0)
    if args.per_class:                                   # one accumulator per class: K times the cost
        t0 = time.perf_counter()
        ba = Betting(len(xs), args.n, alpha / 2, grid=centred_grid(sums_sel[rows, c_a] / args.n0), sides="lower")
        bk = Betting(len(xs) * 10, args.n, alpha / 2, grid=centred_grid((sums_sel / args.n0).reshape(-1)), sides="upper")
        every = np.stack(est)                                      # (inputs, n, classes)
        for s in range(0, args.n, 1000):
            ba.update(a_scores[:, s:s + 1000])
            bk.update(every[:, s:s + 1000].transpose(0, 2, 1).reshape(len(xs) * 10, -1))
        report("soft-betting per class", soft.soft_betting(sums_sel, ba, bk, noise, alpha), time.perf_counter() - t0)

    for measure, levels in (("score", [0.5, 0.7, 0.9]), ("margin", [0.0, 0.4, 0.8])):
        values = a_scores if measure == "score" else a_scores - other
        loss = (cf.cdf_radius(cf.layers_from_samples(values, measure), levels, sigma, alpha)
                - cf.cdf_radius(cf.layers_from_histogram(cf.histogram(values, measure), measure), levels, sigma, alpha))
        print(f"{measure:>6}: CDF radius lost by the {cf.BINS:,}-bin histogram against the samples: largest "
              f"{loss.max():.2e}, mean {loss.mean():.2e} (over inputs and c in {levels})")
        for label, layers in (("samples", cf.layers_from_samples(values, measure)),
                              ("histogram 2^12", cf.layers_from_histogram(cf.histogram(values, measure), measure))):
            t0 = time.perf_counter()
            r_cdf = cf.cdf_radius(layers, levels, sigma, alpha)
            secs = time.perf_counter() - t0
            r_base = cf.baseline_radius(values.sum(1), args.n, levels, sigma, alpha, measure)
            ok = (c_a == ys)[:, None]
            for j, c in enumerate(levels):
                acc_cdf = [np.mean(ok[:, 0] & (r_cdf[:, j] > 0) & (r_cdf[:, j] >= r)) for r in radii]
                acc_base = [np.mean(ok[:, 0] & (r_base[:, j] > 0) & (r_base[:, j] >= r)) for r in radii]
                print(f"{measure:>6} >= {c:<4} {label:>14}: certified accuracy at {radii}: CDF {np.round(acc_cdf, 3)} "
                      f"baseline {np.round(acc_base, 3)}; mean radius CDF {r_cdf[:, j].mean():.4f} "
                      f"baseline {r_base[:, j].mean():.4f}  ({secs:.1f} s for all c)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["tightness", "cost", "histogram", "thresholds", "digits"])
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None)
    parser.add_argument("--inputs", type=int, default=450)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--per-class", action="store_true", help="digits: also per-class betting (slow on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    globals()[args.what](args)


if __name__ == "__main__":
    main()
