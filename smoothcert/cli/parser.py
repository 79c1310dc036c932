"""The command line's parser: every command's arguments, their bounded types, and turning argument text into
numbers and noises (the commands themselves live beside it, one module per command group)."""
from __future__ import annotations

import argparse
import math
import re

from ..errors import MAX_COUNT, SmoothcertError
from .sampling import add_float_sound_args

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
    p.add_argument("--noise", default="gaussian", choices=("gaussian", "laplace", "uniform"),
                   help="smoothing noise (default gaussian): gaussian certifies l2, laplace and uniform certify l1")
    p.add_argument("--sigma", type=float, help="Gaussian noise level, in the model's input space (pixels in [0,1])")
    p.add_argument("--lam", type=float, help="Laplace noise scale (lam = sigma/sqrt(2) matches Gaussian sigma), or "
                                             "uniform noise's half-width, U[-lam, lam] (lam = sqrt(3) sigma matches)")
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
                   help="model.pt2 (torch.export), model.pt (TorchScript: with --trust-model only), package.module:factory (a function taking "
                        "no arguments; the current folder is on the import path) or a built-in architecture "
                        "(digits-cnn, cifar-resnet20, cifar-resnet110) with --weights")
    p.add_argument("--weights", help="state dict (torch.save(model.state_dict())) for a factory or architecture")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--out", required=True,
                   help="results TSV; an existing one made with the same settings, data and model is resumed")
    p.add_argument("--trust-model", action="store_true",
                   help="load a .pt2 model with torch's own loader, unchecked: it may unpickle objects, evaluate "
                        "expressions and import modules, or a TorchScript model.pt at all (this can run code: only "
                        "for files you trust); by default such a file is refused")
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
    add_float_sound_args(p)
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on a Ray cluster (pip install 'smoothcert[ray]'): --ray alone starts a local one of "
                        "--workers; --ray ADDRESS joins one (auto: the one on this machine); same rows as without")
    p.add_argument("--workers", type=COUNT,
                   help="Ray workers, each loading the model once (default, and at most: one per CPU of the cluster, "
                        "or of this machine for --ray alone; one per GPU with a CUDA --device)")


def _certificate_args(p: argparse.ArgumentParser) -> None:
    from ..certificates import CERTIFICATES
    names = ", ".join(f"{name} ({'/'.join(s.noises)})" for name, s in CERTIFICATES.items())
    p.add_argument("--certificate", default=None,
                   help=f"certificate (default: cohen for gaussian, teng for laplace, yang-margin for uniform); one of "
                        f"{names}")
    p.add_argument("--norm", default=None, choices=("l2", "l1", "linf"),
                   help="norm of the radius (default: the certificate's); linf (Gaussian noise): the l2 radius / "
                        "sqrt(d), d the input's number of coordinates, stored in the norm column as linf:d=D")


def _diffusion_range(text: str) -> tuple[float, float]:
    """--diffusion-range lo,hi: two finite numbers, lo < hi."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two numbers lo,hi such as 0,1 or -1,1, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"must be two finite numbers lo,hi with lo < hi, got {text!r}")
    return lo, hi


def _denoiser_args(p: argparse.ArgumentParser) -> None:
    """A denoiser in front of --model (denoised smoothing): the base classifier is model(denoiser(x + noise))."""
    g = p.add_argument_group("denoised smoothing (the certificate is the composition's: soundness is unchanged)")
    g.add_argument("--denoiser", metavar="SPEC",
                   help="put a denoiser in front of --model: dncnn (the built-in DnCNN, with --denoiser-weights; its "
                        "size is read from them), denoiser.pt2 (e.g. from train-denoiser), package.module:factory "
                        "(with --denoiser-weights), or diffusion:DIR (a local diffusers folder holding a UNet2DModel "
                        "and its scheduler, one-step denoising at the timestep matching --sigma; nothing is "
                        "downloaded). --trust-model applies to this file too. The results' model column covers both")
    g.add_argument("--denoiser-weights", metavar="W", help="state dict for a --denoiser architecture or factory")
    g.add_argument("--diffusion-range", type=_diffusion_range, metavar="LO,HI",
                   help="the data range the diffusion model was trained on: -1,1 (the default: diffusers' DDPM "
                        "models, e.g. google/ddpm-cifar10-32) or 0,1; inputs in [0, 1] are mapped to it and back")


def _train_denoiser_args(sub) -> None:
    p = sub.add_parser("train-denoiser", help="train a denoiser for a frozen classifier (denoised smoothing)")
    _common_model_args(p, train=True)
    p.add_argument("--classifier", required=True, help="the frozen classifier: any model spec, as certify --model")
    p.add_argument("--weights", help="state dict for a --classifier factory or architecture")
    p.add_argument("--trust-model", action="store_true", help="as for certify (applies to --classifier)")
    p.add_argument("--objective", default="mse", choices=("mse", "stability", "mse+stability"),
                   help="mse: E||D(x+d) - x||^2; stability: cross-entropy of the classifier on D(x+d) against its "
                        "own clean predictions; mse+stability: MSE for half the epochs, then stability (Salman et "
                        "al. 2020; default mse)")
    p.add_argument("--arch", default="dncnn", help="built-in denoiser architecture (default dncnn)")
    p.add_argument("--depth", type=_bounded(int, 2), default=5, help="DnCNN layers (default 5; 17 for CIFAR-10)")
    p.add_argument("--width", type=_bounded(int, 1), default=16, help="DnCNN channels (default 16; 64 for CIFAR-10)")
    p.add_argument("--epochs", type=COUNT, default=30, help="passes over the training data (default 30)")
    p.add_argument("--lr", type=POSITIVE, default=1e-3, help="Adam learning rate, cosine-annealed to 0 (default 0.001)")
    p.add_argument("--out", required=True, help="denoiser file: .pt2 (torch.export) or any other suffix (state dict)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smoothcert", description="Certified robustness by randomized smoothing.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certify", help="certify inputs (Cohen et al. CERTIFY) into a results TSV")
    _common_model_args(p)
    _selection_args(p)
    _denoiser_args(p)
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
    _denoiser_args(p)
    p.add_argument("--n", type=COUNT, default=10_000, help="samples (default 10000)")

    p = sub.add_parser("bench-latency", help="the most noisy samples that certify one input within a time budget, "
                                             "and the ACR expected at that n (002 §3)")
    _common_model_args(p)
    p.add_argument("--model", required=True, help="as for certify")
    p.add_argument("--weights", help="as for certify")
    p.add_argument("--trust-model", action="store_true", help="as for certify")
    p.add_argument("--amp", nargs="?", const="fp16", choices=("fp16", "bf16"), help="as for certify")
    _denoiser_args(p)
    add_float_sound_args(p)
    p.add_argument("--budget-ms", type=POSITIVE, default=40.0, help="time budget for one input, ms (default 40)")
    p.add_argument("--n0", type=COUNT, default=100, help="selection samples, part of the budget (default 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--index", type=COUNT, default=0, help="the input that is timed (default 0)")
    p.add_argument("--repeats", type=COUNT, default=15, help="timed calls per n (default 15)")
    p.add_argument("--results", help="a fixed-n certify TSV of this model (large n): predict the ACR at the chosen n")

    p = sub.add_parser("plan", help="expected radius against n; ACR and certified accuracy predicted from a run")
    p.add_argument("--results", help="a certify TSV (one-sided certificate) whose inputs' pA are estimated")
    p.add_argument("--p-a", type=float, help="instead of --results: one pA, with --sigma (or --noise laplace or "
                                             "uniform --lam)")
    p.add_argument("--noise", choices=("gaussian", "laplace", "uniform"),
                   help="with --p-a (default gaussian; a run has its own)")
    p.add_argument("--sigma", type=float, help="with --p-a: the Gaussian noise level")
    p.add_argument("--lam", type=float, help="with --p-a and --noise laplace or uniform: the Laplace noise scale or "
                                             "the uniform half-width")
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
    p.add_argument("--clean", action="store_true",
                   help="train without noise (as --sigma 0): an ordinary classifier, for a denoiser to go in front of")

    _train_denoiser_args(sub)

    p = sub.add_parser("confidence", help="certified confidence (Kumar et al. 2020): radii within which the expected "
                                          "score (or margin) of the predicted class stays above thresholds")
    _common_model_args(p)
    _selection_args(p)
    _denoiser_args(p)
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
                   help="radii START, START+STEP, ..., STOP (inclusive) instead of --radii; START + i*STEP is rounded to 12 "
                        "decimals, whereas Cohen et al.'s analyze.py uses a drifting np.arange "
                        "(0.30000000000000004), so at steps not exact in binary the two can differ")
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



def noise_of(args):
    from ..noises import make_noise
    return make_noise(args.noise, sigma=args.sigma, lam=args.lam)


def numbers(text: str, name: str, kind=float) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SmoothcertError(f"{name} must be comma-separated numbers, got {text!r}") from None

