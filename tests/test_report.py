"""``clplat-report`` and the comparison plots, on sweep directories written here.

The sweeps are synthetic (run directories written from hand-made results tables, laid out as
Hydra writes them) so the grouping, the mean ± std numbers, the failed-job listing and the
figures are checked exactly and in a second; ``tests/test_sweeps.py`` runs the real launchers
and then this report on what they produced.
"""

from __future__ import annotations

import json
import os
import time
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clplat.analysis import (
    SWEEP_PLOT_FILES,
    collect_runs,
    find_failed_jobs,
    gap_curves,
    metric_curves_figure,
    resolve_run_path,
    stability_gap_comparison_figure,
    sweep_curves,
    swept_keys,
)
from clplat.analysis.runs import JOB_ERROR_FILE
from clplat.evaluation.metrics import summarize
from clplat.report import main as report_main
from tests.test_plots import synthetic_table

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(job: Path, strategy: str, seed: int, shift: float, overrides: list[str] | None = None) -> dict:
    """A finished run directory: metrics.csv, summary.json and Hydra's overrides.yaml."""
    table = synthetic_table(num_exp=3, iters=20, every=2, all_tasks=False)
    table["accuracy"] = np.clip(table["accuracy"] + shift, 0.0, 1.0)
    table["correct"] = (table["accuracy"] * table["n"]).round().astype(int)
    table["accuracy"] = table["correct"] / table["n"]
    summary = {**summarize(table), "strategy": strategy, "stream": "synthetic", "seed": seed,
               "wall_time_s": 10.0 + seed}
    (job / ".hydra").mkdir(parents=True)
    table.to_csv(job / "metrics.csv", index=False)
    (job / "summary.json").write_text(json.dumps(summary, allow_nan=False))
    lines = overrides if overrides is not None else [f"strategy={strategy}", f"seed={seed}", "trainer.iterations=20"]
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {line}\n" for line in lines))
    return summary


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """naive/replay x seeds 0,1 (replay a little better), and one job that failed."""
    root = tmp_path / "multirun" / "2026-11-22" / "12-00-00-000000"
    for num, (strategy, seed) in enumerate(product(("naive", "replay"), (0, 1))):
        write_run(root / f"{num}_seed={seed},strategy={strategy}", strategy, seed,
                  shift=(0.05 if strategy == "replay" else 0.0) + 0.02 * seed)
    failed = root / "4_seed=2,strategy=naive"
    (failed / ".hydra").mkdir(parents=True)
    (failed / JOB_ERROR_FILE).write_text("ValueError: boom\njob: #4 seed=2,strategy=naive\n\nTraceback ...\n")
    return root


def test_report_of_a_sweep_groups_by_strategy_with_mean_and_std(sweep: Path, capsys):
    assert report_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| naive", "| replay"))]
    header = next(line for line in out.splitlines() if line.startswith("| strategy"))
    assert len(rows) == 2 and all(row.count("±") == header.count("|") - 3 for row in rows), out
    assert "grouped by strategy" in out and "1 failed job(s)" in out and "ValueError: boom" in out

    table = pd.read_csv(sweep / "report.csv")
    assert table.strategy.tolist() == ["naive", "replay"] and table.runs.tolist() == [2, 2]
    runs = collect_runs(sweep)
    for metric in ("avg_acc", "avg_incremental_acc", "forgetting", "bwt", "min_acc", "wc_acc", "wf10", "wp10",
                   "sg_depth_mean", "wall_time_s"):
        expected = runs.groupby("strategy")[metric].agg(["mean", "std"])
        assert table[f"{metric}_mean"].tolist() == pytest.approx(expected["mean"].tolist(), nan_ok=True), metric
        assert table[f"{metric}_std"].tolist() == pytest.approx(expected["std"].tolist(), nan_ok=True), metric
    assert table.avg_acc_mean[1] > table.avg_acc_mean[0]  # replay was shifted up

    markdown = (sweep / "report.md").read_text()
    assert markdown.splitlines()[0].startswith("| strategy | runs | final acc | avg incremental acc | forgetting | BWT")
    assert "WF10" in markdown.splitlines()[0] and "SG depth" in markdown.splitlines()[0]
    assert "Shared by every run: `trainer.iterations=20`" in markdown
    assert "`4_seed=2,strategy=naive`: ValueError: boom" in markdown
    for name in SWEEP_PLOT_FILES:
        data = (sweep / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name


def test_report_options_and_a_single_run(sweep: Path, tmp_path: Path, capsys):
    assert report_main([str(sweep), "--by", "strategy", "seed", "--no-write"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| naive", "| replay"))]
    assert len(rows) == 4 and not any("±" in row for row in rows)  # one run per group: no std
    assert not (sweep / "report.md").exists()

    run = next(p for p in sweep.iterdir() if p.name.startswith("0_"))
    assert report_main([str(run), "--no-plots"]) == 0
    assert "| naive | 1 |" in capsys.readouterr().out
    assert (run / "report.csv").exists() and not (run / SWEEP_PLOT_FILES[0]).exists()

    with pytest.raises(SystemExit) as exit_info:
        report_main([str(sweep), "--by", "optimizer.lr"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "missing")])
    only_failed = tmp_path / "only_failed" / "0_seed=0"
    only_failed.mkdir(parents=True)
    (only_failed / JOB_ERROR_FILE).write_text("RuntimeError: nope\n")
    with pytest.raises(SystemExit):
        report_main([str(only_failed.parent)])
    assert "1 failed job(s)" in capsys.readouterr().err


def test_swept_keys_ignore_shared_overrides_and_mark_defaults(tmp_path: Path):
    write_run(tmp_path / "a", "replay", 0, 0.0, ["strategy=replay", "seed=0", "strategy.buffer_size=50"])
    write_run(tmp_path / "b", "replay", 0, 0.0, ["strategy=replay", "seed=0"])
    runs = collect_runs(tmp_path)
    assert swept_keys(runs) == ["strategy.buffer_size"]
    assert report_main([str(tmp_path), "--no-plots"]) == 0
    assert sorted(pd.read_csv(tmp_path / "report.csv")["strategy.buffer_size"].astype(str)) == ["(default)", "50"]


def test_sweep_curves_and_comparison_figures(sweep: Path):
    curves = sweep_curves(sweep)
    assert set(curves.group) == {"naive", "replay"} and curves.run_dir.nunique() == 4
    last = curves.loc[curves.global_iter == curves.global_iter.max()]
    summaries = {str(p.parent): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    for _, row in last.iterrows():  # the curve ends at the final average accuracy and min-ACC
        assert row.acc_seen == pytest.approx(summaries[row.run_dir]["avg_acc"])
        assert row.min_acc == pytest.approx(summaries[row.run_dir]["min_acc"])

    gaps = gap_curves(sweep)
    assert sorted(gaps.boundary_k.unique()) == [1, 2]
    fig = stability_gap_comparison_figure(gaps)
    assert sum(ax.axison for ax in fig.axes) == 2  # one panel per boundary
    assert len(metric_curves_figure(curves, ("min_acc", "wc_acc")).axes) == 2
    with pytest.raises(ValueError, match="unknown metric"):
        metric_curves_figure(curves, ("bogus",))


def test_find_failed_jobs_since(sweep: Path):
    assert [job.message for job in find_failed_jobs(sweep)] == ["ValueError: boom"]
    assert find_failed_jobs(sweep, since=time.time() + 60) == []


def test_resolve_run_path_finds_the_newest_run_or_sweep(tmp_path: Path, sweep: Path):
    older = tmp_path / "runs" / "2026-11-21" / "09-00-00_split_mnist1d_naive"
    newer = tmp_path / "runs" / "2026-11-22" / "09-00-00_split_mnist1d_replay"
    write_run(older, "naive", 0, 0.0)
    write_run(newer, "replay", 0, 0.0)
    os.utime(older / "summary.json", (1, 1))
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    assert resolve_run_path(None, "run", start=notebooks) == newer  # found from a subdirectory
    assert resolve_run_path(None, "sweep", start=notebooks) == sweep
    assert resolve_run_path(str(older)) == older
    with pytest.raises(FileNotFoundError):
        resolve_run_path(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no finished sweep"):
        resolve_run_path(None, "sweep", start=older.parent.parent.parent.parent / "elsewhere")


def test_report_groups_by_any_config_key_and_not_by_how_runs_were_launched(tmp_path: Path, capsys):
    """--by reads settings nobody overrode from config.yaml; two sweeps launched differently
    (basic vs joblib) report as one comparison, and the settings all runs share are recorded."""
    for num, (lr, launcher) in enumerate([(0.01, "basic"), (0.01, "joblib"), (0.003, "basic"), (0.003, "joblib")]):
        job = tmp_path / f"sweep_{launcher}" / f"{num}"
        write_run(job, "replay", num, 0.0, ["strategy=replay", f"seed={num}", f"launcher={launcher}", "plots=false"])
        (job / "config.yaml").write_text(f"optimizer:\n  lr: {lr}\nbackbone:\n  hidden_size: 16\n")
    runs = collect_runs(tmp_path)
    assert swept_keys(runs) == ["strategy"]  # launcher and plots say nothing about results
    assert report_main([str(tmp_path), "--by", "optimizer.lr", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "| 0.003 | 2 |" in out and "| 0.01 | 2 |" in out
    assert "Shared by every run: `strategy=replay`" in out and "launcher" not in out.split("Shared by")[1]
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path), "--by", "optimizer.momentum"])
    assert exit_info.value.code == 2
    assert "optimizer.momentum" in capsys.readouterr().err
