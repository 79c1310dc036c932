"""Sample efficiency in `analyze` (issue 8): results against n, samples used per input, speed-ups of adaptive runs.

Pure functions of loaded certify files (analysis.load_results), nothing is sampled:
- `fixed_n_sets` finds fixed-n files that differ only in n (the files of `certify --n 100,1000,...`, or separate
  runs); `versus_n` gives a set's measured ACR and certified accuracy against n beside their prediction from the
  set's largest-n file (planning.predict: each input at its plug-in pA, exact binomial sums), as 003 Fig. 4.
- `samples_summary`: the estimation samples per input of an adaptive file (`certify --n-max` with `--max-loss` or
  `--target-radius`), with a histogram on log-spaced bins.
- `speedup`: an adaptive file against the fixed-n file at its n_max with the same settings and inputs.
`report` applies all three to a list of files (what `smoothcert analyze` prints); `plot_versus_n` and
`plot_samples` draw them.

compare.py holds the comparisons, report.py the report and its tables, figures.py the figures.
"""
from .compare import (ADAPTIVE, KEYS, SamplesSummary, Speedup, VersusN, fixed_n_sets, matching_fixed, samples_summary,
                      speedup, versus_n)
from .figures import plot_samples, plot_versus_n, samples_figure, versus_n_figure
from .report import Efficiency, report

__all__ = ["ADAPTIVE", "KEYS", "Efficiency", "SamplesSummary", "Speedup", "VersusN", "fixed_n_sets", "matching_fixed",
           "plot_samples", "plot_versus_n", "report", "samples_figure", "samples_summary", "speedup",
           "versus_n", "versus_n_figure"]
