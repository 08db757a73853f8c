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
# # Forgetting curves of one run
#
# Every task's accuracy against the global iteration, with the end of each experience dashed,
# and the accuracy matrix `R[i, j]` (accuracy on task j after training experience i). Set
# `run_dir` below to a run directory (`runs/<date>/<time>_<stream>_<strategy>`) or leave it
# `None` for the newest run; a sweep directory shows its first run.

# %% tags=["parameters"]
run_dir = None  # a run directory; None: the newest one under runs/

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from clplat.analysis import (
    accuracy_matrix_figure,
    accuracy_matrix_table,
    find_runs,
    forgetting_curves_figure,
    load_run,
    resolve_run_path,
)

path = find_runs(resolve_run_path(run_dir, kind="run"))[0]
table, summary, config = load_run(path)


def fmt(value):
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


display(Markdown(
    f"**{summary.get('strategy')}** on **{summary.get('stream')}** (seed {summary.get('seed')}) — `{path}`\n\n"
    + " · ".join(f"{key} = {fmt(summary.get(key))}"
                 for key in ("avg_acc", "forgetting", "bwt", "min_acc", "wc_acc", "sg_depth_mean"))
))

# %% [markdown]
# ## Accuracy of every task during training
#
# A task's curve starts when its experience starts; drops right after a dashed line are the
# stability gap, a curve that stays low is forgetting.

# %%
forgetting_curves_figure(table)

# %% [markdown]
# ## Accuracy matrix
#
# Row i: after training experience i. Upper triangle empty unless the run evaluated future
# tasks (`eval.tasks=all`).

# %%
accuracy_matrix_table(table).round(3)

# %%
accuracy_matrix_figure(table)
