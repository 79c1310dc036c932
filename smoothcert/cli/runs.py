"""The commands that run a smoothed classifier over a data set into a results file: certify, predict, confidence,
recertify; and the checks every run makes before any output exists (data, model, selection, --out, Ray)."""
from __future__ import annotations

import contextlib
import os
import sys

from ..errors import SmoothcertError, check, check_alpha, check_count
from .denoise import check_denoiser_args, load_cli_denoiser
from .parser import noise_of, numbers
from .sampling import sampled_noise

def _indices(args, data):
    from ..data import select
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
    from ..data import load_data
    from ..models import load_model
    from ..device import resolve_device
    from ..smooth import Smooth

    _check_ray(args)
    noise = noise_of(args)
    check_denoiser_args(args)
    check_alpha(args.alpha)
    if args.batch is not None:
        check_count("--batch", args.batch)
    device = resolve_device(args.device)
    _check_out(args)
    data = load_data(args.data, args.split)
    noise = sampled_noise(args, noise, data)
    indices = _indices(args, data)
    model = load_model(args.model, args.weights, device, trust=args.trust_model, num_classes=data.num_classes,
                       in_channels=data.x.shape[1])
    denoiser = load_cli_denoiser(args, device, data.x[:2])
    smoothed = Smooth(model, noise, device=device, amp=args.amp, compile=args.compile, denoiser=denoiser)
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
    from ..distributed import require_ray
    require_ray()
    if args.workers is not None:
        check_count("--workers", args.workers)


@contextlib.contextmanager
def _executor(args, smoothed, data):
    """With --ray, a RayExecutor whose workers each load the model from its files; else None (this process)."""
    if args.ray is None:
        yield None
        return
    from ..distributed import RayExecutor, Recipe
    recipe = Recipe.of(args.model, args.weights, smoothed, trust=args.trust_model, num_classes=data.num_classes,
                       in_channels=data.x.shape[1], denoiser=args.denoiser, denoiser_weights=args.denoiser_weights,
                       diffusion_range=args.diffusion_range)
    with RayExecutor(None if args.ray == "local" else args.ray, workers=args.workers, make_smooth=recipe,
                     num_gpus=int(smoothed.device.type == "cuda")) as executor:
        print(f"smoothcert: {executor.describe()}", file=sys.stderr)
        yield executor


def _check_out(args) -> None:
    """--out must be a regular file (or none yet), and not one of the run's own inputs."""
    from ..files.columns import check_output_path
    check_output_path(args.out)
    if os.path.exists(args.out):
        data_path = args.data.partition(":")[2] if ":" in args.data else None
        denoiser = args.denoiser.removeprefix("diffusion:") if args.denoiser else None
        for what, path in (("model", args.model), ("weights", args.weights), ("data", data_path),
                           ("denoiser", denoiser), ("denoiser weights", args.denoiser_weights)):
            check(not (path and os.path.exists(path) and os.path.samefile(path, args.out)),
                  f"--out {args.out} is the {what} file; choose another file for the results")


def cmd_certify(args) -> None:
    from .. import certificates, planning
    from ..jobs import certify_dataset, nested_paths
    spec, _ = certificates.resolve(args.certificate, noise_of(args), args.norm)   # before any data or model is loaded
    check_count("--n0", args.n0, 0 if not spec.uses_selection else 1)
    ns = numbers(args.n or "100000", "--n", int)
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
    from ..jobs import predict_dataset
    check_count("--n", args.n)
    smoothed, data, indices = _smoothed(args)
    with _executor(args, smoothed, data) as executor:
        written = predict_dataset(smoothed, data, indices, args.out, n=args.n, alpha=args.alpha,
                                  batch_size=args.batch, seed=args.seed, progress=not args.no_progress,
                                  executor=executor)
    print(f"{written} rows written to {args.out} ({len(indices) - written} were already there)")


def cmd_confidence(args) -> None:
    from ..certificates.confidence import check_num_thresholds, check_thresholds
    from ..jobs import confidence_dataset
    check_count("--n0", args.n0)
    check_count("--n", args.n)
    thresholds = check_thresholds(numbers(args.thresholds, "--thresholds"), args.measure)   # before any model
    if args.num_thresholds is not None:
        check_num_thresholds(args.num_thresholds)
    check(noise_of(args).name == "gaussian", "certified confidence needs --noise gaussian")
    smoothed, data, indices = _smoothed(args)
    with _executor(args, smoothed, data) as executor:
        written = confidence_dataset(smoothed, data, indices, args.out, n0=args.n0, n=args.n, alpha=args.alpha,
                                     thresholds=thresholds, measure=args.measure, num_thresholds=args.num_thresholds,
                                     batch_size=args.batch, seed=args.seed, progress=not args.no_progress,
                                     executor=executor)
    print(f"{written} rows written to {args.out} ({len(indices) - written} were already there)")


def cmd_recertify(args) -> None:
    from ..jobs import recertify
    thresholds = None if args.thresholds is None else numbers(args.thresholds, "--thresholds")
    rows = recertify(args.results, args.certificate, args.out, args.norm, overwrite=args.force,
                     thresholds=thresholds, num_thresholds=args.num_thresholds)
    print(f"{rows} rows re-certified into {args.out}")

