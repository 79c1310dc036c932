"""Sample efficiency, the report `analyze` prints: every comparison that applies to a list of files, as text,
Markdown or LaTeX tables."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from ..analysis.metrics import DEFAULT_RADII
from ..analysis.reading import Results
from ..analysis.tables import FORMATS, display_names, percent, render_table
from ..errors import check
from .compare import (ADAPTIVE, KEYS, float_radii, run_kind, SamplesSummary, Speedup, VersusN, fixed_n_sets, matching_fixed, samples_summary,
                      speedup, versus_n)

@dataclass(frozen=True, eq=False)
class Efficiency:
    """What `analyze` shows on sample efficiency for a list of files; str() (or format) is that text."""
    sets: tuple[VersusN, ...]
    samples: tuple[SamplesSummary, ...]
    speedups: tuple[Speedup, ...]
    unmatched: tuple[str, ...]            # adaptive files without a fixed-n file to compare with

    def format(self, fmt: str = "text") -> str:
        """The tables in text, markdown or latex ('' when none of the files is of these kinds)."""
        check(fmt in FORMATS, f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
        blocks = [_format_versus_n(v, fmt) for v in self.sets] + [_format_samples(s, fmt) for s in self.samples]
        blocks += [_format_speedups([s for s in self.speedups if s.mode == kind], fmt) for kind in ADAPTIVE]
        if self.unmatched:
            blocks.append(_note(f"no speed-up for {', '.join(self.unmatched)}: no fixed-n file among the inputs "
                                f"with the same settings ({', '.join(KEYS)}), inputs and n = its n_max", fmt))
        return "\n\n".join(b for b in blocks if b)

    __str__ = format


def report(results: Sequence[Results], radii=DEFAULT_RADII) -> Efficiency:
    """Every set of fixed-n files against n, the samples of every adaptive file and its speed-up where a fixed-n
    file matches it; files are named as in analyze's table.

    Args:
        results: loaded files (load_results); files of other kinds are passed over.
        radii: radii of the certified accuracy.
    """
    results = list(results)
    check(all(isinstance(r, Results) for r in results), "report expects Results (from load_results)")
    results = [replace(r, name=name) for r, name in zip(results, display_names(results))]
    radii = float_radii(radii)
    adaptive = [r for r in results if run_kind(r) in ADAPTIVE]
    pairs = [(a, matching_fixed(a, results)) for a in adaptive]
    return Efficiency(tuple(versus_n(s, radii) for s in fixed_n_sets(results)),
                      tuple(samples_summary(a) for a in adaptive),
                      tuple(speedup(a, f, radii) for a, f in pairs if f is not None),
                      tuple(a.name for a, f in pairs if f is None))


def _note(text: str, fmt: str) -> str:
    return "% " + text if fmt == "latex" else text


def _titled(title: str, table: list[str], fmt: str) -> str:
    return "\n".join([title] + ([""] if fmt == "markdown" else []) + table)   # markdown: a table starts a block


def _format_versus_n(v: VersusN, fmt: str) -> str:
    p = v.prediction
    header = ["n", "ACR", "pred."] + [h for r in v.radii for h in (f"r={r:g}", "pred.")]
    rows = [[str(n), f"{v.acr[i]:.3f}", "" if p is None else f"{p.acr[i]:.3f}"]
            + [c for j in range(len(v.radii)) for c in (percent(v.certified_accuracy[i, j]),
                                                         "" if p is None else percent(p.certified_accuracy[i, j]))]
            for i, n in enumerate(v.ns)]
    why = (f"pred.: expected at n from the n = {v.ns[-1]} file, each input at its plug-in pA (planning.predict)"
           if p is not None else "no prediction: planning predicts the one-sided certificates (cohen, teng-binary, "
                                 "yang, gaussian-l1) up to n = 1,000,000")
    title = _note(f"against n: {v.name} ({v.results[0].n} inputs; certified accuracy in %; {why})", fmt)
    return _titled(title, render_table(header, rows, [[False] * len(header)] * len(rows), fmt), fmt)


def _format_samples(s: SamplesSummary, fmt: str) -> str:
    n_max = "" if s.n_max is None else f" of n_max {s.n_max}"
    n0 = "" if s.n0 is None else f"; each input also drew n0 = {s.n0} selection samples"
    lines = [f"samples per input: {s.name} ({s.mode}, {len(s.samples)} inputs): mean {s.mean:.1f}, median "
             f"{s.median:g}, max {s.max}{n_max}{n0}"]
    width, top = max(len(f"[{a}, {b})") for a, b in zip(s.edges, s.edges[1:])), max(int(s.counts.max()), 1)
    for a, b, k in zip(s.edges.tolist(), s.edges[1:].tolist(), s.counts.tolist()):
        lines.append(f"  {f'[{a}, {b})':<{width}}  {k:>{len(str(top))}}  {percent(k / len(s.samples)):>5}%  "
                     f"{'#' * round(40 * k / top)}".rstrip())
    if fmt == "latex":
        return "\n".join(_note(line, fmt) for line in lines)
    return "\n".join(lines[:1] + (["```"] + lines[1:] + ["```"] if fmt == "markdown" else lines[1:]))


def _format_speedups(speedups: list[Speedup], fmt: str) -> str:
    if not speedups:
        return ""
    common = ["adaptive", "fixed", "n", "mean samples", "speed-up", "w/o n0"]
    row = lambda s: [s.adaptive, s.fixed, str(s.n), f"{s.mean_samples:.1f}", f"{s.speedup:.2f}x",
                     f"{s.speedup_estimation:.2f}x"]
    if speedups[0].mode == "target":
        header = common + ["r0", "cert. acc", "fixed", "diff"]
        rows = [row(s) + [f"{s.radii[0]:g}", percent(s.certified_accuracy[0]),
                          percent(s.certified_accuracy_fixed[0]), f"{s.accuracy_difference[0] * 100:+.1f}"]
                for s in speedups]
        what = "certified accuracy (%) at the target radius r0"
    else:
        radii = speedups[0].radii
        check(all(s.radii == radii for s in speedups), "speed-ups in one table need the same radii")
        header = common + ["ACR", "fixed", "diff", "rel."] + [f"r={r:g}" for r in radii]
        rows = [row(s) + [f"{s.acr:.3f}", f"{s.acr_fixed:.3f}", f"{s.acr_difference:+.3f}",
                          "" if s.acr_relative is None else f"{s.acr_relative * 100:+.1f}%"]
                + [f"{percent(a)} ({d * 100:+.1f})" for a, d in zip(s.certified_accuracy, s.accuracy_difference)]
                for s in speedups]
        what = "ACR and certified accuracy (%; in brackets: minus the fixed run's)"
    title = _note(f"speed-up of {speedups[0].mode} runs against fixed n = n_max (speed-up = (n0 + n) / (n0 + mean "
                  f"samples); w/o n0: n / mean samples); {what}", fmt)
    return _titled(title, render_table(header, rows, [[False] * len(header)] * len(rows), fmt), fmt)


# ---- plots ----
