"""Time and tightness of the exact trinomial margin bound against Bonferroni Clopper-Pearson on the same counts.

    python benchmarks/exact_margin.py            # n = 1,000, 10,000, 100,000; alpha = 0.001

For each count vector (x_A, x_B, x_rest) it prints both lower bounds on Phi^-1(pA) - Phi^-1(max(pB, p_rest))
(the Gaussian margin radius is sigma/2 times either) and the seconds one call of the exact bound takes (median
of 3). Bonferroni: Phi^-1(CP_lower(x_A, alpha/2)) - Phi^-1(min(CP_upper(max(x_B, x_rest), alpha/2), 1 - CP_lower)).
"""
import argparse
import statistics
import time

from scipy.special import ndtri

from smoothcert.bounds import clopper_pearson_lower, clopper_pearson_upper, exact_margin_lower


def bonferroni(x_a, x_b, x_r, alpha):
    n = x_a + x_b + x_r
    pa = clopper_pearson_lower(x_a, n, alpha / 2)
    pb = min(clopper_pearson_upper(max(x_b, x_r), n, alpha / 2), 1 - pa)
    return float(ndtri(pa) - ndtri(pb))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--ns", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    shapes = [(1.0, 0.0, 0.0), (0.99, 0.01, 0.0), (0.9, 0.05, 0.05), (0.9, 0.1, 0.0), (0.6, 0.3, 0.1),
              (0.5, 0.4, 0.1), (0.5, 0.5, 0.0)]
    print(f"alpha = {args.alpha}")
    print(f"{'n':>7} {'counts':>24} {'exact':>9} {'bonferroni':>10} {'exact-bonf':>10} {'seconds':>8}")
    for n in args.ns:
        for fa, fb, _ in shapes:
            x_a, x_b = round(fa * n), round(fb * n)
            x_r = n - x_a - x_b
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                exact = exact_margin_lower(x_a, x_b, x_r, args.alpha)
                times.append(time.perf_counter() - t0)
            bonf = bonferroni(x_a, x_b, x_r, args.alpha)
            print(f"{n:>7} {str((x_a, x_b, x_r)):>24} {exact:>9.4f} {bonf:>10.4f} {exact - bonf:>+10.4f} "
                  f"{statistics.median(times):>8.3f}")


if __name__ == "__main__":
    main()
