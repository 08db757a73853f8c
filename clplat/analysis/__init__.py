"""Analysis of finished runs: plots and run loading (used by the CLI, reports and notebooks).

Everything a notebook needs is importable from here (the metric functions of
:mod:`clplat.evaluation.metrics` are re-exported), so notebooks depend on one module.
"""

from clplat.analysis.plots import (
    PLOT_FILES,
    accuracy_matrix_figure,
    forgetting_curves_figure,
    save_run_plots,
    stability_gap_figure,
)
from clplat.analysis.runs import (
    REPORT_METRICS,
    FailedJob,
    accuracy_matrix_table,
    aggregate,
    collect_runs,
    find_failed_jobs,
    find_runs,
    group_labels,
    load_run,
    resolve_run_path,
    swept_keys,
    to_markdown,
)
from clplat.analysis.sweep_plots import (
    SWEEP_PLOT_FILES,
    average_accuracy_figure,
    gap_curves,
    metric_curves_figure,
    save_sweep_plots,
    stability_gap_comparison_figure,
    sweep_curves,
)
from clplat.evaluation.metrics import (
    boundary_iters,
    min_acc_curve,
    stability_gap,
    summarize_gaps,
    wc_acc_curve,
)

__all__ = [
    "accuracy_matrix_table",
    "boundary_iters",
    "min_acc_curve",
    "stability_gap",
    "summarize_gaps",
    "wc_acc_curve",
    "PLOT_FILES",
    "REPORT_METRICS",
    "SWEEP_PLOT_FILES",
    "FailedJob",
    "aggregate",
    "accuracy_matrix_figure",
    "average_accuracy_figure",
    "collect_runs",
    "find_failed_jobs",
    "find_runs",
    "forgetting_curves_figure",
    "gap_curves",
    "group_labels",
    "load_run",
    "metric_curves_figure",
    "resolve_run_path",
    "save_run_plots",
    "save_sweep_plots",
    "stability_gap_comparison_figure",
    "stability_gap_figure",
    "sweep_curves",
    "swept_keys",
    "to_markdown",
]
