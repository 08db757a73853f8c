"""Analysis of finished runs: plots and run loading (used by the CLI, reports and notebooks)."""

from clplat.analysis.plots import (
    PLOT_FILES,
    accuracy_matrix_figure,
    forgetting_curves_figure,
    save_run_plots,
    stability_gap_figure,
)
from clplat.analysis.runs import aggregate, collect_runs, find_runs, load_run

__all__ = [
    "PLOT_FILES",
    "aggregate",
    "collect_runs",
    "find_runs",
    "accuracy_matrix_figure",
    "forgetting_curves_figure",
    "load_run",
    "save_run_plots",
    "stability_gap_figure",
]
