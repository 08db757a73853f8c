"""Run plots, for the CLI, reports and notebooks.

Plots are built on ``matplotlib.figure.Figure`` objects, never through ``pyplot``: no global
figure registry to leak memory across a sweep, no GUI backend needed on a headless node, and
safe to call from several runs in one process. ``Figure.savefig`` renders PNGs with Agg.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from clplat.evaluation.metrics import (
    DEFAULT_TOLERANCE,
    accuracy_matrix,
    boundary_iters,
    prepare_table,
    stability_gap,
)

PLOT_FILES: tuple[str, ...] = ("forgetting_curves.png", "stability_gap.png", "accuracy_matrix.png")
"""Files written by :func:`save_run_plots`, in the run directory."""

DEFAULT_DPI = 100
_MARKER_MAX_POINTS = 40  # draw point markers only when a curve is sparse enough to read them
_MIN_Y_SPAN = 0.05  # the narrowest accuracy range an axis shows (5 points)


def task_color(task: int, num_tasks: int) -> tuple[float, float, float, float]:
    """One stable colour per task, the same in every plot of a run (tab10, tab20 beyond 10)."""
    cmap = colormaps["tab10" if num_tasks <= 10 else "tab20"]
    return cmap(task % cmap.N)


def fitted_ylim(values: np.ndarray, min_span: float = _MIN_Y_SPAN) -> tuple[float, float]:
    """An accuracy range fitted to ``values``: a task-IL gap of a few points is invisible on a
    0-1 axis. Padded by 8 % of the span, at least ``min_span`` wide, kept inside [-0.02, 1.02]."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return -0.02, 1.02
    lo, hi = float(v.min()), float(v.max())
    pad = 0.08 * max(hi - lo, min_span)
    lo, hi = lo - pad, hi + pad
    if hi - lo < min_span:
        middle = (lo + hi) / 2
        lo, hi = middle - min_span / 2, middle + min_span / 2
    return max(lo, -0.02), min(hi, 1.02)


def _draw_boundaries(ax: Axes, ends: pd.Series, label: bool = True) -> None:
    """Vertical dashed lines at the end of each experience (one legend entry for all)."""
    for n, t_end in enumerate(ends.to_numpy()):
        ax.axvline(t_end, color="0.5", ls="--", lw=0.8, label="end of experience" if label and n == 0 else None)


def forgetting_curves_figure(table: pd.DataFrame) -> Figure:
    """Accuracy of every evaluated task against ``global_iter``; dashed lines at boundaries.

    Evaluations of a task before it is trained (``eval.tasks=all``) are drawn thin, dotted and
    faint, without markers, and named in the legend, so they cannot be taken for a learned task's
    curve. The accuracy axis is fitted to the data.
    """
    t = prepare_table(table)
    fig = Figure(figsize=(9.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    T = int(max(t["eval_task"].max(), t["experience"].max())) + 1 if len(t) else 0
    for task, g in t.groupby("eval_task"):
        color = task_color(int(task), T)
        seen = g.loc[g["experience"] >= task]
        future = g.loc[g["experience"] < task]
        marker = "o" if len(seen) <= _MARKER_MAX_POINTS else None
        ax.plot(seen["global_iter"], seen["accuracy"], color=color, lw=1.3, marker=marker, ms=3,
                label=f"task {task}")
        if len(future):
            ax.plot(future["global_iter"], future["accuracy"], color=color, lw=0.7, ls=":", alpha=0.35)
    if (t["experience"] < t["eval_task"]).any():
        ax.plot([], [], color="0.4", lw=0.7, ls=":", alpha=0.6, label="not yet trained")
    _draw_boundaries(ax, boundary_iters(t))
    ax.set_xlabel("global iteration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(*fitted_ylim(t["accuracy"].to_numpy()))
    ax.set_title("Accuracy per task during training")
    ax.grid(alpha=0.3)
    if len(t):  # outside the axes: never hides a curve, and avoids the slow loc="best" search
        ax.legend(fontsize="small", ncols=math.ceil(T / 20), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def zoom_extent(
    boundary_iter: int, next_boundary_iter: int | None, iter_of_min: float, eval_spacing: float,
    zoom_iters: int | None = None,
) -> tuple[float, float]:
    """x-range around a boundary: from a little before it to the end of the next experience, so
    the dip, the recovery and what is left at the end (permanent forgetting) are all in view.

    Without the next boundary (a run stopped mid-experience) the span after the boundary is the
    larger of 1.5x the iteration of the deepest point and 5 evaluation intervals. ``zoom_iters``
    sets the span instead (a closer look at a per-iteration gap). A tenth of the span (at least
    one evaluation interval) is shown before the boundary, for the pre-boundary level.
    """
    if zoom_iters is not None:
        after = float(zoom_iters)
    elif next_boundary_iter is not None:
        after = float(next_boundary_iter - boundary_iter)
    else:
        deepest = 0.0 if math.isnan(iter_of_min) else iter_of_min
        after = max(1.5 * deepest, 5 * eval_spacing, 1.0)
    before = max(after / 10.0, eval_spacing)
    return boundary_iter - before, boundary_iter + after


def _median_spacing(iters: np.ndarray) -> float:
    """Typical distance between evaluations (1.0 when it cannot be told)."""
    steps = np.diff(np.unique(iters))
    return float(np.median(steps)) if steps.size else 1.0


def pick_panels(items: list[int], max_panels: int) -> list[int]:
    """At most ``max_panels`` items, evenly spread and always keeping the first and the last.

    Rendering cost grows with the number of subplots (a 20-task stream would take seconds to
    save), and evenly spaced boundaries still show how the gap evolves along the stream.
    """
    if max_panels < 1:
        raise ValueError(f"max_panels must be >= 1, got {max_panels}")
    if len(items) <= max_panels:
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, max_panels).round().astype(int))
    return [items[i] for i in idx]


def stability_gap_figure(
    table: pd.DataFrame,
    tolerance: float | None = DEFAULT_TOLERANCE,
    zoom_iters: int | None = None,
    max_panels: int = 9,
) -> Figure:
    """One subplot per task boundary (at most ``max_panels``, evenly spread): previous tasks'
    accuracy from just before the boundary to the end of the next experience, the deepest point
    marked (triangle) and the recovery point (circle) where :func:`stability_gap` finds a gap.
    Tasks already at chance at the boundary (left out of the gap metrics) are drawn dashed and
    faint. Each panel's accuracy axis is fitted to its curves; one legend beside the panels."""
    t = prepare_table(table)
    ends = boundary_iters(t)
    gaps = stability_gap(t, tolerance)
    all_ks = sorted(int(k) for k in gaps["experience"].unique())
    ks = pick_panels(all_ks, max_panels)
    T = int(max(t["eval_task"].max(), t["experience"].max())) + 1 if len(t) else 0
    ncols = max(1, min(len(ks), 3))
    nrows = max(1, math.ceil(len(ks) / ncols))
    legend_width = 2.6  # inches right of the panels: a legend there never hides a curve
    width, height = 4.2 * ncols + legend_width, 3.2 * nrows + 0.4
    fig = Figure(figsize=(width, height))
    # Fixed margins in inches: constrained layout doubles the save time of a many-panel figure.
    fig.subplots_adjust(left=0.6 / width, right=1 - (0.15 + legend_width) / width, bottom=0.5 / height,
                        top=1 - 0.75 / height, wspace=0.3, hspace=0.55)
    if not ks:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no task boundary with evaluations after it", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles: dict[str, object] = {}
    for ax, k in zip(axes, ks):
        rows = gaps.loc[gaps["experience"] == k]
        t_b = int(ends[k - 1])
        lo, hi = zoom_extent(
            t_b, int(ends[k]) if k in ends.index else None, float(rows["iter_of_min"].max()),
            _median_spacing(t.loc[t["experience"] == k, "global_iter"].to_numpy()), zoom_iters,
        )
        window = t.loc[(t["global_iter"] >= lo) & (t["global_iter"] <= hi)]
        shown = []
        for _, r in rows.iterrows():
            task = int(r["task"])
            color = task_color(task, T)
            g = window.loc[window["eval_task"] == task]
            shown.append(g["accuracy"].to_numpy())
            if bool(r["at_chance"]):
                line, = ax.plot(g["global_iter"], g["accuracy"], color=color, lw=0.8, ls="--", alpha=0.45)
                handles.setdefault(f"task {task}", line)
                handles.setdefault("at chance at the boundary (left out)",
                                   Line2D([], [], color="0.4", lw=0.8, ls="--", alpha=0.45))
                continue
            line, = ax.plot(g["global_iter"], g["accuracy"], color=color, lw=1.2)
            handles.setdefault(f"task {task}", line)
            if not bool(r["has_gap"]):
                continue  # no drop beyond the tolerance: nothing to mark
            ax.plot(t_b + r["iter_of_min"], r["min_acc"], marker="v", color=color, ms=7, ls="none")
            if bool(r["recovered"]):
                rec_x = t_b + r["recovery_iters"]
                rec_y = g.loc[g["global_iter"] == rec_x, "accuracy"]
                if len(rec_y):
                    ax.plot(rec_x, float(rec_y.iloc[0]), marker="o", mfc="none", color=color, ms=7, ls="none")
        ax.axvline(t_b, color="0.5", ls="--", lw=0.8)
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(*fitted_ylim(np.concatenate(shown) if shown else np.array([])))
        ax.set_title(f"experience {k - 1} \u2192 {k} (iter {t_b})", fontsize="medium")
        ax.set_xlabel("global iteration")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    ordered = sorted(handles, key=lambda name: (not name.startswith("task "), int(name.split()[1])
                                                if name.startswith("task ") else 0))
    fig.legend([handles[name] for name in ordered], ordered, loc="upper right", fontsize="small",
               ncols=max(1, math.ceil(len(ordered) / 24)), bbox_to_anchor=(1.0, 1 - 0.75 / height))
    for ax in axes[len(ks):]:
        ax.set_axis_off()
    shown = "" if len(ks) == len(all_ks) else f" ({len(ks)} of {len(all_ks)} boundaries)"
    fig.suptitle(f"Stability gap: previous tasks after each boundary{shown} (\u25bc min, \u25cb recovered)")
    return fig


def accuracy_matrix_figure(table: pd.DataFrame) -> Figure:
    """Heatmap of ``R[i, j]`` with the values written in the cells; unevaluated cells blank."""
    R = accuracy_matrix(table)
    T = R.shape[0]
    size = min(2.0 + 0.6 * max(T, 1), 12.0)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(R), vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(image, ax=ax, label="accuracy")
    if T <= 20:
        fontsize = 9 if T <= 8 else 6
        for i, j in zip(*np.nonzero(~np.isnan(R))):
            value = R[i, j]
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xlabel("evaluated task j")
    ax.set_ylabel("after training experience i")
    ax.set_title("Accuracy matrix R[i, j]")
    return fig


def save_run_plots(
    table: pd.DataFrame, out_dir: str | Path, dpi: int = DEFAULT_DPI, tolerance: float | None = DEFAULT_TOLERANCE
) -> dict[str, Path]:
    """Write the standard run plots into ``out_dir`` and return their paths by file name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = prepare_table(table)
    builders: dict[str, Callable[[], Figure]] = {
        "forgetting_curves.png": lambda: forgetting_curves_figure(t),
        "stability_gap.png": lambda: stability_gap_figure(t, tolerance),
        "accuracy_matrix.png": lambda: accuracy_matrix_figure(t),
    }
    paths: dict[str, Path] = {}
    for name, build in builders.items():
        path = out / name
        build().savefig(path, dpi=dpi)
        paths[name] = path
    return paths


__all__ = [
    "PLOT_FILES",
    "DEFAULT_DPI",
    "task_color",
    "fitted_ylim",
    "forgetting_curves_figure",
    "zoom_extent",
    "pick_panels",
    "stability_gap_figure",
    "accuracy_matrix_figure",
    "save_run_plots",
]
