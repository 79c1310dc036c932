"""Certify, predict or certify confidence over a data set into results files (resuming them): each function
chooses the mode and the file's settings and columns, and hands the rest to runner.to_files."""
from __future__ import annotations

import os
from typing import Sequence

from .. import certificates
from ..bounds.margin import MAX_N as MAX_EXACT_N
from ..certificates import confidence as conf
from ..errors import check
from ..files.columns import (CERTIFY_COLUMNS, PREDICT_COLUMNS, SOFT_COLUMNS, confidence_cells, confidence_columns,
                             encode_counts, encode_scores, format_float)
from ..noises.norms import dims_of
from ..smooth import Smooth
from .runner import Job, to_files


def certify_dataset(smoothed: Smooth, data, indices, out: str, *, n0: int, n: int | Sequence[int], alpha: float,
                    batch_size: int, seed: int = 0, certificate: str | None = None, norm: str | None = None,
                    n_max: int | None = None, max_loss: float | None = None, relative: bool = True,
                    target_radius: float | None = None, futility: str = "upper", futility_level: float = 0.01,
                    progress: bool = True, model_id: str | None = None, executor=None) -> int:
    """CERTIFY data.x[indices] into `out` (resuming it), returning the number of rows written now.

    Modes: a fixed `n`; several n (a list: one pass over a nested stream, one file per n, `nested_paths(out, ns)`,
    each equal to a separate run at that n); `n_max` with `max_loss` (input-specific n); `n_max` with
    `target_radius` (early stopping at an acceptance radius). `model_id` is recorded in the file (default:
    `models.fingerprint` of the model) and a resumed run must match it; `executor` runs the job (default:
    `run_locally`)."""
    spec, norm = certificates.resolve(certificate, smoothed.noise, norm, dims_of(data.x))   # 'linf' -> 'linf:d=D'
    common = {"alpha": format_float(alpha), "n0": str(n0), "seed": str(seed)}
    kw = {"seed": seed, "norm": norm}
    ns = [n] if isinstance(n, int) else sorted(set(n))
    check(spec.statistic == "votes" or (n_max is None and target_radius is None),
          f"{spec.name} certifies at a fixed n (input-specific n and early stopping are for hard-vote certificates)")
    if target_radius is not None:
        check(n_max is not None and max_loss is None, "--target-radius goes with --n-max (and not --max-loss)")
        mode = f"target:r0={format_float(target_radius)}:futility={futility}@{format_float(futility_level)}"
        name = certificates.ONE_SIDED[smoothed.noise.name]
        check(certificate in (None, name), f"--target-radius certifies with the one-sided bound ({name}) under early "
                                           f"stopping, not {certificate}: leave --certificate out")
        job = Job("certify_target", (n0, target_radius, n_max, alpha, batch_size),
                  {**kw, "futility": futility, "futility_level": futility_level})
    elif n_max is not None:
        check(max_loss is not None, "--n-max needs --max-loss (input-specific n) or --target-radius (early stopping)")
        mode, name = f"input-n:max_loss={format_float(max_loss)}:{'relative' if relative else 'absolute'}", spec.name
        job = Job("certify_input_n", (n0, n_max, alpha, batch_size),
                  {**kw, "certificate": spec.name, "max_loss": max_loss, "relative": relative})
    elif spec.statistic == "scores":
        check(len(ns) == 1, f"{spec.name} certifies at one n (several n are for hard-vote certificates)")
        mode, name = "fixed", spec.name
        job = Job("certify_soft", (n0, ns[0], alpha, batch_size), {**kw, "certificate": spec.name})
    else:
        mode, name = "fixed", spec.name
        job = (Job("certify_many", (n0, ns[0], alpha, batch_size), {**kw, "certificate": spec.name}) if len(ns) == 1
               else Job("certify_nested", (n0, ns, alpha, batch_size), {**kw, "certificate": spec.name}))
    sizes = [n_max] if n_max is not None else ns
    check(spec.name != "exact-margin" or max(sizes) <= MAX_EXACT_N, f"exact-margin takes memory in proportion to n: "
                                                                    f"at most {MAX_EXACT_N:,} samples")
    paths = [out] if len(sizes) == 1 else nested_paths(out, sizes)
    soft = spec.statistic == "scores" and target_radius is None and n_max is None
    sinks = [(path, {"certificate": name, "norm": norm, **common, "n": str(size), "mode": mode},
              _soft_row if soft else _certify_row) for path, size in zip(paths, sizes)]
    return to_files(smoothed, data, indices, sinks, SOFT_COLUMNS if soft else CERTIFY_COLUMNS, job, progress,
                     model_id, executor)


def nested_paths(out: str, ns: Sequence[int]) -> list[str]:
    """r.tsv -> r_n100.tsv, r_n1000.tsv, ...: one results file per n of a nested run."""
    root, ext = os.path.splitext(out)
    return [f"{root}_n{n}{ext or '.tsv'}" for n in ns]


def _certify_row(c) -> dict:
    return {"radius": format_float(c.radius), "samples": c.samples, "pA_lower": format_float(c.p_lower),
            "pB_upper": format_float(c.p_upper), "counts_selection": encode_counts(c.counts_selection),
            "counts": encode_counts(c.counts)}


def _soft_row(c) -> dict:
    return {**_certify_row(c), "scores_selection": encode_scores(c.scores["selection"]),
            "scores": encode_scores(c.scores["sums"], c.scores["squares"])}


def confidence_dataset(smoothed: Smooth, data, indices, out: str, *, n0: int, n: int, alpha: float,
                       thresholds: Sequence[float], measure: str = "score", num_thresholds: int | None = None,
                       batch_size: int, seed: int = 0, progress: bool = True, model_id: str | None = None,
                       executor=None) -> int:
    """Certified confidence (001) of data.x[indices] into `out` (resuming it): per input and threshold c the CDF
    and baseline radii (columns cdf@c, baseline@c), then the settings and the stored statistic (a histogram of
    the measure on fixed bins and its exact sum), from which `recertify` recomputes other thresholds."""
    levels = conf.check_thresholds(thresholds, measure)
    check(smoothed.noise.name == "gaussian", "certified confidence (001) is for Gaussian noise")
    k = conf.NUM_THRESHOLDS if num_thresholds is None else conf.check_num_thresholds(num_thresholds)
    settings = {"measure": measure, "alpha": format_float(alpha), "n0": str(n0), "n": str(n), "seed": str(seed),
                "num_thresholds": str(k), "bins": str(conf.BINS)}
    job = Job("confidence", (n0, n, alpha, levels, batch_size),
              {"seed": seed, "measure": measure, "num_thresholds": k, "bins": conf.BINS})

    def row(r):
        return {**confidence_cells(levels, r.cdf, r.baseline), "counts_selection": encode_counts(r.counts_selection),
                "scores_selection": encode_scores(r.scores_selection), "histogram": encode_counts(r.histogram),
                "measure_sum": format_float(r.measure_sum)}

    return to_files(smoothed, data, indices, [(out, settings, row)], confidence_columns(levels), job, progress,
                     model_id, executor)


def predict_dataset(smoothed: Smooth, data, indices, out: str, *, n: int, alpha: float, batch_size: int,
                    seed: int = 0, progress: bool = True, model_id: str | None = None, executor=None) -> int:
    """PREDICT data.x[indices] into `out` (resuming it), returning the number of rows written now."""
    settings = {"alpha": format_float(alpha), "n": str(n), "seed": str(seed)}
    job = Job("predict_many", (n, alpha, batch_size), {"seed": seed})

    def row(p):
        return {"pvalue": format_float(p.pvalue), "counts": encode_counts(p.counts)}

    return to_files(smoothed, data, indices, [(out, settings, row)], PREDICT_COLUMNS, job, progress, model_id,
                     executor)
