"""Run plots are written and non-empty; a run directory loads back to the same table."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from clplat.analysis import (
    PLOT_FILES,
    accuracy_matrix_figure,
    forgetting_curves_figure,
    load_run,
    save_run_plots,
    stability_gap_figure,
)
from clplat.analysis.plots import zoom_extent
from clplat.evaluation.metrics import prepare_table, summarize


def synthetic_table(num_exp: int = 3, iters: int = 40, every: int = 1, all_tasks: bool = True) -> pd.DataFrame:
    """A run with a stability gap: each previous task dips right after a boundary and recovers.

    Learning curves rise towards 0.9; previous tasks drop by 0.4 over a few iterations after each
    boundary and climb back. Future tasks (``all_tasks``) sit at chance level 0.1.
    """
    n = 200
    rows = []

    def add(it: int, exp: int, task: int, acc: float, boundary: bool) -> None:
        correct = int(round(np.clip(acc, 0, 1) * n))
        rows.append(dict(global_iter=it, experience=exp, eval_task=task, correct=correct, n=n,
                         loss=2.0 - correct / n, accuracy=correct / n, boundary=boundary, initial=it == 0))

    tasks_at = (lambda exp: range(num_exp)) if all_tasks else (lambda exp: range(exp + 1))
    for task in tasks_at(0):
        add(0, 0, task, 0.1, False)
    for exp in range(num_exp):
        for local in range(every, iters + 1, every):
            it = exp * iters + local
            for task in tasks_at(exp):
                if task == exp:
                    acc = 0.9 - 0.8 * math.exp(-local / 8)
                elif task < exp:
                    acc = 0.85 - 0.4 * math.exp(-((local - 5) ** 2) / 8)
                else:
                    acc = 0.1
                add(it, exp, task, acc, local == iters)
    return pd.DataFrame(rows)


def test_figures_are_figures() -> None:
    table = synthetic_table()
    for build in (forgetting_curves_figure, stability_gap_figure, accuracy_matrix_figure):
        fig = build(table)
        assert isinstance(fig, Figure)
        assert fig.axes  # something was drawn


@pytest.mark.parametrize("all_tasks", [True, False])
def test_save_run_plots_writes_non_empty_pngs(tmp_path, all_tasks: bool) -> None:
    paths = save_run_plots(synthetic_table(all_tasks=all_tasks), tmp_path / "run")
    assert sorted(paths) == sorted(PLOT_FILES)
    for name, path in paths.items():
        assert path == tmp_path / "run" / name
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_save_run_plots_single_experience_and_sparse_eval(tmp_path) -> None:
    for k, table in enumerate([synthetic_table(num_exp=1), synthetic_table(num_exp=4, every=10, all_tasks=False)]):
        paths = save_run_plots(table, tmp_path / str(k))
        assert all(p.stat().st_size > 1_000 for p in paths.values())


def test_stability_gap_figure_has_one_panel_per_boundary() -> None:
    fig = stability_gap_figure(synthetic_table(num_exp=4))
    assert sum(ax.axison for ax in fig.axes) == 3  # boundaries 0->1, 1->2, 2->3


def test_zoom_extent_reaches_the_end_of_the_next_experience() -> None:
    # experience 40 -> 80 evaluated every iteration: after = 40 ; before = max(40/10, 1) = 4
    assert zoom_extent(40, 80, 5.0, 1.0) == (36.0, 80.0)
    # sparse evaluation every 10 iterations: before = max(4, 10) = 10
    assert zoom_extent(40, 80, 5.0, 10.0) == (30.0, 80.0)
    # stopped mid-experience: after = max(1.5*5, 5*1) = 7.5, before = 1
    assert zoom_extent(40, None, 5.0, 1.0) == (39.0, 47.5)
    assert zoom_extent(40, None, float("nan"), 1.0, zoom_iters=8) == (39.0, 48.0)


def test_fitted_ylim_shows_small_gaps_and_stays_in_range() -> None:
    from clplat.analysis.plots import fitted_ylim

    lo, hi = fitted_ylim(np.array([0.90, 0.95, np.nan]))  # a 5-point task-IL gap fills the axis
    assert lo == pytest.approx(0.90 - 0.004) and hi == pytest.approx(0.95 + 0.004)
    assert fitted_ylim(np.array([0.0, 1.0])) == (-0.02, 1.02)
    lo, hi = fitted_ylim(np.array([0.5, 0.5]))  # a flat curve: at least 5 points around it
    assert hi - lo == pytest.approx(0.05) and lo < 0.5 < hi
    assert fitted_ylim(np.array([])) == (-0.02, 1.02)


def test_stability_gap_marks_only_real_drops_and_fades_tasks_at_chance() -> None:
    from matplotlib.lines import Line2D

    table = synthetic_table(num_exp=3, all_tasks=False)
    table["chance"] = 0.5
    flat = (table["eval_task"] == 1) & (table["experience"] == 2)  # task 1 never drops: no marker
    table.loc[flat, "correct"] = 178
    table.loc[flat, "accuracy"] = 0.89
    fig = stability_gap_figure(table)
    panel = fig.axes[1]  # boundary 1 -> 2: tasks 0 (gap) and 1 (flat)
    markers = [line for line in panel.get_lines() if line.get_marker() == "v"]
    assert len(markers) == 1 and markers[0].get_color() == panel.get_lines()[0].get_color()
    # a task at chance at the boundary: dashed, faint, named in the figure legend
    table.loc[(table["eval_task"] == 0), "chance"] = 0.95
    fig = stability_gap_figure(table)
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--" and line.get_alpha() == 0.45]
    assert len(dashed) == 1 and not any(line.get_marker() == "v" for line in fig.axes[0].get_lines())
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "at chance at the boundary (left out)" in labels and "task 0" in labels
    assert all(isinstance(h, Line2D) for h in fig.legends[0].legend_handles)
    assert all(ax.get_legend() is None for ax in fig.axes)  # no legend over a panel


def test_load_run_round_trip(tmp_path) -> None:
    table = synthetic_table()
    summary = summarize(table)
    run = tmp_path / "run"
    run.mkdir()
    table.to_csv(run / "metrics.csv", index=False)
    (run / "summary.json").write_text(json.dumps(summary, allow_nan=False))
    (run / "config.yaml").write_text("seed: 3\neval:\n  every_n_iters: 1\n  subset_size: 1000\n")
    loaded, loaded_summary, config = load_run(run)
    pd.testing.assert_frame_equal(loaded, prepare_table(table))
    assert loaded_summary == summary
    assert config == {"seed": 3, "eval": {"every_n_iters": 1, "subset_size": 1000}}
    assert summarize(loaded) == summary  # metrics recompute identically from the files


def test_load_run_partial_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        load_run(tmp_path)
    synthetic_table(num_exp=1).to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 1\n")
    table, summary, config = load_run(tmp_path)
    assert len(table) > 0 and summary == {} and config == {"seed": 1}
