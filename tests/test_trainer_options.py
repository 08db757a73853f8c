"""Every Lightning Trainer option and any Lightning callback, from the command line
(clplat/trainer_options.py); the options that would change what a run measures are refused."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
import pytest

from clplat.experiment import run_experiment
from tests.helpers import preflight_error


class RecordingCallback(L.Callback):
    """A user's own callback: what it saw of the run."""

    seen: dict = {}

    def __init__(self, label: str = "mine") -> None:
        self.label = label

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        RecordingCallback.seen["steps"] = RecordingCallback.seen.get("steps", 0) + 1
        RecordingCallback.seen["profiler"] = type(trainer.profiler).__name__
        RecordingCallback.seen["anomaly"] = trainer._detect_anomaly
        RecordingCallback.seen["label"] = self.label
        names = [type(c).__name__ for c in trainer.callbacks]
        RecordingCallback.seen["after_clplat"] = names.index("RecordingCallback") > names.index("ContinualEvaluator")


def test_a_users_callback_and_trainer_options_reach_the_trainer(make_cfg):
    RecordingCallback.seen = {}
    cfg = make_cfg(f"+callbacks.mine._target_={__name__}.RecordingCallback", "+callbacks.mine.label=hello",
                   "+trainer.lightning.profiler=simple", "+trainer.lightning.detect_anomaly=true")
    run_experiment(cfg)
    assert RecordingCallback.seen == {"steps": 5 * 6, "profiler": "SimpleProfiler", "anomaly": True, "label": "hello",
                                      "after_clplat": True}


def test_an_object_argument_is_built_from_its_target_config(make_cfg):
    RecordingCallback.seen = {}
    cfg = make_cfg(f"+callbacks.mine._target_={__name__}.RecordingCallback",
                   "+trainer.lightning.profiler._target_=lightning.pytorch.profilers.PassThroughProfiler")
    run_experiment(cfg)
    assert RecordingCallback.seen["profiler"] == "PassThroughProfiler"


def test_the_lr_monitor_callback_logs_the_learning_rate(make_cfg):
    cfg = make_cfg("callbacks=lr_monitor", "logger=csv", "trainer.log_every_n_steps=1")
    run_experiment(cfg)
    log = pd.read_csv(Path(cfg.run_dir) / "logs" / "csv" / "metrics.csv")
    assert log["lr-Adam"].dropna().eq(0.01).all() and log["lr-Adam"].notna().sum() >= 5 * 6


@pytest.mark.parametrize("override, reason", [
    ("+trainer.lightning.max_epochs=3", "clplat sets it from trainer.epochs; set that key instead"),
    ("+trainer.lightning.precision=64", "clplat sets it from trainer.precision"),
    ("+trainer.lightning.max_time=00:01:00:00", "a time limit would end experiences early"),
    ("+trainer.lightning.accumulate_grad_batches=4", "count optimizer steps of one batch each"),
    ("+trainer.lightning.profilr=simple", "not an argument of lightning.Trainer; did you mean trainer.lightning.profiler?"),
    ("+callbacks.mine._target_=collections.OrderedDict", "must build a lightning.pytorch.Callback, not OrderedDict"),
    ("+callbacks.mine=3", "must be a config with a _target_"),
    ("callbacks=nope", "available: lr_monitor, none"),
])
def test_options_that_change_what_a_run_measures_are_refused_in_one_line(override, reason, capsys):
    line = preflight_error([override], capsys)
    assert line.startswith(f"clplat: error: {override.lstrip('+').split('=')[0]}") and reason in line
