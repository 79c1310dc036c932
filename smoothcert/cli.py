"""The `smoothcert` command line: argument parsing and one-line errors over the Python API, nothing else."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys

from .device import tune_allocator
from .errors import MAX_COUNT, SmoothcertError, check, check_alpha, check_count

MAX_TRAIN_CLASSES = 100_000      # a label beyond this is a data error, not a 10^9-output layer to allocate


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line as every other error, and values that start with a minus sign and a
    digit (--thresholds -0.5,0,0.5) taken as values, not options (as Python 3.13's argparse does)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"-\.?\d")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bounded(kind=int, low=None, high=None, *, strict: bool = False):
    """An argparse type: an integer (at most 2^62 unless `high` says otherwise: numpy and torch hold it) or a
    finite float, >= low (> low when strict) and <= high, refused in one line before anything runs. What a
    value means (e.g. n >= 1) is checked by the command."""
    high = MAX_COUNT if high is None and kind is int else high
    show = "{:,}" if kind is int else "{:g}"
    bounds = ([f"{'>' if strict else '>='} {show.format(low)}"] if low is not None else []) \
        + ([f"<= {show.format(high)}"] if high is not None else [])
    what = " ".join(["an integer" if kind is int else "a finite number", " and ".join(bounds)]).strip()

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (kind is not int and not math.isfinite(value)) or (high is not None and value > high) \
                or (low is not None and (value <= low if strict else value < low)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


COUNT = _bounded()                                  # the command checks the lower end, naming what it means
SEED = _bounded(int, -2 ** 63, 2 ** 64 - 1)         # what torch's generators take
POSITIVE, NONNEGATIVE = _bounded(float, 0, strict=True), _bounded(float, 0)


def _common_model_args(p: argparse.ArgumentParser, *, train: bool = False) -> None:
    p.add_argument("--data", default="digits",
                   help="digits (built in) | npz:PATH (arrays x (N, ...) float pixels and y (N,) integer labels, optional "
                        "classes) | cifar10:DIR (python batches) | folder:DIR (one sub-folder per class) (default digits)")
    p.add_argument("--split", default="train" if train else "test", choices=("train", "test"),
                   help="which split of digits / cifar10 / folder (train|test layout) to use")
    p.add_argument("--noise", default="gaussian", choices=("gaussian", "laplace"),
                   help="smoothing noise (default gaussian): gaussian certifies l2, laplace certifies l1")
    p.add_argument("--sigma", type=float, help="Gaussian noise level, in the model's input space (pixels in [0,1])")
    p.add_argument("--lam", type=float, help="Laplace noise scale (lam = sigma/sqrt(2) matches Gaussian sigma)")
    if train:
        p.add_argument("--batch", type=COUNT, default=64, help="training batch size (default 64)")
    else:
        p.add_argument("--batch", type=_batch, default=1000,
                       help="noisy samples per forward pass (default 1000); 'auto' chooses once per run: on a GPU the "
                            "largest that fits (half of it, for head-room), on a CPU the fastest per sample of "
                            "64-1024, timed on the model (a few seconds; the choice can differ between runs)")
    p.add_argument("--seed", type=SEED, default=0, help="seed: the same seed gives the same results")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")


def _batch(text: str):
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or 'auto', got {text!r}") from None


def _selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="model.pt2 (torch.export), model.pt (TorchScript), package.module:factory (a function taking "
                        "no arguments; the current folder is on the import path) or a built-in architecture "
                        "(digits-cnn, cifar-resnet20, cifar-resnet110) with --weights")
    p.add_argument("--weights", help="state dict (torch.save(model.state_dict())) for a factory or architecture")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--out", required=True,
                   help="results TSV; an existing one made with the same settings, data and model is resumed")
    p.add_argument("--trust-model", action="store_true",
                   help="load a .pt2 model with torch's own loader, unchecked: it may unpickle objects, evaluate "
                        "expressions and import modules (this can run code: only for files you trust); by default "
                        "such a file is refused")
    p.add_argument("--start", type=COUNT, default=0, help="first input index (default 0)")
    p.add_argument("--skip", type=COUNT, default=1,
                   help="take inputs start, start+SKIP, start+2*SKIP, ... (as Cohen et al.'s --skip; default 1)")
    p.add_argument("--max", type=COUNT, default=None,
                   help="at most this many inputs, counted after --start/--skip (a count of rows; Cohen et al.'s --max "
                        "is instead a data-set index to stop before: their --skip 20 --max 500 is --skip 20 --max 25)")
    p.add_argument("--indices", help="comma-separated input indices, instead of --start/--skip/--max")
    p.add_argument("--amp", nargs="?", const="fp16", choices=("fp16", "bf16"),
                   help="forward passes under autocast to float16 (--amp or --amp fp16) or bfloat16 (--amp bf16); the "
                        "autocast model is the base classifier certified (on a CPU: emulated, slower, for measuring)")
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (compiling takes from seconds to minutes); the compiled "
                        "model is the base classifier certified. Its predictions are first compared with the eager "
                        "model's on noisy samples of the first inputs, and the result and the compile time are "
                        "printed on stderr. Off by default: compiling takes time, and the gain depends on the model "
                        "(on a CPU: CIFAR ResNet-20 1.5x faster, the digits CNN no faster; README, Benchmarks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on a Ray cluster (pip install 'smoothcert[ray]'): --ray alone starts a local one of "
                        "--workers; --ray ADDRESS joins one (auto: the one on this machine); same rows as without")
    p.add_argument("--workers", type=COUNT,
                   help="Ray workers, each loading the model once (default, and at most: one per CPU of the cluster, "
                        "or of this machine for --ray alone; one per GPU with a CUDA --device)")


def _certificate_args(p: argparse.ArgumentParser) -> None:
    from .certificates import CERTIFICATES
    names = ", ".join(f"{name} ({'/'.join(s.noises)})" for name, s in CERTIFICATES.items())
    p.add_argument("--certificate", default=None,
                   help=f"certificate (default: cohen for gaussian, teng for laplace); one of {names}")
    p.add_argument("--norm", default=None, choices=("l2", "l1"), help="norm of the radius (default: the certificate's)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smoothcert", description="Certified robustness by randomized smoothing.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certify", help="certify inputs (Cohen et al. CERTIFY) into a results TSV")
    _common_model_args(p)
    _selection_args(p)
    p.add_argument("--n0", type=COUNT, default=100, help="selection samples (default 100; 0 only with --certificate "
                                                        "single-stage)")
    p.add_argument("--n", default=None,
                   help="estimation samples (default 100000); several, comma-separated (e.g. 100,1000,10000), certify "
                        "each input at every n from one nested stream in one pass, into one file per n (OUT_nN.tsv), "
                        "each equal to a separate run at that n (the files share samples: not independent)")
    g = p.add_argument_group("sample efficiency (sound: the bound always keeps level alpha)")
    g.add_argument("--n-max", type=COUNT, help="the most estimation samples an input may get, with --max-loss (at most "
                                               "1,000,000: the choice reads exact tables of n-max values) or "
                                               "--target-radius (at most 2^62)")
    g.add_argument("--max-loss", type=NONNEGATIVE,
                   help="input-specific n: from the selection samples alone, the smallest n <= n-max whose expected "
                        "radius is within this loss of the expected radius at n-max, then n fresh samples")
    g.add_argument("--loss", choices=("relative", "absolute"), default="relative",
                   help="--max-loss as a fraction of the expected radius (default) or in radius units")
    g.add_argument("--target-radius", type=POSITIVE,
                   help="decide 'certified at this radius?' with early stopping: sample in rounds until an "
                        "anytime-valid bound certifies it, or it looks out of reach (see --futility)")
    g.add_argument("--futility", choices=("none", "reach", "upper"), default="upper",
                   help="when to give up on an input below the target: none (only at n-max), reach (when even all "
                        "remaining samples could not certify), upper (default: when a Clopper-Pearson upper bound at "
                        "--futility-level says it falls short; aggressive, not part of the guarantee)")
    g.add_argument("--futility-level", type=float, default=0.01, help="level of the 'upper' futility rule (0.01)")
    _certificate_args(p)

    p = sub.add_parser("predict", help="predict with abstention (Cohen et al. PREDICT) into a results TSV")
    _common_model_args(p)
    _selection_args(p)
    p.add_argument("--n", type=COUNT, default=10_000, help="samples (default 10000)")

    p = sub.add_parser("bench-latency", help="the most noisy samples that certify one input within a time budget, "
                                             "and the ACR expected at that n (002 §3)")
    _common_model_args(p)
    p.add_argument("--model", required=True, help="as for certify")
    p.add_argument("--weights", help="as for certify")
    p.add_argument("--trust-model", action="store_true", help="as for certify")
    p.add_argument("--amp", nargs="?", const="fp16", choices=("fp16", "bf16"), help="as for certify")
    p.add_argument("--budget-ms", type=POSITIVE, default=40.0, help="time budget for one input, ms (default 40)")
    p.add_argument("--n0", type=COUNT, default=100, help="selection samples, part of the budget (default 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--index", type=COUNT, default=0, help="the input that is timed (default 0)")
    p.add_argument("--repeats", type=COUNT, default=15, help="timed calls per n (default 15)")
    p.add_argument("--results", help="a fixed-n certify TSV of this model (large n): predict the ACR at the chosen n")

    p = sub.add_parser("plan", help="expected radius against n; ACR and certified accuracy predicted from a run")
    p.add_argument("--results", help="a certify TSV (one-sided certificate) whose inputs' pA are estimated")
    p.add_argument("--p-a", type=float, help="instead of --results: one pA, with --sigma (or --noise laplace --lam)")
    p.add_argument("--noise", choices=("gaussian", "laplace"), help="with --p-a (default gaussian; a run has its own)")
    p.add_argument("--sigma", type=float, help="with --p-a: the Gaussian noise level")
    p.add_argument("--lam", type=float, help="with --p-a and --noise laplace: the Laplace noise scale")
    p.add_argument("--alpha", type=float, help="with --p-a (default 0.001; a run has its own)")
    p.add_argument("--n", help="comma-separated numbers of estimation samples (default 100,1000,10000,100000)")
    p.add_argument("--radii", help="with --results: radii of the certified accuracy (comma-separated; default "
                                   "0,0.25,0.5,0.75,1)")
    p.add_argument("--keep", type=float,
                   help="with --results: recommend the smallest n keeping this fraction of the ACR")

    p = sub.add_parser("train", help="train a base classifier under noise")
    _common_model_args(p, train=True)
    p.add_argument("--arch", default="digits-cnn", help="built-in architecture (digits-cnn, cifar-resnet20, ...)")
    p.add_argument("--epochs", type=COUNT, default=30, help="passes over the training data (default 30)")
    p.add_argument("--lr", type=POSITIVE, default=1e-3, help="Adam learning rate, cosine-annealed to 0 (default 0.001)")
    p.add_argument("--out", required=True, help="model file: .pt2 (torch.export) or any other suffix (state dict)")
    p.add_argument("--adv-step", type=NONNEGATIVE, default=0.0,
                   help="adversarial-noise training (Teng et al. Type 2): add adv_step * sign(grad) to the noisy input")

    p = sub.add_parser("confidence", help="certified confidence (Kumar et al. 2020): radii within which the expected "
                                          "score (or margin) of the predicted class stays above thresholds")
    _common_model_args(p)
    _selection_args(p)
    p.add_argument("--n0", type=COUNT, default=100, help="selection samples, which choose the class (default 100)")
    p.add_argument("--n", type=COUNT, default=10_000, help="estimation samples (default 10000)")
    p.add_argument("--measure", choices=("score", "margin"), default="score",
                   help="score: the class's softmax score in [0, 1]; margin: its lead over the best other class, in "
                        "[-1, 1] (default score)")
    p.add_argument("--thresholds", default="0.5,0.7,0.9",
                   help="comma-separated thresholds c: each gets a CDF and a baseline radius (default 0.5,0.7,0.9)")
    p.add_argument("--num-thresholds", type=COUNT, default=None,
                   help="layers of the CDF certificate: a threshold every ceil(n/K)-th sorted sample (default 10000, "
                        "as Kumar et al.'s code); fewer are faster but looser")

    p = sub.add_parser("recertify", help="recompute a results TSV from its stored statistics alone: a certify file "
                                         "with another certificate, a confidence file at other thresholds")
    p.add_argument("results", help="a certify or confidence results TSV")
    _certificate_args(p)
    p.add_argument("--thresholds", help="confidence files: comma-separated thresholds (default: the file's)")
    p.add_argument("--num-thresholds", type=COUNT, help="confidence files: layers of the CDF certificate")
    p.add_argument("--out", required=True, help="the new results TSV (same layout)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("analyze", help="certified accuracy, ACR, tables and plots from results files",
                       description="Certified accuracy at chosen radii, ACR, abstain rate and an interval per results "
                                   "file (smoothcert's or Cohen et al.'s certify TSVs; predict files give accuracy "
                                   "and abstain rate), as a table and a plot. Fixed-n files that differ only in n "
                                   "also get a table against n, with predictions; adaptive runs (certify --n-max) "
                                   "their samples per input and their speed-up against the fixed-n file at n_max.")
    p.add_argument("results", nargs="+", help="results TSV files (certify or predict), one table row each")
    p.add_argument("--radii", type=float, nargs="+", default=None, metavar="R",
                   help="radii for the table (default 0 0.25 0.5 0.75 1)")
    p.add_argument("--radii-grid", type=float, nargs=3, metavar=("START", "STOP", "STEP"),
                   help="radii START, START+STEP, ..., STOP (inclusive) instead of --radii")
    p.add_argument("--ci-radius", type=float, default=None, metavar="R",
                   help="radius of the interval (default: the first positive table radius)")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the interval (default 0.95)")
    p.add_argument("--alpha", type=float, default=None,
                   help="the certificates' alpha for files without an alpha column (Cohen et al.'s: 0.001), so "
                        "the interval allows for wrong certificates; a file's own alpha column wins")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="count a repeated idx as another input (default: refuse the file)")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="name of a file's row and curve; repeat once per file, in order (default: from the "
                        "file's settings, else its path)")
    p.add_argument("--format", default="text", choices=("text", "markdown", "latex"),
                   help="table format (default text); markdown and latex bold the best entry per radius")
    p.add_argument("--plot", metavar="PATH",
                   help="write certified accuracy vs radius (certify files, one norm) here; the extension picks "
                        "the format: .png .pdf .svg .eps .ps")
    p.add_argument("--max-radius", type=float, default=None, help="end of the plot's radius axis (default: the data's)")
    p.add_argument("--title", help="the plot's title")
    p.add_argument("--json", metavar="PATH", help="also write the numbers and per-input rows as JSON here")
    p.add_argument("--plot-n", metavar="PATH",
                   help="write ACR and certified accuracy at the first positive table radius against n (log axis), "
                        "measured and predicted, for fixed-n files that differ only in n (certify --n 100,1000,...); "
                        "format from the extension, as --plot")
    p.add_argument("--plot-samples", metavar="PATH",
                   help="write histograms of the estimation samples per input of adaptive runs (certify --n-max) here")

    p = sub.add_parser("demo", help="train, certify and analyze on scikit-learn's digits, end to end")
    p.add_argument("--out-dir", default="demo_out", help="where models, results and the plot go (default demo_out)")
    p.add_argument("--n", type=_bounded(int, 1), default=10_000, help="estimation samples per input (default 10000)")
    p.add_argument("--epochs", type=_bounded(int, 1), default=40)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    return parser


def _noise(args):
    from .noises import make_noise
    return make_noise(args.noise, sigma=args.sigma, lam=args.lam)


def _indices(args, data):
    from .data import select
    idx = None
    if args.indices is not None:
        check(args.indices.strip(" ,") != "", f"no input indices in --indices {args.indices!r}; give comma-separated indices, or leave --indices out")
        try:
            idx = [int(v) for v in args.indices.split(",") if v.strip()]
        except ValueError:
            raise SmoothcertError(f"--indices must be comma-separated integers, got {args.indices!r}") from None
    return select(data, skip=args.skip, max_count=args.max, start=args.start, indices=idx)


def _smoothed(args):
    """Checks, data, model, selection: everything a run needs, before any output exists."""
    from .data import load_data
    from .models import load_model
    from .device import resolve_device
    from .smooth import Smooth

    _check_ray(args)
    noise = _noise(args)
    check_alpha(args.alpha)
    if args.batch is not None:
        check_count("--batch", args.batch)
    device = resolve_device(args.device)
    _check_out(args)
    data = load_data(args.data, args.split)
    indices = _indices(args, data)
    model = load_model(args.model, args.weights, device, trust=args.trust_model, num_classes=data.num_classes,
                       in_channels=data.x.shape[1])
    smoothed = Smooth(model, noise, device=device, amp=args.amp, compile=args.compile)
    if args.compile:   # compile and compare now, before any output exists, and say so in one line
        import warnings
        first = data.x[list(indices)[:8]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smoothed.prepare(first, args.batch)
        print(f"smoothcert {args.command}: {smoothed.compile_checks[tuple(first.shape[1:])].describe()}",
              file=sys.stderr)
    return smoothed, data, indices


def _check_ray(args) -> None:
    """--ray and --workers agree, and Ray is installed (before any data or model is loaded)."""
    if getattr(args, "ray", None) is None:
        check(getattr(args, "workers", None) is None, "--workers goes with --ray")
        return
    from .distributed import require_ray
    require_ray()
    if args.workers is not None:
        check_count("--workers", args.workers)


@contextlib.contextmanager
def _executor(args, smoothed, data):
    """With --ray, a RayExecutor whose workers each load the model from its files; else None (this process)."""
    if args.ray is None:
        yield None
        return
    from .distributed import RayExecutor, Recipe
    recipe = Recipe.of(args.model, args.weights, smoothed, trust=args.trust_model, num_classes=data.num_classes,
                       in_channels=data.x.shape[1])
    with RayExecutor(None if args.ray == "local" else args.ray, workers=args.workers, make_smooth=recipe,
                     num_gpus=int(smoothed.device.type == "cuda")) as executor:
        print(f"smoothcert: {executor.describe()}", file=sys.stderr)
        yield executor


def _check_out(args) -> None:
    """--out must be a regular file (or none yet), and not one of the run's own inputs."""
    from .files.columns import check_output_path
    check_output_path(args.out)
    if os.path.exists(args.out):
        data_path = args.data.partition(":")[2] if ":" in args.data else None
        for what, path in (("model", args.model), ("weights", args.weights), ("data", data_path)):
            check(not (path and os.path.exists(path) and os.path.samefile(path, args.out)),
                  f"--out {args.out} is the {what} file; choose another file for the results")


def cmd_certify(args) -> None:
    from . import certificates, planning
    from .jobs import certify_dataset, nested_paths
    spec, _ = certificates.resolve(args.certificate, _noise(args), args.norm)   # before any data or model is loaded
    check_count("--n0", args.n0, 0 if not spec.uses_selection else 1)
    ns = _numbers(args.n or "100000", "--n", int)
    for n in ns:
        check_count("--n", n)
    check(len(ns) == len(set(ns)), f"--n {args.n} repeats a sample size")
    adaptive = args.n_max is not None
    check(not (adaptive and args.n), "--n goes with fixed sample sizes; with --n-max the run chooses n per input")
    check(args.max_loss is None or adaptive, "--max-loss needs --n-max")
    check(args.target_radius is None or adaptive, "--target-radius needs --n-max")
    if adaptive:
        check_count("--n-max", args.n_max)
        check(args.max_loss is None or args.n_max <= planning.MAX_N, f"--n-max must be at most {planning.MAX_N:,} "
              f"with --max-loss (the choice of n reads exact tables of n-max values), got {args.n_max:,}")
        check((args.max_loss is None) != (args.target_radius is None),
              "--n-max goes with one of --max-loss (input-specific n) or --target-radius (early stopping)")
        check(args.max_loss is None or (args.max_loss >= 0 and (args.max_loss < 1 or args.loss == "absolute")),
              f"--max-loss must be >= 0 (and < 1 when relative), got {args.max_loss}")
        check(args.target_radius is None or args.target_radius > 0, f"--target-radius must be > 0, got "
                                                                     f"{args.target_radius}")
        check_alpha(args.futility_level)
    smoothed, data, indices = _smoothed(args)
    with _executor(args, smoothed, data) as executor:
        written = certify_dataset(smoothed, data, indices, args.out, n0=args.n0, n=ns, alpha=args.alpha,
                                  batch_size=args.batch, seed=args.seed, certificate=args.certificate, norm=args.norm,
                                  n_max=args.n_max, max_loss=args.max_loss, relative=args.loss == "relative",
                                  target_radius=args.target_radius, futility=args.futility,
                                  futility_level=args.futility_level, progress=not args.no_progress,
                                  executor=executor)
    outs = nested_paths(args.out, ns) if len(ns) > 1 else [args.out]
    print(f"{written} rows written to {', '.join(outs)} ({len(indices) - written} were already there)")


def cmd_predict(args) -> None:
    from .jobs import predict_dataset
    check_count("--n", args.n)
    smoothed, data, indices = _smoothed(args)
    with _executor(args, smoothed, data) as executor:
        written = predict_dataset(smoothed, data, indices, args.out, n=args.n, alpha=args.alpha,
                                  batch_size=args.batch, seed=args.seed, progress=not args.no_progress,
                                  executor=executor)
    print(f"{written} rows written to {args.out} ({len(indices) - written} were already there)")


def cmd_bench_latency(args) -> None:
    from . import planning
    from .data import load_data
    from .models import load_model
    from .device import resolve_device
    from .jobs import bench_latency
    from .smooth import Smooth
    noise = _noise(args)
    alpha = check_alpha(args.alpha)
    check_count("--n0", args.n0)
    run = planning.load_run(args.results) if args.results else None     # a bad file fails before any timing
    if run is not None:                                                  # its prediction is for the run's noise
        check(run.noise == noise, f"{args.results} was certified under {run.noise.describe()} but this command "
                                  f"times {noise.describe()}: give the run's --noise and --sigma/--lam")
    device = resolve_device(args.device)
    data = load_data(args.data, args.split)
    check(0 <= args.index < len(data), f"--index {args.index} is out of range (0..{len(data) - 1})")
    model = load_model(args.model, args.weights, device, trust=args.trust_model, num_classes=data.num_classes,
                       in_channels=data.x.shape[1])
    smoothed = Smooth(model, noise, device=device, amp=args.amp)
    table, n = bench_latency(smoothed, data.x[args.index], n0=args.n0, alpha=alpha, budget_ms=args.budget_ms,
                             repeats=args.repeats)
    print(f"one input on {device}: n0 = {args.n0} + n estimation samples, forward passes in one batch")
    print(f"{'n':>9}  {'median ms':>9}  {'p90 ms':>7}")
    for t in table:
        print(f"{t.n:>9}  {t.median_ms:>9.2f}  {t.p90_ms:>7.2f}" + ("  <- chosen" if t.n == n else ""))
    print(f"the largest n within {args.budget_ms:g} ms (median): {n}")
    if run is not None and n > 0:
        pred = planning.predict(run, [n, run.n])
        print(f"ACR expected at n = {n} from {args.results}: {pred.acr[0]:.4f} (at the run's n = {run.n}: "
              f"{pred.acr[1]:.4f}, measured {run.acr:.4f})")
    elif n > 0:
        cells = ", ".join(f"pA={p:g}: {float(planning.expected_radius(p, n, alpha, noise)):.3f}"
                          for p in (0.9, 0.99, 0.999))
        print(f"expected radius at n = {n}: {cells} (give --results for the ACR of a run)")


def cmd_train(args) -> None:
    import torch

    from .data import load_data
    from .device import resolve_device
    from .models import build, save_model
    from .train import accuracy, train

    noise = _noise(args)
    check_count("--epochs", args.epochs)
    check_count("--batch", args.batch)
    device = resolve_device(args.device)
    check(os.path.isdir(os.path.dirname(os.path.abspath(args.out))), f"output folder does not exist for {args.out}")
    data = load_data(args.data, args.split)
    check(data.num_classes <= MAX_TRAIN_CLASSES, f"{args.data} has labels up to {data.num_classes - 1}; the built-in "
          f"architectures train at most {MAX_TRAIN_CLASSES:,} classes (labels must be 0..K-1)")
    torch.manual_seed(args.seed)
    model = build(args.arch, num_classes=data.num_classes, in_channels=data.x.shape[1]).to(device)
    train(model, data.x, data.y, noise, epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=args.seed,
          adversarial_step=args.adv_step,
          on_epoch=lambda e: print(f"epoch {e.epoch:3d}  loss {e.loss:.4f}  noisy train acc {e.train_accuracy:.3f}"
                                   f"  ({e.seconds:.1f}s)", flush=True))
    save_model(model, args.out, data.x[:1])
    print(f"saved {args.out}; noisy accuracy on {data.name}: {accuracy(model, data.x, data.y, noise, args.seed):.3f}")


def cmd_confidence(args) -> None:
    from .certificates.confidence import check_num_thresholds, check_thresholds
    from .jobs import confidence_dataset
    check_count("--n0", args.n0)
    check_count("--n", args.n)
    thresholds = check_thresholds(_numbers(args.thresholds, "--thresholds"), args.measure)   # before any model
    if args.num_thresholds is not None:
        check_num_thresholds(args.num_thresholds)
    check(_noise(args).name == "gaussian", "certified confidence needs --noise gaussian")
    smoothed, data, indices = _smoothed(args)
    with _executor(args, smoothed, data) as executor:
        written = confidence_dataset(smoothed, data, indices, args.out, n0=args.n0, n=args.n, alpha=args.alpha,
                                     thresholds=thresholds, measure=args.measure, num_thresholds=args.num_thresholds,
                                     batch_size=args.batch, seed=args.seed, progress=not args.no_progress,
                                     executor=executor)
    print(f"{written} rows written to {args.out} ({len(indices) - written} were already there)")


def cmd_recertify(args) -> None:
    from .jobs import recertify
    thresholds = None if args.thresholds is None else _numbers(args.thresholds, "--thresholds")
    rows = recertify(args.results, args.certificate, args.out, args.norm, overwrite=args.force,
                     thresholds=thresholds, num_thresholds=args.num_thresholds)
    print(f"{rows} rows re-certified into {args.out}")


def cmd_analyze(args) -> None:
    from . import analysis, efficiency
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


def cmd_demo(args) -> None:
    from .jobs.demo import run_demo
    run_demo(out_dir=args.out_dir, n=args.n, epochs=args.epochs, device=args.device, progress=not args.no_progress)


def _numbers(text: str, name: str, kind=float) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SmoothcertError(f"{name} must be comma-separated numbers, got {text!r}") from None


def cmd_plan(args) -> None:
    from . import analysis, planning
    from .noises import make_noise
    check((args.results is None) != (args.p_a is None), "give either --results or --p-a")
    ns = _numbers(args.n or "100,1000,10000,100000", "--n", int)
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
    radii = [float(r) for r in analysis._radii(_numbers(args.radii or "0,0.25,0.5,0.75,1", "--radii"), "--radii")]
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


COMMANDS = {"certify": cmd_certify, "predict": cmd_predict, "train": cmd_train, "recertify": cmd_recertify,
            "analyze": cmd_analyze, "demo": cmd_demo, "bench-latency": cmd_bench_latency,
            "confidence": cmd_confidence, "plan": cmd_plan}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()
    try:
        COMMANDS[args.command](args)
    except SmoothcertError as exc:
        print(f"smoothcert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsmoothcert {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:  # files we could not read or write, bad values from libraries
        print(f"smoothcert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
