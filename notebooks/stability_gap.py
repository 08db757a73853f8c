# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The stability gap
#
# Right after a task boundary the accuracy of previous tasks often drops sharply and recovers
# (De Lange et al., ICLR 2023); end-of-task evaluation never sees it. This notebook zooms into
# every boundary, tabulates the depth and recovery of each drop, and follows the worst-case
# metrics min-ACC and WC-ACC over time, for every strategy of a sweep. Set `path` to a run or a
# sweep directory, or leave it `None` for the newest one.

# %% tags=["parameters"]
path = None        # a run or a multirun directory; None: the newest under runs/ or multirun/
zoom_iters = None  # iterations shown after each boundary; None: chosen from the data
tolerance = None   # recovery: back within this accuracy of the boundary level; None: 2 standard errors, as in summary.json

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import Markdown, display

from clplat.analysis import (
    collect_runs,
    gap_curves,
    group_labels,
    load_run,
    metric_curves_figure,
    resolve_run_path,
    stability_gap,
    stability_gap_comparison_figure,
    stability_gap_figure,
    summarize_gaps,
    sweep_curves,
    swept_keys,
)

root = resolve_run_path(path, kind="any")
runs = collect_runs(root)
group_by = swept_keys(runs)
runs["group"] = group_labels(runs, group_by)
display(Markdown(f"{len(runs)} run(s) under `{root}`, grouped by {', '.join(group_by)}"))

# %% [markdown]
# ## Zoom into each boundary, one run per group
#
# ▼ the deepest point of each previous task after the boundary, ○ where it is back within the
# tolerance.

# %%
first_runs = runs.groupby("group", sort=True).head(1)
for _, run in first_runs.iterrows():
    display(Markdown(f"### {run['group']} — `{run['run_dir']}`"))
    display(stability_gap_figure(load_run(run["run_dir"]).table, tolerance=tolerance, zoom_iters=zoom_iters))

# %% [markdown]
# ## Depth and recovery per boundary and task
#
# `depth`: accuracy at the boundary minus the minimum after it, split into `transient` (won back
# by the end of the experience) and `permanent` (still lost); `recovery_iters`: iterations until
# the task is back within the tolerance (NaN: never within the experience); `at_chance`: the task
# was already at chance at the boundary (left out of the summary).

# %%
rows = []
for _, run in first_runs.iterrows():
    gaps = stability_gap(load_run(run["run_dir"]).table, tolerance=tolerance)
    gaps.insert(0, "group", run["group"])
    rows.append(gaps)
    summary = summarize_gaps(gaps)
    display(Markdown(f"**{run['group']}**: mean depth {summary['depth_mean']:.3f} (transient "
                     f"{summary['transient_mean']:.3f}, permanent {summary['permanent_mean']:.3f}), "
                     f"{summary['n_gaps']} gap(s) in {summary['n_cases']} cases, "
                     f"{summary['n_at_chance']} left out at chance"))
pd.concat(rows, ignore_index=True).round(3)

# %% [markdown]
# ## Every group around each boundary (mean over seeds ± 1 std)

# %%
stability_gap_comparison_figure(gap_curves(runs), zoom_iters=zoom_iters)

# %% [markdown]
# ## min-ACC and WC-ACC over time
#
# min-ACC: mean over previous tasks of their worst accuracy since their training ended;
# WC-ACC mixes it with the current task's accuracy. Both only fall when a gap is deeper than
# any before it.

# %%
metric_curves_figure(sweep_curves(runs), ("min_acc", "wc_acc"),
                     title="Worst-case accuracy over time (mean over seeds \u00b1 1 std)")
