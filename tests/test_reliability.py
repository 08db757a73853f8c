"""Reliability: failing loggers degrade to one warning; every user-fixable failure says what and where.

The error cases of docs/reliability.md that are not tested elsewhere live here (the table there
names the test of each case); the others are in test_cli.py, test_resume.py and test_experiment.py.
"""

from __future__ import annotations

import json
import signal
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import OmegaConf

from clplat.checkpointing import load_checkpoint
from clplat.errors import ConfigError, RunInterrupted, TrainingDiverged
from clplat.experiment import run_experiment
from clplat.logger_guard import GuardedLogger, LoggerFailedWarning
from clplat.cli import failure_message as _failure


def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def run_collecting_warnings(cfg) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_experiment(cfg)
    return [w for w in caught if issubclass(w.category, LoggerFailedWarning)]


def assert_complete(run_dir: Path) -> None:
    for name in ("metrics.csv", "summary.json", "accuracy_matrix.csv", "config.yaml", "forgetting_curves.png"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "summary.json").read_text())["global_iters"] == 30


def test_a_full_disk_under_the_csv_logger_warns_once_and_the_run_completes(make_cfg, monkeypatch):
    monkeypatch.setattr(CSVLogger, "log_metrics", disk_full)
    monkeypatch.setattr(CSVLogger, "save", disk_full)
    monkeypatch.setattr(CSVLogger, "finalize", disk_full)
    cfg = make_cfg("strategy=naive", "logger=csv")
    failures = run_collecting_warnings(cfg)
    assert len(failures) == 1, [str(w.message) for w in failures]  # once per logger, not per step
    assert "No space left on device" in str(failures[0].message)
    assert_complete(Path(cfg.run_dir))


def test_wandb_raising_on_every_call_warns_once_and_the_run_completes(make_cfg, monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    for method in ("log_metrics", "log_table", "log_image", "finalize"):
        monkeypatch.setattr(WandbLogger, method, unreachable)
    cfg = make_cfg("strategy=naive", "logger=wandb")  # WANDB_MODE=disabled (conftest): no network
    failures = run_collecting_warnings(cfg)
    assert len(failures) == 1 and "unreachable" in str(failures[0].message)
    assert_complete(Path(cfg.run_dir))


def test_a_logger_that_cannot_start_is_dropped_with_a_warning(make_cfg, monkeypatch):
    import clplat.logging

    def init_fails(*args, **kwargs):
        raise ConnectionError("wandb.init timed out")

    monkeypatch.setattr(clplat.logging, "WandbLogger", init_fails)
    cfg = make_cfg("strategy=naive", "logger=wandb")
    failures = run_collecting_warnings(cfg)
    assert len(failures) == 1 and "could not start" in str(failures[0].message)
    assert_complete(Path(cfg.run_dir))


def test_guarded_logger_counts_every_failure_and_delegates_successes():
    class Flaky(CSVLogger):
        calls = 0

        def log_metrics(self, metrics, step=None):
            Flaky.calls += 1
            if Flaky.calls % 2:
                raise OSError("transient")

    logger = GuardedLogger(Flaky(save_dir="/nonexistent-never-written"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(4):
            logger.log_metrics({"a": 1.0}, step)
    assert Flaky.calls == 4 and logger.failures == 2  # calls keep being attempted
    assert len([w for w in caught if issubclass(w.category, LoggerFailedWarning)]) == 1
    assert logger.name == "lightning_logs"


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_nonfinite_loss_stops_keeps_what_was_written_and_says_where(make_cfg, monkeypatch, poison):
    from clplat.strategies.naive import Naive

    honest = Naive.training_step

    def poisoned(self, batch):  # the 16th step (experience 2) diverges
        loss = honest(self, batch)
        return loss * poison if self.module.trainer.global_step == 15 else loss

    monkeypatch.setattr(Naive, "training_step", poisoned)
    cfg = make_cfg("strategy=naive")
    with pytest.raises(TrainingDiverged, match=rf"became {poison} at iteration 16 \(experience 2\)") as err:
        run_experiment(cfg)
    run_dir = Path(cfg.run_dir)
    message, code = _failure(err.value, cfg)
    assert code == 1 and str(run_dir) in message and "\n" not in message
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["exp_0.ckpt", "exp_1.ckpt"]
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[-1].startswith("14,2,")  # the last evaluation before the divergence is kept
    assert not (run_dir / "summary.json").exists()


def test_exit_codes_tell_usage_errors_from_failures_and_signals(tmp_path):
    cfg = OmegaConf.create({"run_dir": str(tmp_path), "resume": None})
    assert _failure(ConfigError("eval.subset_size", 0, "must be an integer >= 1"), cfg)[1] == 2
    assert _failure(TrainingDiverged(float("nan"), 3, 0), cfg)[1] == 1
    message, code = _failure(RunInterrupted(signal.SIGTERM), cfg)
    assert code == 128 + signal.SIGTERM and f"resume={tmp_path}" in message
    assert _failure(RuntimeError("boom\nmore"), cfg) == ("RuntimeError: boom", 1)


def test_a_checkpoint_from_another_number_of_processes_is_refused(tmp_path):
    path = tmp_path / "exp_0.ckpt"
    torch.save({"state_dict": {}, "clplat": {"config_hash": "abc", "world_size": 2, "experience": 0}}, path)
    with pytest.raises(ConfigError, match="written by a run on 2 processes, this one has 1"):
        load_checkpoint(path, "abc", world_size=1)
    assert load_checkpoint(path, "abc", world_size=2)["clplat"]["world_size"] == 2


def test_a_non_clplat_checkpoint_is_refused(tmp_path):
    path = tmp_path / "exp_0.ckpt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ConfigError, match="is not a clplat boundary checkpoint"):
        load_checkpoint(path, "abc")
