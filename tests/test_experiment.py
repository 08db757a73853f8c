"""Tiny real runs, in process: the run directory, the evaluation rows, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clplat.errors import ConfigError
from clplat.experiment import run_experiment

RUN_FILES = ["metrics.csv", "accuracy_matrix.csv", "summary.json", "config.yaml",
             "forgetting_curves.png", "stability_gap.png", "accuracy_matrix.png"]


def test_default_pipeline_writes_a_complete_run_directory(make_cfg, capsys):
    cfg = make_cfg("print_summary=true", "logger=csv", "trainer.log_every_n_steps=4")
    result = run_experiment(cfg)
    run_dir = Path(cfg.run_dir)
    for name in RUN_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"exp_{k}.ckpt" for k in range(5)]
    logged = pd.read_csv(run_dir / "logs" / "csv" / "metrics.csv")
    # the training loss every 4 steps, at the step count it completes (the evaluations' x-axis)
    assert logged.dropna(subset=["train/loss"])["step"].tolist() == list(range(4, 31, 4))

    table = pd.read_csv(run_dir / "metrics.csv")
    # 6 iterations per experience, evaluated every 2: iterations 0, 2, 4, ..., 30
    assert sorted(set(table.global_iter)) == list(range(0, 31, 2))
    assert set(table.eval_task) == set(range(5))
    for k in range(5):  # every experience was evaluated at several iterations while it trained
        assert table[table.experience == k].global_iter.nunique() >= 3
    assert (table.eval_task <= table.experience).all()  # seen tasks only by default
    assert table.boundary.sum() == sum(range(1, 6))

    R = np.loadtxt(run_dir / "accuracy_matrix.csv", delimiter=",", skiprows=1)
    assert R.shape == (5, 5)
    assert np.isnan(R[np.triu_indices(5, 1)]).all() and not np.isnan(R[np.tril_indices(5)]).any()

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == result.summary
    for key in ("avg_acc", "forgetting", "bwt", "min_acc", "wc_acc", "wf10", "sg_depth_mean", "wall_time_s",
                "config_hash", "versions", "strategy_state"):
        assert key in summary, key
    assert summary["avg_acc"] == pytest.approx(np.nanmean(R[-1]), abs=1e-6)
    assert summary["global_iters"] == 30 and summary["strategy"] == "replay"
    out = capsys.readouterr().out
    assert "accuracy after each experience" in out and "avg_acc=" in out


def test_same_seed_same_results(make_cfg):
    a, b = make_cfg("trainer.checkpoint=false"), make_cfg("trainer.checkpoint=false")
    run_experiment(a)
    run_experiment(b)
    assert (Path(a.run_dir) / "metrics.csv").read_text() == (Path(b.run_dir) / "metrics.csv").read_text()


@pytest.mark.parametrize("overrides", [
    ["strategy=naive"],
    ["strategy=joint"],
    ["strategy=cumulative", "backbone=lstm", "backbone.num_layers=2", "backbone.pooling=mean"],
    ["strategy=replay", "strategy.policy=class_balanced", "optimizer=sgd"],
    ["stream=split_mnist1d_til", "eval.tasks=all"],
    ["stream=permuted_mnist1d", "stream.n_experiences=3", "eval=boundary", "head.mask_unseen=true"],
])
def test_every_foundation_option_runs(make_cfg, overrides):
    cfg = make_cfg("trainer.checkpoint=false", *overrides)
    summary = run_experiment(cfg).summary
    table = pd.read_csv(Path(cfg.run_dir) / "metrics.csv")
    assert 0.0 <= summary["avg_acc"] <= 1.0
    if "eval.tasks=all" in overrides:
        assert not np.isnan(summary["fwt"])
        assert (table[table.initial].eval_task.tolist()) == list(range(5))
    if "strategy=joint" in overrides:
        # joint trains once (all data, budget x experiences) and only evaluates afterwards
        assert summary["global_iters"] == 30
        assert table[table.experience > 0].global_iter.unique().tolist() == [30]


def test_an_existing_run_directory_is_never_overwritten(make_cfg):
    cfg = make_cfg("trainer.checkpoint=false")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("precious")
    with pytest.raises(ConfigError, match="already holds results"):
        run_experiment(cfg)
    assert (run_dir / "metrics.csv").read_text() == "precious"


def test_wandb_offline_run_keeps_the_accuracy_history(make_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("logger=wandb", "trainer.checkpoint=false")
    run_experiment(cfg)
    runs = list((Path(cfg.run_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = list(runs[0].glob("*.wandb"))
    assert records and records[0].stat().st_size > 0
    blob = records[0].read_bytes()
    assert b"eval/task_0/acc" in blob and b"cl/global_iter" in blob


def test_plots_false_writes_every_result_but_the_pngs(make_cfg):
    cfg = make_cfg("plots=false", "trainer.checkpoint=false")
    run_experiment(cfg)
    run_dir = Path(cfg.run_dir)
    assert {p.name for p in run_dir.glob("*.png")} == set()
    assert all((run_dir / name).exists() for name in RUN_FILES if not name.endswith(".png"))
