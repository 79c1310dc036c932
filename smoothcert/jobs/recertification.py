"""Re-certification: every row of a results file recomputed from its stored statistics alone (no model) into a new
file, written atomically: a certify file with another certificate, a confidence file at other thresholds."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .. import certificates
from ..bounds.margin import MAX_N as MAX_EXACT_N
from ..certificates import confidence as conf
from ..certificates import soft as soft_certificates
from ..errors import SmoothcertError, check
from ..files.columns import (CERTIFY_COLUMNS, CONFIDENCE_FIRST, CONFIDENCE_LAST, SOFT_COLUMNS, check_output_path,
                             confidence_cells, confidence_columns, format_float)
from ..files.lock import FileLock, writer_of
from ..files.rows import (check_certify_row, check_confidence_row, check_soft_row, dense, in_chunks, parse_int,
                          read_table)
from ..files.writer import write_all
from ..noises import norms, tv_of
from ..noises.record import rebuild


def recertify(path: str, certificate: str | None, out: str, norm: str | None = None, overwrite: bool = False, *,
              thresholds: Sequence[float] | None = None, num_thresholds: int | None = None) -> int:
    """Recompute every row of a results file from its stored statistics alone (no model) and write the same
    layout to `out` atomically: a certify file with another `certificate` (hard ones from the votes; soft ones
    from the stored scores of a soft file), or a certified-confidence file at other `thresholds` /
    `num_thresholds`. Every row is checked first (counts summing to the row's n0 and samples, classes in
    range, each input once), and a refusal names the line. Returns the number of rows. It locks only `out`: the
    input is read without creating anything beside it, refused only while a run is writing it."""
    check_output_path(out)
    check(overwrite or not os.path.exists(out), f"{out} exists; choose another --out (or --force to replace it)")
    same = os.path.exists(out) and os.path.samefile(path, out)
    with FileLock(out):
        holder = None if same else writer_of(path)
        check(holder is None, f"{path} is being written by another run ({holder}); wait for it to end")
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8", "replace").rstrip("\r\n").split("\t")
        if "histogram" in header:
            check(certificate is None, f"{path} is a certified-confidence file: re-certify it with --thresholds "
                                       "(and --num-thresholds), not --certificate")
            columns, rows = _reconfidence(path, thresholds, num_thresholds)
        else:
            check(certificate is not None and thresholds is None and num_thresholds is None,
                  f"{path} is a certify file: re-certify it with --certificate NAME")
            columns, rows = _recertify_rows(path, certificate, norm, soft="scores" in header)
        write_all(out, columns, rows)
    return len(rows)


def _noise(path: str, line: int, cell: str, scale: float):
    """The noise a row's `noise` cell and scale describe (noises.record.rebuild), a refusal naming the line."""
    try:
        return rebuild(cell, scale)
    except SmoothcertError as e:
        raise SmoothcertError(f"{path} line {line}: {e}") from None


def _unique(path: str, table) -> None:
    lines: dict[int, int] = {}
    for line, row in table:
        idx = parse_int(row["idx"], f"{path} line {line}", "idx")
        check(idx not in lines, f"{path} line {line}: input {idx} appears twice (first at line {lines.get(idx)})")
        lines[idx] = line


def _norm_of(path, line, row, norm):
    """The norm a row is re-certified in: `norm` (None: the certificate's default), except that the l-inf reading
    needs the input dimension D, which only the row knows (its norm cell 'linf:d=D', noises/norms.py): a row
    certified in l-inf keeps its reading unless another norm is asked for, and --norm linf takes D from the row."""
    where = f"{path} line {line}"
    try:
        row_kind, dims = norms.parse(row["norm"])
        wanted = row["norm"] if norm is None and row_kind == norms.LINF else norm
        if wanted is None or norms.kind(wanted) != norms.LINF:
            return wanted
        check(row_kind == norms.LINF and dims, f"the l-inf reading needs the inputs' dimension D, which a row stores only when "
                                      f"certified with --norm linf (this one: norm {row['norm']!r})")
        return norms.with_dims(wanted, dims)
    except SmoothcertError as e:
        raise SmoothcertError(f"{where}: {e}") from None


def _recertify_rows(path, certificate, norm, soft: bool):
    columns = SOFT_COLUMNS if soft else CERTIFY_COLUMNS
    table = read_table(path, columns)
    check(len(table) > 0, f"{path} has no rows to re-certify")
    _unique(path, table)
    groups: dict[tuple, list[tuple]] = {}
    for line, row in table:
        key, c0, c1 = (check_soft_row if soft else check_certify_row)(path, line, row)
        check(not row["mode"].startswith("target"), f"{path} line {line}: a row certified with early stopping "
              f"(mode {row['mode']}) cannot be re-certified: its samples were drawn until a data-dependent "
              "stop, where a fixed-n bound does not hold")
        groups.setdefault((*key, int(row["num_classes"]), _norm_of(path, line, row, norm)), []).append(
            (line, row, c0, c1))
    for (noise_name, scale, alpha, k, wanted), members in groups.items():
        noise = _noise(path, members[0][0], noise_name, scale)   # float-sound runs keep their grid, bits and tv
        spec, row_norm = certificates.resolve(certificate, noise, wanted)
        for line, row, _, _ in members:
            check(not spec.uses_selection or int(row["n0"]) > 0, f"{path} line {line}: n0 is 0 (the row's samples both "
                  f"chose and bounded its class, as single-stage does); {spec.name} needs selection samples: only "
                  "--certificate single-stage re-certifies it")
        if spec.statistic == "scores":
            check(soft, f"{spec.name} needs soft scores: {path} has only votes (certify with --certificate "
                        f"{spec.name} to store them)")
            check(spec.name != "soft-betting", "soft-betting needs the betting capital of every sample, which is not "
                                               "stored: certify with --certificate soft-betting")
        if spec.name == "exact-margin":
            for line, row, _, _ in members:
                check(int(row["samples"]) <= MAX_EXACT_N, f"{path} line {line}: exact-margin takes memory in "
                      f"proportion to n, and {row['samples']} samples are beyond its {MAX_EXACT_N:,}")
        for chunk in in_chunks(members, k):     # dense (rows, classes) arrays a bounded chunk at a time
            sel, est = [m[2] for m in chunk], [m[3] for m in chunk]
            if spec.statistic == "scores":
                v = soft_certificates.CERTIFICATES[spec.name](
                    np.stack([s[1] for s in sel]), *(np.stack([e[i] for e in est]) for i in (1, 2)),
                    np.array([e[3] for e in est]), noise, alpha, row_norm)
            else:                               # votes: the counts, or a soft row's counts beside its scores
                v = certificates.certify(spec.name, dense([s[0] if soft else s for s in sel]),
                                         dense([e[0] if soft else e for e in est]), noise, alpha, row_norm)
            for j, (_, row, _, _) in enumerate(chunk):
                row.update(certificate=spec.name, norm=row_norm, predict=int(v.prediction[j]),
                           radius=format_float(v.radius[j]), correct=int(int(v.prediction[j]) == int(row["label"])),
                           pA_lower=format_float(v.p_lower[j]), pB_upper=format_float(v.p_upper[j]))
    return columns, [row for _, row in table]


def _reconfidence(path, thresholds, num_thresholds):
    if num_thresholds is not None:                 # the command's own arguments before the file's rows
        conf.check_num_thresholds(num_thresholds)
    table = read_table(path, CONFIDENCE_FIRST + CONFIDENCE_LAST)
    check(len(table) > 0, f"{path} has no rows to re-certify")
    _unique(path, table)
    checked = [(line, row, check_confidence_row(path, line, row)) for line, row in table]
    if thresholds is None:                         # the file's own thresholds, from its header
        try:
            levels = conf.check_thresholds([h[4:] for h in table[0][1] if h.startswith("cdf@")],
                                           checked[0][2].measure)
        except SmoothcertError as e:
            raise SmoothcertError(f"{path} line 1: {e}") from None
    else:
        levels = conf.check_thresholds(thresholds, checked[0][2].measure)
    rows = []
    for line, row, c in checked:
        check(c.measure == checked[0][2].measure, f"{path} line {line}: measure {c.measure} differs from line "
              f"{checked[0][0]}'s {checked[0][2].measure}; one measure per file")
        k = c.num_thresholds if num_thresholds is None else num_thresholds
        tv = tv_of(_noise(path, line, row["noise"], c.scale))     # float-sound rows: the sampler's tv
        layers = conf.layers_from_histogram(dense([c.histogram]), c.measure, k)
        cdf = conf.cdf_radius(layers, np.array(levels), c.scale, c.alpha, tv=tv)[0]
        base = conf.baseline_radius(np.array([c.measure_sum]), c.n, np.array(levels), c.scale, c.alpha,
                                    c.measure, tv=tv)[0]
        predict = int(conf.certified_top(layers, [c.candidate], c.measure, c.scale, c.alpha, tv=tv)[0])
        row = {key: value for key, value in row.items() if "@" not in key}
        row.update(num_thresholds=str(k), predict=predict, correct=int(predict == int(row["label"])),
                   **confidence_cells(levels, cdf, base))
        rows.append(row)
    return confidence_columns(levels), rows
