"""Comparison plots of several runs: one curve per group of runs (e.g. per strategy), a band over seeds.

A sweep answers "which setting is better, and by more than the seed noise?": every figure here
draws the mean over a group's runs (the runs that differ only in the seed) and a band of ± one
standard deviation, so a difference smaller than the band is visibly not one. Groups are the
swept keys of :func:`clplat.analysis.runs.swept_keys`, the same as the report table's rows.

Like :mod:`clplat.analysis.plots`, figures are plain ``matplotlib.figure.Figure`` objects (no
pyplot state), and everything is computed from the run directories alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clplat.analysis.plots import DEFAULT_DPI, fitted_ylim, pick_panels, zoom_extent
from clplat.analysis.runs import collect_runs, group_labels, load_run, swept_keys
from clplat.evaluation.metrics import boundary_iters, min_acc_curve, prepare_table, wc_acc_curve

SWEEP_PLOT_FILES: tuple[str, ...] = ("report_accuracy.png", "report_stability_gap.png")
"""Files written by :func:`save_sweep_plots` (next to ``report.md``)."""

CURVE_COLUMNS: tuple[str, ...] = ("group", "run_dir", "seed", "global_iter", "experience", "boundary",
                                  "acc_seen", "min_acc", "wc_acc")
GAP_CURVE_COLUMNS: tuple[str, ...] = ("group", "run_dir", "boundary_k", "boundary_iter", "rel_iter", "acc_prev")

METRIC_TITLES = {"acc_seen": "average accuracy on seen tasks", "min_acc": "min-ACC", "wc_acc": "WC-ACC"}


def group_color(index: int, num_groups: int) -> tuple[float, float, float, float]:
    """One stable colour per group across every comparison figure (tab10, tab20 beyond 10)."""
    cmap = colormaps["tab10" if num_groups <= 10 else "tab20"]
    return cmap(index % cmap.N)


def _runs_frame(runs: pd.DataFrame | str | Path, group_by: list[str] | None) -> pd.DataFrame:
    """``collect_runs`` output (or a path to collect) with a ``group`` label per run."""
    frame = collect_runs(runs) if isinstance(runs, (str, Path)) else runs.copy()
    if frame.empty:
        raise ValueError("no finished runs to plot")
    if "group" in frame.columns and group_by is None:  # labelled already (by this module)
        return frame
    frame["group"] = group_labels(frame, group_by if group_by is not None else swept_keys(frame))
    return frame


def _seen_average(table: pd.DataFrame) -> pd.DataFrame:
    """Per evaluation time: the experience, whether it is a boundary, and the mean accuracy on
    the tasks seen so far (``eval_task <= experience``; future-task evaluations excluded)."""
    seen = table.loc[table["eval_task"] <= table["experience"]]
    return (seen.groupby("global_iter", sort=True)
            .agg(experience=("experience", "max"), boundary=("boundary", "any"), acc_seen=("accuracy", "mean"))
            .reset_index())


def sweep_curves(runs: pd.DataFrame | str | Path, group_by: list[str] | None = None) -> pd.DataFrame:
    """Long table of every run's curves over ``global_iter`` (see ``CURVE_COLUMNS``).

    ``acc_seen`` is the macro average over the seen tasks at each evaluation (the quantity
    whose final value is the average accuracy); ``min_acc``/``wc_acc`` are the running
    worst-case metrics of :mod:`clplat.evaluation.metrics`.
    """
    frame = _runs_frame(runs, group_by)
    parts = []
    for _, run in frame.iterrows():
        table = load_run(run["run_dir"]).table
        curve = _seen_average(table).set_index("global_iter")
        curve["min_acc"] = min_acc_curve(table)
        curve["wc_acc"] = wc_acc_curve(table)
        curve = curve.reset_index()
        curve.insert(0, "seed", run.get("seed"))
        curve.insert(0, "run_dir", run["run_dir"])
        curve.insert(0, "group", run["group"])
        parts.append(curve)
    return pd.concat(parts, ignore_index=True)[list(CURVE_COLUMNS)]


def _band(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean and std of ``y`` over runs at each ``x`` (runs of one group share evaluation times;
    where they do not, each x averages the runs evaluated there)."""
    stats = frame.groupby(x, sort=True)[y].agg(["mean", "std", "count"])
    stats["std"] = stats["std"].fillna(0.0)
    return stats.dropna(subset=["mean"])


def _draw_band(ax: Axes, stats: pd.DataFrame, color: tuple, label: str) -> None:
    x = stats.index.to_numpy(float)
    mean, std = stats["mean"].to_numpy(float), stats["std"].to_numpy(float)
    n = int(stats["count"].max()) if len(stats) else 0
    ax.plot(x, mean, color=color, lw=1.4, label=f"{label} (n={n})")
    if n > 1:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def _band_extent(stats: pd.DataFrame) -> np.ndarray:
    """Every value a drawn band reaches (mean ± std), for fitting the accuracy axis to it."""
    mean, std = stats["mean"].to_numpy(float), np.nan_to_num(stats["std"].to_numpy(float))
    return np.concatenate([mean - std, mean + std])


def _group_order(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["group"].astype(str).unique())


def metric_curves_figure(curves: pd.DataFrame, metrics: Sequence[str] = ("acc_seen",),
                         title: str | None = None) -> Figure:
    """One panel per metric of :func:`sweep_curves`: every group's mean over its runs against
    ``global_iter``, ± one std band, experience boundaries dashed."""
    unknown = [m for m in metrics if m not in METRIC_TITLES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRIC_TITLES)}")
    groups = _group_order(curves)
    fig = Figure(figsize=(9.0, 3.6 * len(metrics) + 0.4), layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False, sharex=True).ravel()
    ends = sorted(set(curves.loc[curves["boundary"].astype(bool), "global_iter"].astype(int)))
    for ax, metric in zip(axes, metrics):
        shown = []
        for i, group in enumerate(groups):
            stats = _band(curves.loc[curves["group"] == group], "global_iter", metric)
            if len(stats):
                _draw_band(ax, stats, group_color(i, len(groups)), group)
                shown.append(_band_extent(stats))
        for n, t_end in enumerate(ends):
            ax.axvline(t_end, color="0.6", ls="--", lw=0.7, label="end of an experience" if n == 0 else None)
        ax.set_ylim(*fitted_ylim(np.concatenate(shown) if shown else np.array([])))
        ax.set_xlabel("global iteration")
        ax.set_ylabel(METRIC_TITLES[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title or "Mean over seeds \u00b1 1 std")
    return fig


def average_accuracy_figure(curves: pd.DataFrame) -> Figure:
    """Average accuracy on the seen tasks vs iteration, one curve per group, band over seeds."""
    return metric_curves_figure(curves, ("acc_seen",),
                                title="Average accuracy on the tasks seen so far (mean over seeds \u00b1 1 std)")


def gap_curves(runs: pd.DataFrame | str | Path, group_by: list[str] | None = None) -> pd.DataFrame:
    """Previous tasks' mean accuracy around every boundary, per run (see ``GAP_CURVE_COLUMNS``).

    For the boundary into experience k (at ``boundary_iter``): ``acc_prev`` is the mean accuracy
    over tasks ``0..k-1`` at each evaluation of experience k-1 and k, ``rel_iter`` the iteration
    relative to the boundary — so strategies with different schedules line up at 0.
    """
    frame = _runs_frame(runs, group_by)
    parts = []
    for _, run in frame.iterrows():
        table = prepare_table(load_run(run["run_dir"]).table)
        ends = boundary_iters(table)
        for k in sorted(int(e) for e in table["experience"].unique()):
            if k < 1 or (k - 1) not in ends.index:
                continue
            t_b = int(ends[k - 1])
            rows = table.loc[table["experience"].isin([k - 1, k]) & (table["eval_task"] < k)]
            mean = rows.groupby("global_iter")["accuracy"].mean()
            if not (mean.index > t_b).any():  # nothing trained after this boundary (e.g. joint)
                continue
            parts.append(pd.DataFrame({"group": run["group"], "run_dir": run["run_dir"], "boundary_k": k,
                                       "boundary_iter": t_b, "rel_iter": mean.index.to_numpy() - t_b,
                                       "acc_prev": mean.to_numpy(float)}))
    if not parts:
        return pd.DataFrame(columns=list(GAP_CURVE_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(GAP_CURVE_COLUMNS)]


def stability_gap_comparison_figure(gaps: pd.DataFrame, zoom_iters: int | None = None,
                                    max_panels: int = 6) -> Figure:
    """One panel per boundary (at most ``max_panels``, evenly spread): the previous tasks' mean
    accuracy just before and after it, per group, ± one std over seeds.

    The window follows :func:`clplat.analysis.plots.zoom_extent` (long enough to show the
    deepest point of the slowest-recovering group) unless ``zoom_iters`` fixes it.
    """
    ks = pick_panels(sorted(int(k) for k in gaps["boundary_k"].unique()), max_panels) if len(gaps) else []
    groups = _group_order(gaps) if len(gaps) else []
    ncols = max(1, min(len(ks), 3))
    nrows = max(1, math.ceil(len(ks) / ncols))
    width, height = 4.4 * ncols + 1.8, 3.2 * nrows + 0.5
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.6 / width, right=1 - 2.0 / width, bottom=0.5 / height,
                        top=1 - 0.7 / height, wspace=0.3, hspace=0.55)
    if not ks:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no boundary with training after it", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, k in zip(axes, ks):
        panel = gaps.loc[gaps["boundary_k"] == k]
        after = panel.loc[panel["rel_iter"] > 0]
        spacing = float(np.median(np.diff(np.unique(after["rel_iter"])))) if after["rel_iter"].nunique() > 1 else 1.0
        lo, hi = 0.0, 1.0
        for group in groups:
            stats = _band(after.loc[after["group"] == group], "rel_iter", "acc_prev")
            if len(stats):
                deepest = float(stats["mean"].idxmin())
                length = float(stats.index.max())
                g_lo, g_hi = zoom_extent(0, int(length), deepest, spacing, zoom_iters)
                lo, hi = min(lo, g_lo), max(hi, g_hi)
        shown = []
        for i, group in enumerate(groups):
            rows = panel.loc[(panel["group"] == group) & (panel["rel_iter"] >= lo) & (panel["rel_iter"] <= hi)]
            stats = _band(rows, "rel_iter", "acc_prev")
            if len(stats):
                _draw_band(ax, stats, group_color(i, len(groups)), group)
                shown.append(_band_extent(stats))
        ax.axvline(0, color="0.5", ls="--", lw=0.8)
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(*fitted_ylim(np.concatenate(shown) if shown else np.array([])))
        ax.set_title(f"experience {k - 1} \u2192 {k}", fontsize="medium")
        ax.set_xlabel("iterations after the boundary")
        ax.set_ylabel(f"mean acc. tasks 0..{k - 1}")
        ax.grid(alpha=0.3)
    for ax in axes[len(ks):]:
        ax.set_axis_off()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize="small", loc="upper right", bbox_to_anchor=(1.0, 1 - 0.7 / height))
    fig.suptitle("Stability gap: previous tasks around each boundary (mean over seeds \u00b1 1 std)")
    return fig


def save_sweep_plots(runs: pd.DataFrame | str | Path, out_dir: str | Path, group_by: list[str] | None = None,
                     dpi: int = DEFAULT_DPI) -> dict[str, Path]:
    """Write the comparison figures of ``SWEEP_PLOT_FILES`` into ``out_dir``; paths by file name."""
    frame = _runs_frame(runs, group_by)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "report_accuracy.png": lambda: average_accuracy_figure(sweep_curves(frame)),
        "report_stability_gap.png": lambda: stability_gap_comparison_figure(gap_curves(frame)),
    }
    paths: dict[str, Path] = {}
    for name, build in figures.items():
        path = out / name
        build().savefig(path, dpi=dpi)
        paths[name] = path
    return paths


__all__ = [
    "CURVE_COLUMNS",
    "GAP_CURVE_COLUMNS",
    "SWEEP_PLOT_FILES",
    "average_accuracy_figure",
    "gap_curves",
    "metric_curves_figure",
    "save_sweep_plots",
    "stability_gap_comparison_figure",
    "sweep_curves",
]
