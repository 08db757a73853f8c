"""Interrupted runs resume from their last boundary checkpoint and end exactly as if never stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import open_dict

from clplat.errors import ConfigError, RunInterrupted, TrainingDiverged
from clplat.experiment import run_experiment
from tests.conftest import TINY
from tests.helpers import (assert_resume_matches_uninterrupted, cli_env, comparable, interrupt_at, interrupt_offline_run,
                           kill_then_resume)


@pytest.mark.parametrize("strategy", ["naive", "joint", "cumulative", "replay", "replay_cb"])
def test_resume_equals_an_uninterrupted_run(make_cfg, monkeypatch, strategy):
    overrides = ["strategy=replay", "strategy.policy=class_balanced"] if strategy == "replay_cb" else [f"strategy={strategy}"]
    overrides += ["backbone.dropout=0.2", "backbone.num_layers=2"]  # dropout draws from the global RNG
    # joint trains only in experience 0 (30 steps): stop inside it; others stop inside experience 2
    assert_resume_matches_uninterrupted(make_cfg, monkeypatch, overrides, at=3 if strategy == "joint" else 14)


def test_resume_refuses_finished_foreign_and_corrupt_runs(make_cfg, monkeypatch):
    cfg = make_cfg("strategy=naive")
    run_experiment(cfg)
    with pytest.raises(ConfigError, match="finished already"):
        run_experiment(cfg, resume=True)

    partial = make_cfg("strategy=naive")
    interrupt_at(monkeypatch, 14, RunInterrupted(signal.SIGINT))
    with pytest.raises(RunInterrupted):
        run_experiment(partial)
    monkeypatch.undo()
    run_dir = Path(partial.run_dir)
    other = partial.copy()
    with open_dict(other):
        other.trainer.iterations = 7
    with pytest.raises(ConfigError, match="another configuration"):
        run_experiment(other, resume=True)
    (run_dir / "checkpoints" / "exp_1.ckpt").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="exp_1.ckpt.*unreadable"):
        run_experiment(partial, resume=True)
    with pytest.raises(ConfigError, match="no config.yaml"):
        run_experiment(make_cfg("strategy=naive"), resume=True)


def test_nonfinite_loss_stops_and_keeps_results(make_cfg, monkeypatch):
    from clplat.strategies.naive import Naive

    cfg = make_cfg("strategy=naive")
    honest = Naive.training_step

    def poisoned(self, batch):  # the strategy's loss turns NaN at the 10th step
        loss = honest(self, batch)
        return loss * float("nan") if self.module.trainer.global_step == 9 else loss

    monkeypatch.setattr(Naive, "training_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"nan at iteration 10 \(experience 1\)"):
        run_experiment(cfg)
    rows = (Path(cfg.run_dir) / "metrics.csv").read_text().splitlines()
    assert len(rows) > 5  # the evaluations before the divergence were kept


def test_sigkill_then_resume_through_the_cli(tmp_path):
    """A run killed with SIGKILL mid-experience resumes from its last checkpoint via the CLI."""
    env = cli_env()
    args = [*TINY, "trainer.iterations=40", "eval.every_n_iters=10"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run([sys.executable, "-m", "clplat.train", *args, f"hydra.run.dir={reference}"],
                   env=env, check=True, capture_output=True, timeout=600)
    resumed = kill_then_resume(args, killed, env)
    assert "resuming after experience" in resumed.stdout
    assert comparable(killed) == comparable(reference)


def test_sigterm_saves_and_says_how_to_resume(tmp_path):
    env = cli_env()
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "clplat.train", *TINY, "trainer.iterations=200",
                             f"hydra.run.dir={run_dir}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "exp_0.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]  # the error's stack if it ever ends otherwise
    assert f"resume={run_dir}" in err.strip().splitlines()[-1]
    assert (run_dir / "metrics.csv").exists() and not (run_dir / "summary.json").exists()
    assert subprocess.run([sys.executable, "-m", "clplat.train", f"resume={run_dir}", "seed=3"], env=env,
                          capture_output=True, timeout=120).returncode == 2


def test_resume_keeps_the_csv_log_and_accumulates_wall_time(make_cfg, monkeypatch):
    """The resumed run's Lightning CSV log equals an uninterrupted run's (Lightning's writer would
    delete it), and wall_time_s includes the interrupted attempt's time up to its checkpoint."""
    import csv
    import json

    import torch

    overrides = ["strategy=naive", "logger=csv", "trainer.log_every_n_steps=1"]

    def log_rows(cfg) -> list[dict[str, str]]:
        with (Path(cfg.run_dir) / "logs" / "csv" / "metrics.csv").open(newline="") as fh:
            return [{k: v for k, v in row.items() if v} for row in csv.DictReader(fh)]

    reference = make_cfg(*overrides)
    run_experiment(reference)
    partial = make_cfg(*overrides)
    interrupt_at(monkeypatch, 14, RunInterrupted(signal.SIGINT))
    with pytest.raises(RunInterrupted):
        run_experiment(partial)
    monkeypatch.undo()
    assert max(int(r["step"]) for r in log_rows(partial)) > 12  # the lost work after exp_1 was logged
    checkpoint = torch.load(Path(partial.run_dir) / "checkpoints" / "exp_1.ckpt", weights_only=True)
    before = checkpoint["clplat"]["wall_time_s"]
    assert before > 0
    run_experiment(partial, resume=True)
    assert log_rows(partial) == log_rows(reference)
    summary = json.loads((Path(partial.run_dir) / "summary.json").read_text())
    assert summary["resumed"] and summary["wall_time_s"] > before


def test_a_run_saved_with_the_old_logger_kind_resumes_and_loads(make_cfg, monkeypatch):
    """Runs made before loggers were ``_target_`` configs saved ``logger: {kind: [csv, wandb],
    <W&B options>}`` in config.yaml and hashed it into their checkpoints: they resume with the
    loggers that form named, compute what a run of today's form computes, and load."""
    import csv

    import clplat
    from omegaconf import OmegaConf

    monkeypatch.setenv("WANDB_MODE", "offline")
    reference = make_cfg("strategy=naive", "logger=csv_wandb", "trainer.log_every_n_steps=1")
    run_experiment(reference)
    old = make_cfg("strategy=naive", "trainer.log_every_n_steps=1")
    with open_dict(old):
        old.logger = {"kind": ["csv", "wandb"], "project": "clplat", "entity": None, "group": None,
                      "tags": ["old"], "mode": "auto"}
    interrupt_offline_run(monkeypatch, old, 14, signal.SIGTERM)
    run_dir = Path(old.run_dir)
    saved = OmegaConf.load(run_dir / "config.yaml")  # what clplat-train resume=<run dir> continues with
    assert saved.logger.kind == ["csv", "wandb"]
    with open_dict(saved):
        saved.run_dir = saved.resume = str(run_dir)
    assert run_experiment(saved, resume=True).summary["resumed"] is True
    assert "kind:" in (run_dir / "config.yaml").read_text()  # the saved config is never rewritten
    attempts = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and len({p.name.split("-")[3] for p in attempts}) == 1  # one W&B run, continued

    def log_rows(path: Path) -> list[dict[str, str]]:
        with (path / "logs" / "csv" / "metrics.csv").open(newline="") as fh:
            return [{k: v for k, v in row.items() if v} for row in csv.DictReader(fh)]

    assert log_rows(run_dir) == log_rows(Path(reference.run_dir))
    (old_metrics, old_summary), (new_metrics, new_summary) = comparable(run_dir), comparable(Path(reference.run_dir))
    assert old_summary.pop("config_hash") != new_summary.pop("config_hash")  # the hash of the config as written
    assert (old_metrics, old_summary) == (new_metrics, new_summary)
    assert clplat.load_run(run_dir).model() is not None
