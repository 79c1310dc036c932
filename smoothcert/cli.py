"""The `smoothcert` command line: argument parsing and one-line errors over the Python API, nothing else."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .errors import SmoothcertError, check, check_alpha, check_count

MAX_TRAIN_CLASSES = 100_000      # a label beyond this is a data error, not a 10^9-output layer to allocate


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
        p.add_argument("--batch", type=int, default=64, help="training batch size (default 64)")
    else:
        p.add_argument("--batch", type=_batch, default=1000,
                       help="noisy samples per forward pass (default 1000); 'auto' probes GPU memory")
    p.add_argument("--seed", type=int, default=0, help="seed: the same seed gives the same results")
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
                   help="let a .pt2 model unpickle objects other than tensors (this can run code: only for files you "
                        "trust); by default such a file is refused")
    p.add_argument("--start", type=int, default=0, help="first input index (default 0)")
    p.add_argument("--skip", type=int, default=1,
                   help="take inputs start, start+SKIP, start+2*SKIP, ... (as Cohen et al.'s --skip; default 1)")
    p.add_argument("--max", type=int, default=None,
                   help="at most this many inputs, counted after --start/--skip (a count of rows; Cohen et al.'s --max "
                        "is instead a data-set index to stop before: their --skip 20 --max 500 is --skip 20 --max 25)")
    p.add_argument("--indices", help="comma-separated input indices, instead of --start/--skip/--max")
    p.add_argument("--amp", nargs="?", const="fp16", choices=("fp16", "bf16"),
                   help="forward passes under autocast to float16 (--amp or --amp fp16) or bfloat16 (--amp bf16); the "
                        "autocast model is the base classifier certified (on a CPU: emulated, slower, for measuring)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on a Ray cluster (pip install 'smoothcert[ray]'): --ray alone starts a local one of "
                        "--workers; --ray ADDRESS joins one (auto: the one on this machine); same rows as without")
    p.add_argument("--workers", type=int, help="Ray workers, each loading the model once (default: one per CPU of the "
                                               "cluster, one per GPU with a CUDA --device)")


def _certificate_args(p: argparse.ArgumentParser) -> None:
    from .certificates import CERTIFICATES
    names = ", ".join(f"{name} ({'/'.join(s.noises)})" for name, s in CERTIFICATES.items())
    p.add_argument("--certificate", default=None,
                   help=f"certificate (default: cohen for gaussian, teng for laplace); one of {names}")
    p.add_argument("--norm", default=None, choices=("l2", "l1"), help="norm of the radius (default: the certificate's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoothcert", description="Certified robustness by randomized smoothing.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certify", help="certify inputs (Cohen et al. CERTIFY) into a results TSV")
    _common_model_args(p)
    _selection_args(p)
    p.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    p.add_argument("--n", type=int, default=100_000, help="estimation samples (default 100000)")
    _certificate_args(p)

    p = sub.add_parser("predict", help="predict with abstention (Cohen et al. PREDICT) into a results TSV")
    _common_model_args(p)
    _selection_args(p)
    p.add_argument("--n", type=int, default=10_000, help="samples (default 10000)")

    p = sub.add_parser("train", help="train a base classifier under noise")
    _common_model_args(p, train=True)
    p.add_argument("--arch", default="digits-cnn", help="built-in architecture (digits-cnn, cifar-resnet20, ...)")
    p.add_argument("--epochs", type=int, default=30, help="passes over the training data (default 30)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-annealed to 0 (default 0.001)")
    p.add_argument("--out", required=True, help="model file: .pt2 (torch.export) or any other suffix (state dict)")
    p.add_argument("--adv-step", type=float, default=0.0,
                   help="adversarial-noise training (Teng et al. Type 2): add adv_step * sign(grad) to the noisy input")

    p = sub.add_parser("recertify", help="recompute a certify TSV with another certificate, from its counts alone")
    p.add_argument("results", help="a certify results TSV")
    _certificate_args(p)
    p.add_argument("--out", required=True, help="the new results TSV (same layout)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("analyze", help="certified accuracy, ACR, tables and plots from results files",
                       description="Certified accuracy at chosen radii, ACR, abstain rate and an interval per results "
                                   "file (smoothcert's or Cohen et al.'s certify TSVs; predict files give accuracy "
                                   "and abstain rate), as a table and a plot.")
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

    p = sub.add_parser("demo", help="train, certify and analyze on scikit-learn's digits, end to end")
    p.add_argument("--out-dir", default="demo_out", help="where models, results and the plot go (default demo_out)")
    p.add_argument("--n", type=int, default=10_000, help="estimation samples per input (default 10000)")
    p.add_argument("--epochs", type=int, default=40)
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
    from .run import resolve_device
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
    return Smooth(model, noise, device=device, amp=args.amp), data, indices


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
    from .results import check_output_path
    check_output_path(args.out)
    if os.path.exists(args.out):
        data_path = args.data.partition(":")[2] if ":" in args.data else None
        for what, path in (("model", args.model), ("weights", args.weights), ("data", data_path)):
            check(not (path and os.path.exists(path) and os.path.samefile(path, args.out)),
                  f"--out {args.out} is the {what} file; choose another file for the results")


def cmd_certify(args) -> None:
    from .run import certify_dataset
    check_count("--n0", args.n0)
    check_count("--n", args.n)
    from . import certificates
    certificates.resolve(args.certificate, _noise(args), args.norm)   # before any data or model is loaded
    smoothed, data, indices = _smoothed(args)
    with _executor(args, smoothed, data) as executor:
        written = certify_dataset(smoothed, data, indices, args.out, n0=args.n0, n=args.n, alpha=args.alpha,
                                  batch_size=args.batch, seed=args.seed, certificate=args.certificate, norm=args.norm,
                                  progress=not args.no_progress, executor=executor)
    print(f"{written} rows written to {args.out} ({len(indices) - written} were already there)")


def cmd_predict(args) -> None:
    from .run import predict_dataset
    check_count("--n", args.n)
    smoothed, data, indices = _smoothed(args)
    with _executor(args, smoothed, data) as executor:
        written = predict_dataset(smoothed, data, indices, args.out, n=args.n, alpha=args.alpha,
                                  batch_size=args.batch, seed=args.seed, progress=not args.no_progress,
                                  executor=executor)
    print(f"{written} rows written to {args.out} ({len(indices) - written} were already there)")


def cmd_train(args) -> None:
    import torch

    from .data import load_data
    from .models import build, save_model
    from .run import resolve_device
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


def cmd_recertify(args) -> None:
    from .run import recertify
    rows = recertify(args.results, args.certificate, args.out, args.norm, overwrite=args.force)
    print(f"{rows} rows re-certified into {args.out}")


def cmd_analyze(args) -> None:
    from . import analysis
    check(not (args.radii and args.radii_grid), "give --radii or --radii-grid, not both")
    radii = analysis.radius_grid(*args.radii_grid) if args.radii_grid else (args.radii or analysis.DEFAULT_RADII)
    check(args.plot or (args.max_radius is None and args.title is None), "--max-radius and --title need --plot PATH")
    check(args.label is None or len(args.label) == len(args.results),
          f"--label given {len(args.label or [])} times for {len(args.results)} files: give one per file, in order")
    results = analysis.relabel([analysis.load_results(path, alpha=args.alpha, allow_duplicates=args.allow_duplicates)
                                for path in args.results], args.label)
    summaries = [analysis.Summary.of(res, radii, args.ci_radius, args.confidence) for res in results]
    table = analysis.format_table(summaries, args.format)
    curves = [res for res in results if res.kind == "certify"]
    check(not args.plot or curves, "--plot needs certify files: predict files have no radii")
    if args.json:
        analysis.output_target(args.json, ("json",), "JSON export")         # checked before anything is written
    written = []
    if args.plot:
        left_out = [res.name for res in results if res.kind == "predict"]
        plot = analysis.plot_certified_accuracy(curves, args.plot, args.max_radius, args.title)
        written.append(f"plot written to {plot}" + (f" (predict files left out: {', '.join(left_out)})"
                                                    if left_out else ""))
    if args.json:
        analysis.export_json(summaries, args.json)
        written.append(f"numbers written to {args.json}")
    print("\n".join([table] + written))


def cmd_demo(args) -> None:
    from .demo import run_demo
    run_demo(out_dir=args.out_dir, n=args.n, epochs=args.epochs, device=args.device, progress=not args.no_progress)


COMMANDS = {"certify": cmd_certify, "predict": cmd_predict, "train": cmd_train, "recertify": cmd_recertify,
            "analyze": cmd_analyze, "demo": cmd_demo}


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the system (glibc only): a CPU forward pass
    allocates and frees its activations every batch, and the page faults of fresh memory can take half its
    time (measured 2x faster on the digits CNN). The usual advice for PyTorch on CPUs; set
    SMOOTHCERT_SYSTEM_MALLOC=1 to leave the allocator alone."""
    if os.environ.get("SMOOTHCERT_SYSTEM_MALLOC") or not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 28) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


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
