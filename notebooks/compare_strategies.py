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
# # Compare the strategies of a sweep
#
# The table of `clplat-report` (mean ± std over seeds, grouped by the swept keys) and its
# comparison plots, for a multirun directory such as the one made by
# `clplat-train -m strategy=naive,replay seed=0,1,2`. Set `sweep_dir` below, or leave it `None`
# for the newest sweep under `multirun/`.

# %% tags=["parameters"]
sweep_dir = None  # a multirun directory; None: the newest under multirun/
by = None         # keys to group by, e.g. ["strategy"]; None: the keys that differ between runs

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from clplat.analysis import (
    aggregate,
    average_accuracy_figure,
    collect_runs,
    find_failed_jobs,
    gap_curves,
    resolve_run_path,
    stability_gap_comparison_figure,
    sweep_curves,
    swept_keys,
    to_markdown,
)

root = resolve_run_path(sweep_dir, kind="sweep")
runs = collect_runs(root)
group_by = list(by) if by else swept_keys(runs)
failed = find_failed_jobs(root)
display(Markdown(f"{len(runs)} finished run(s) under `{root}`, grouped by {', '.join(group_by)}"
                 + (f"; **{len(failed)} failed job(s)**: " + ", ".join(f"`{j.job_dir.name}` ({j.message})"
                                                                     for j in failed) if failed else "")))

# %% [markdown]
# ## Results (mean ± std over each group's runs)

# %%
table = aggregate(runs, group_by)
display(Markdown(to_markdown(table, group_by)))

# %% [markdown]
# ## Average accuracy on the seen tasks during training

# %%
average_accuracy_figure(sweep_curves(runs, group_by))

# %% [markdown]
# ## Previous tasks around each boundary (stability gap)

# %%
stability_gap_comparison_figure(gap_curves(runs, group_by))

# %% [markdown]
# ## Every run

# %%
runs.drop(columns=["run_dir"]).round(3)
