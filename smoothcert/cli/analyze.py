"""The commands that read results files: analyze (tables, figures, exports, efficiency) and plan (n from theory or
from a run)."""
from __future__ import annotations

from ..errors import check, check_alpha
from .parser import numbers

def cmd_analyze(args) -> None:
    from .. import analysis, efficiency
    check(not (args.radii and args.radii_grid), "give --radii or --radii-grid, not both")
    radii = analysis.radius_grid(*args.radii_grid) if args.radii_grid else (args.radii or analysis.DEFAULT_RADII)
    check(args.plot or (args.max_radius is None and args.title is None), "--max-radius and --title need --plot PATH")
    check(args.label is None or len(args.label) == len(args.results),
          f"--label given {len(args.label or [])} times for {len(args.results)} files: give one per file, in order")
    kinds = [analysis.is_confidence_file(path) for path in args.results]
    if any(kinds):
        check(all(kinds), "give certified-confidence files (smoothcert confidence) on their own, not mixed with "
                          "certify or predict files")
        check(not (args.plot_n or args.plot_samples or args.json), "--plot-n, --plot-samples and --json are for "
                                                                   "certify files")
        check(args.ci_radius is None and args.alpha is None, "--ci-radius and --alpha are for certify and predict "
              "files: a confidence table has no interval, and a confidence file's alpha is its own column")
        results = analysis.relabel([analysis.load_confidence(path, allow_duplicates=args.allow_duplicates)
                                    for path in args.results], args.label)
        if args.plot:
            analysis.output_target(args.plot, analysis.PLOT_FORMATS, "plot")
        print(analysis.confidence_table(results, radii, args.format))
        if args.plot:
            print(f"plot written to {analysis.plot_confidence(results, args.plot, args.max_radius, args.title)}")
        return
    results = analysis.relabel([analysis.load_results(path, alpha=args.alpha, allow_duplicates=args.allow_duplicates)
                                for path in args.results], args.label)
    summaries = [analysis.Summary.of(res, radii, args.ci_radius, args.confidence) for res in results]
    table = analysis.format_table(summaries, args.format)
    curves = [res for res in results if res.kind == "certify"]
    check(not args.plot or curves, "--plot needs certify files: predict files have no radii")
    sample_efficiency = efficiency.report(results, radii)
    check(not args.plot_n or sample_efficiency.sets, "--plot-n needs fixed-n certify files that differ only in n "
          "(e.g. the files of certify --n 100,1000,10000: same settings and inputs)")
    check(not args.plot_samples or sample_efficiency.samples, "--plot-samples needs certify files of an adaptive "
          "run (certify --n-max with --max-loss or --target-radius)")
    for path in (args.plot_n, args.plot_samples):                          # checked before anything is written
        if path:
            analysis.output_target(path, analysis.PLOT_FORMATS, "plot")
    if args.json:
        analysis.output_target(args.json, ("json",), "JSON export")
    written = []
    if args.plot:
        left_out = [res.name for res in results if res.kind == "predict"]
        plot = analysis.plot_certified_accuracy(curves, args.plot, args.max_radius, args.title)
        written.append(f"plot written to {plot}" + (f" (predict files left out: {', '.join(left_out)})"
                                                    if left_out else ""))
    if args.plot_n:
        written.append(f"plot against n written to {efficiency.plot_versus_n(sample_efficiency.sets, args.plot_n)}")
    if args.plot_samples:
        written.append(f"samples histogram written to "
                       f"{efficiency.plot_samples(sample_efficiency.samples, args.plot_samples)}")
    if args.json:
        analysis.export_json(summaries, args.json)
        written.append(f"numbers written to {args.json}")
    extra = sample_efficiency.format(args.format)
    print("\n".join([table] + (["", extra] if extra else []) + written))


def cmd_plan(args) -> None:
    from .. import analysis, planning
    from ..noises import make_noise
    check((args.results is None) != (args.p_a is None), "give either --results or --p-a")
    ns = numbers(args.n or "100,1000,10000,100000", "--n", int)
    check(ns, f"--n {args.n!r} gives no numbers of samples: give comma-separated n, e.g. 100,1000")
    for n in ns:
        check(1 <= n <= planning.MAX_N, f"--n must be integers in [1, {planning.MAX_N}], got {n}")
    if args.p_a is not None:
        check(args.radii is None and args.keep is None, "--radii and --keep go with --results (a run's inputs)")
        noise = make_noise(args.noise or "gaussian", sigma=args.sigma, lam=args.lam)
        alpha = check_alpha(0.001 if args.alpha is None else args.alpha)
        check(0 <= args.p_a <= 1, f"--p-a must lie in [0, 1], got {args.p_a:g}")
        print(f"pA = {args.p_a:g}, {noise.describe()}, alpha = {alpha:g} (one-sided Clopper-Pearson; "
              f"z = {planning.z_one_sided(alpha):.4f}); radius at n = inf: {float(noise.radius(args.p_a)):.4f}")
        print(f"{'n':>8}  {'E[radius]':>9}  {'P(cert)':>7}  {'eq.10':>7}  {'eq.11':>7}  {'E[pA_low]':>9}  "
              f"{'Lem4.2':>7}")
        for n in ns:
            row = [planning.expected_radius(args.p_a, n, alpha, noise),
                   planning.certified_probability(args.p_a, n, alpha, noise)]
            if noise.name == "gaussian":
                row += [planning.radius_approx(args.p_a, n, alpha, noise.sigma),
                        planning.radius_shore(args.p_a, n, alpha, noise.sigma)]
            else:
                row += [float("nan")] * 2
            row += [planning.expected_lower_bound(args.p_a, n, alpha),
                    planning.lower_bound_approx(args.p_a, n, alpha)]
            print(f"{n:>8}  " + "  ".join(f"{float(v):>{w}.4f}" for v, w in zip(row, (9, 7, 7, 7, 9, 7))))
        print("(exact expectations over Bin(n, pA), abstain = 0; eq.10/eq.11/Lem4.2: 003's approximations)")
        return
    given = [f"--{name}" for name in ("noise", "sigma", "lam", "alpha") if getattr(args, name) is not None]
    check(not given, f"{', '.join(given)}: for --p-a only; with --results the run's own noise and alpha are used: "
                     "leave them out")
    radii = [float(r) for r in analysis.check_radii(numbers(args.radii or "0,0.25,0.5,0.75,1", "--radii"), "--radii")]
    check(radii, f"--radii {args.radii!r} gives no radii: give comma-separated radii, e.g. 0,0.5")
    if args.keep is not None:
        planning.check_keep(args.keep)              # before the table is printed
    run = planning.load_run(args.results)
    pred = planning.predict(run, ns, radii)
    print(f"{args.results}: {len(run.p_hat)} inputs at n = {run.n} (measured ACR {run.acr:.4f}), "
          f"{run.noise.describe()}, alpha = {run.alpha:g}; predicted per input from its plug-in pA")
    print(f"{'n':>8}  {'ACR':>7}  " + "  ".join(f"{'r=' + format(r, 'g'):>7}" for r in radii))
    for n, acr, acc in zip(ns, pred.acr, pred.certified_accuracy):
        print(f"{n:>8}  {acr:>7.4f}  " + "  ".join(f"{100 * a:>7.1f}" for a in acc)
              + ("  (beyond the run's n: optimistic)" if n > run.n else ""))
    if args.keep is not None:
        n = planning.recommend_n(run, args.keep)
        print(f"recommended: n = {n} keeps {args.keep:g} of the predicted ACR at n = {run.n}")

