"""Analyse certification results: certified accuracy, ACR, abstain rate and intervals; tables, plots and exports.

Reads `certify` files in Cohen et al. 2019's format (`idx label predict radius correct time`, as their published
results are) or smoothcert's (the same columns, then the settings), and `predict` files (no radius: accuracy and
abstain rate). `summarize(certificates, labels)` gives the same numbers straight from `Smooth.certify_many`.

reading.py reads and checks files; metrics.py computes what a run achieved; tables.py, figures.py and exports.py
present it; confidence.py does the same for certified-confidence files.
"""
from .confidence import ConfidenceResults, confidence_figure, confidence_table, is_confidence_file, load_confidence, plot_confidence
from .summary import Summary, export_csv, export_dataframe, export_json, format_table, summarize, summary_table
from .figures import PLOT_FORMATS, plot_certified_accuracy, plot_figure
from .metrics import (DEFAULT_RADII, abstain_rate, average_certified_radius, certified_accuracy,
                      certified_accuracy_interval, check_radii, radius_grid)
from .reading import REQUIRED, SETTINGS, Results, check_unique, load_results, relabel
from .tables import FORMATS, output_target

__all__ = ["DEFAULT_RADII", "FORMATS", "PLOT_FORMATS", "REQUIRED", "Results", "SETTINGS", "Summary", "abstain_rate",
           "average_certified_radius", "certified_accuracy", "certified_accuracy_interval", "export_csv",
           "export_dataframe", "export_json", "format_table", "load_results", "output_target",
           "plot_certified_accuracy", "plot_figure", "radius_grid", "relabel", "summarize", "summary_table"]
