"""W&B offline runs hold what the run directory holds; run identity in sweeps; console progress.

The W&B tests run tiny experiments with ``logger=wandb`` in offline mode (no network, files in
the run directory) and read the offline runs back with ``clplat.wandb_records`` (the record
files ``wandb sync`` uploads).
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import open_dict

from clplat.errors import ConfigError
from clplat.experiment import run_experiment
from clplat.logging import swept_overrides, thin_evaluations, wandb_run_metadata
from clplat.progress import StreamProgress, resolve_mode
from clplat.wandb_records import history_rows, read_records
from tests.conftest import CONF_DIR

def read_finished_run(path: Path, timeout: float = 30.0) -> list[Any]:
    """The records once the file holds the run's ``exit`` record: ``wandb.finish`` returns when
    the run is closed, but wandb-core may still be flushing the offline file for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(read_records(path)) if path.stat().st_size > 7 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _history(records: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(history_rows(records))


def test_offline_wandb_run_holds_the_per_task_history_tables_and_plots(make_cfg, monkeypatch, tmp_path,
                                                                        capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("logger=csv_wandb", "trainer.iterations=3", "trainer.checkpoint=false", "+progress=bar")
    summary = run_experiment(cfg).summary
    run_dir = Path(cfg.run_dir)

    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, "exactly one offline run, under the run directory"
    records = read_finished_run(next(offline[0].glob("run-*.wandb")))
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history", "summary", "exit"} <= kinds
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert {"strategy:replay", "stream:split_mnist1d", "backbone:gru"} <= set(run.tags)
    exit_record = next(r.exit for r in records if r.WhichOneof("record_type") == "exit")
    assert exit_record.exit_code == 0

    # the per-task accuracy history, at cl/global_iter, equals the run's own results table
    history = _history(records)
    table = pd.read_csv(run_dir / "metrics.csv")
    evals = history.dropna(subset=["eval/task_0/acc"])
    for task in range(5):
        key = f"eval/task_{task}/acc"
        expected = table.loc[table.eval_task == task].drop_duplicates("global_iter", keep="last")
        logged = evals.dropna(subset=[key]).drop_duplicates("cl/global_iter", keep="last")
        assert logged["cl/global_iter"].astype(int).tolist() == expected.global_iter.tolist(), key
        assert logged[key].tolist() == pytest.approx(expected.accuracy.tolist()), key
    assert {"cl/experience", "eval/acc_seen"} <= set(history.columns)

    files = offline[0] / "files"
    tables = {p.name.split("_")[0] for p in (files / "media" / "table").glob("*.table.json")}
    assert {"accuracy", "results", "evaluations"} <= tables  # accuracy_matrix_*, results_*, evaluations_*
    images = {re.sub(r"_\d+_[0-9a-f]+\.png$", "", p.name) for p in (files / "media" / "images" / "plots").glob("*.png")}
    assert {"forgetting_curves", "stability_gap", "accuracy_matrix"} <= images
    # a copy, not a link by absolute path (which dangles once the run folder moves for `wandb sync`)
    assert (files / "metrics.csv").is_file() and not (files / "metrics.csv").is_symlink()
    assert (run_dir / "logs" / "csv" / "metrics.csv").is_file()  # CSV and W&B side by side
    assert run.display_name == "split_mnist1d_gru_replay-seed0" or run.display_name.endswith("-seed0")
    results = json.loads(next((files / "media" / "table").glob("results_*.table.json")).read_text())
    row = dict(zip(results["columns"], results["data"][0]))
    assert row["strategy"] == "replay" and row["avg_acc"] == pytest.approx(summary["avg_acc"])
    summary_keys = {item.key or "/".join(item.nested_key)
                    for r in records if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
    assert {"avg_acc", "forgetting", "min_acc", "wc_acc"} <= summary_keys

    # the progress bar: one per experience, with the current average accuracy; W&B's own output
    # gives way to one line naming the run and its folder
    captured = capsys.readouterr()
    assert "exp 1/5" in captured.err and "exp 5/5" in captured.err and "acc_seen=" in captured.err
    assert captured.out.count("W&B run ") == 1 and "wandb:" not in captured.out + captured.err


def test_sweep_runs_share_a_group_and_are_typed_by_their_swept_setting(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    sweep = tmp_path / "multirun" / "2026-11-22" / "10-00-00-000000"
    sweep.mkdir(parents=True)
    OmegaConf.save({"hydra": {"overrides": {"task": ["strategy=naive,replay", "seed=0,1", "trainer.iterations=3"]}}},
                   sweep / "multirun.yaml")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=["strategy=naive", "seed=1", "trainer.iterations=3"],
                          return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
            cfg.hydra.sweep.dir = str(sweep)
            cfg.hydra.job.num = 3
        HydraConfig.instance().set_config(cfg)
        meta = wandb_run_metadata({}, "split_mnist1d_gru_naive", None, ["mine"])
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    assert meta["group"] == "2026-11-22/10-00-00-000000"
    assert meta["job_type"] == "strategy=naive"  # the seed is what W&B averages over
    assert meta["name"] == "split_mnist1d_gru_naive#3"
    assert meta["tags"] == ["mine", "strategy:naive", "stream:split_mnist1d", "backbone:gru"]
    assert swept_overrides(tmp_path, ["strategy=naive"]) == []  # no multirun.yaml: no setting


def test_single_run_metadata_outside_hydra():
    config = {"strategy": {"_target_": "clplat.strategies.replay.Replay"}, "stream": {"name": "permuted_mnist1d"},
              "backbone": {"_target_": "clplat.backbones.rnn.LSTMBackbone"}}
    meta = wandb_run_metadata(config, "run", "my-group", [])
    assert meta == {"name": "run", "group": "my-group", "job_type": "train",
                    "tags": ["strategy:replay", "stream:permuted_mnist1d", "backbone:lstm"]}


def test_thin_evaluations_keeps_boundaries_under_the_row_limit():
    rows = [dict(global_iter=i, experience=i // 100, eval_task=t, correct=1, n=2, loss=0.1, accuracy=0.5,
                 boundary=(i % 100 == 99), initial=(i == 0)) for i in range(500) for t in range(4)]
    table = pd.DataFrame(rows)
    thin = thin_evaluations(table, 400)
    assert len(thin) <= 400
    assert set(table.loc[table.boundary, "global_iter"]) <= set(thin.global_iter)
    assert thin_evaluations(table, 10_000) is table


# -- console progress ---------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_mode_resolution():
    assert resolve_mode("auto", multirun=True, stream=_Tty()) == "quiet"
    assert resolve_mode("auto", multirun=False, stream=_Tty()) == "bar"
    assert resolve_mode("auto", multirun=False, stream=_Tty(), lightning_bar=True) == "lines"
    assert resolve_mode(None, multirun=False, stream=io.StringIO()) == "lines"
    assert resolve_mode("lines", multirun=True) == "lines"
    with pytest.raises(ConfigError, match="progress='loud'"):
        resolve_mode("loud", multirun=False)


def test_quiet_progress_prints_one_line_per_run():
    out = io.StringIO()
    progress = StreamProgress(evaluator=None, num_experiences=3, mode="quiet", out=out)
    progress.info("stream description")
    progress.experience_done(0, 10, [0.5])
    progress.run_done("runs/x", {"avg_acc": 0.5, "wall_time_s": 1.25})
    assert out.getvalue() == "clplat: done runs/x: avg_acc=0.500 in 1.2s\n"
    lines = StreamProgress(evaluator=None, num_experiences=3, mode="lines", out=(buffer := io.StringIO()))
    lines.experience_done(1, 20, [0.5, 0.7])
    lines.run_done("runs/x", {"avg_acc": 0.5})
    assert buffer.getvalue() == "clplat: experience 2/3 done at iteration 20: mean accuracy on seen tasks 0.600\n"


def test_a_resumed_run_keeps_its_wandb_identity(make_cfg, monkeypatch):
    """A sweep job resumed by hand (outside its sweep) continues the same W&B run under the first
    attempt's name, group and job type."""
    import signal

    from tests.helpers import interrupt_offline_run

    cfg = make_cfg("logger=wandb", "logger.wandb.tags=[first]")
    interrupt_offline_run(monkeypatch, cfg, 14, signal.SIGINT)
    run_dir = Path(cfg.run_dir)
    identity = run_dir / "wandb" / "clplat_run.json"
    first = json.loads(identity.read_text())
    assert first["name"] == "run0-seed0" and "first" in first["tags"]
    # as if the first attempt had run in a sweep: its group and job type are not this process's
    identity.write_text(json.dumps({**first, "group": "2026-12-06/07-00-00", "job_type": "strategy=replay"}))
    run_experiment(cfg, resume=True)
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and len({p.name.split("-")[3] for p in attempts}) == 1  # one run id
    second = max(attempts, key=lambda p: (p.name.split("-")[2], len(p.name)))  # -1: the same second
    records = read_finished_run(next(second.glob("run-*.wandb")))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.job_type, run.display_name) == ("2026-12-06/07-00-00", "strategy=replay", "run0-seed0")


def test_a_run_killed_by_sigkill_resumes_into_the_same_wandb_history_from_step_0(tmp_path):
    """SIGKILL leaves the W&B record file with what wandb-core had flushed (often nothing); the
    resumed run logs the missing rows again, so the run's history holds every evaluation and
    training loss exactly once, from step 0."""
    from clplat.logging import previous_wandb_run_id
    from clplat.wandb_records import run_files
    from tests.conftest import TINY
    from tests.helpers import cli_env, kill_then_resume

    env = {**cli_env(), "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    env.pop("WANDB_SERVICE", None)  # each process starts its own wandb-core, which dies with it
    run_dir = tmp_path / "run"
    kill_then_resume([*TINY, "trainer.iterations=40", "eval.every_n_iters=10", "logger=csv_wandb",
                      "trainer.log_every_n_steps=5"], run_dir, env)

    run_id = previous_wandb_run_id(run_dir)
    attempts = run_files(run_dir, run_id)
    assert len(attempts) == 2
    read_finished_run(attempts[-1])
    history = _history([r for path in attempts for r in read_records(path)])
    table = pd.read_csv(run_dir / "metrics.csv")
    expected = table.loc[table.eval_task == 0].global_iter.tolist()  # one row per evaluation
    logged = history.dropna(subset=["eval/acc_seen"])["cl/global_iter"].astype(int)
    assert sorted(logged.tolist()) == sorted(expected) and expected[0] == 0
    losses = history.dropna(subset=["train/loss"])["cl/global_iter"].astype(int)
    steps = pd.read_csv(run_dir / "logs" / "csv" / "metrics.csv").dropna(subset=["train/loss"])["cl/global_iter"]
    assert sorted(losses.tolist()) == sorted(steps.astype(int).tolist()) and min(losses) == 5


# -- the logger group ------------------------------------------------------------------------------

_OLD_WANDB = {"project": "clplat", "entity": None, "group": None, "tags": [], "mode": "auto"}
OLD_FORM = {"csv": {"kind": "csv"}, "wandb": {"kind": "wandb", **_OLD_WANDB},
            "csv_wandb": {"kind": ["csv", "wandb"], **_OLD_WANDB}, "none": {"kind": "none"}}
"""``logger`` as runs saved it before loggers were ``_target_`` configs, for each option."""


@pytest.mark.parametrize("option", sorted(OLD_FORM))
def test_the_old_logger_kind_reads_as_the_option_it_named(option):
    from omegaconf import OmegaConf

    from clplat.logger_config import logger_entries
    from tests.conftest import compose_config

    entries = logger_entries(OmegaConf.create(OLD_FORM[option]))
    assert {k: OmegaConf.to_container(v) for k, v in entries.items()} == \
        OmegaConf.to_container(compose_config([f"logger={option}"]).logger)
    mine = logger_entries(OmegaConf.create({"kind": "wandb", "project": "p", "tags": ["a"], "mode": "offline"}))
    assert OmegaConf.to_container(mine["wandb"]) == {"_target_": "clplat.logging.wandb_logger", "project": "p",
                                                     "entity": None, "group": None, "tags": ["a"], "mode": "offline"}


@pytest.mark.parametrize("old, expected", [
    ({"kind": "tensorboard"}, "logger.kind='tensorboard' is not valid: allowed values are csv, wandb, none"),
    ({"kind": ["csv", "csv"]}, "logger.kind=['csv', 'csv'] is not valid: names a logger twice"),
    ({"kind": ["none", "wandb"]}, "none with other loggers"),
])
def test_a_bad_old_logger_kind_is_one_line(old, expected):
    from omegaconf import OmegaConf

    from clplat.logger_config import logger_entries

    with pytest.raises(ConfigError) as err:
        logger_entries(OmegaConf.create(old))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_any_lightning_logger_is_added_by_config_and_gets_the_run_directory(make_cfg):
    """``+logger.<name>._target_=<class>``: no code names the logger; clplat passes ``save_dir``."""
    cfg = make_cfg("strategy=naive", "logger=csv", "+logger.tb._target_=lightning.pytorch.loggers.TensorBoardLogger",
                   "+logger.tb.name=tb", "trainer.log_every_n_steps=1")
    run_experiment(cfg)
    run_dir = Path(cfg.run_dir)
    assert list((run_dir / "tb" / "version_0").glob("events.out.tfevents.*"))
    assert (run_dir / "logs" / "csv" / "metrics.csv").is_file()


def test_a_logger_argument_the_class_does_not_take_is_one_line(make_cfg):
    cfg = make_cfg("strategy=naive", "logger=csv", "+logger.csv.colour=red")
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg)
    assert str(err.value).startswith("logger.csv=") and "could not be built" in str(err.value)
    assert "\n" not in str(err.value)
