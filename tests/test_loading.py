"""A run's models load back for analysis: clplat.load_run, Lightning's load_from_checkpoint, torch.load."""

from __future__ import annotations

import signal

import pytest
import torch
from omegaconf import open_dict

import clplat
from clplat.errors import RunInterrupted
from clplat.experiment import build_stream, run_experiment
from clplat.module import ContinualModule
from tests.conftest import TINY, compose_config
from tests.helpers import comparable, interrupt_at


@pytest.mark.parametrize("strategy", [["strategy=replay"], ["strategy=hypernet", "strategy.chunk_size=2000"]])
def test_a_loaded_model_scores_what_the_run_recorded(tmp_path, strategy):
    cfg = compose_config([*TINY, *strategy, "plots=false"], tmp_path / "run")
    run_experiment(cfg)
    run = clplat.load_run(tmp_path / "run")
    table, summary, config = run  # the tuple form notebooks use
    assert summary["strategy"] == strategy[0].split("=")[1] and config["seed"] == 0
    assert sorted(run.checkpoints()) == [0, 1, 2, 3, 4]
    stream = build_stream(cfg)
    for k in (1, 4):
        model = run.model(k)
        assert isinstance(model, ContinualModule) and not model.training
        ckpt = torch.load(run.checkpoints()[k])  # torch's default weights_only=True
        subsets = next(v for key, v in ckpt["callbacks"].items() if "ContinualEvaluator" in key)["subset_indices"]
        recorded = table.loc[table["boundary"] & (table["experience"] == k)].sort_values("eval_task")
        with torch.inference_mode():
            for exp, row in zip(stream.experiences[: k + 1], recorded.itertuples()):
                index = torch.tensor(subsets[exp.index])
                logits = model.strategy.predict(exp.test.x[index], exp.test.task[index])
                assert int((logits.argmax(1) == exp.test.y[index]).sum()) == row.correct
    same = ContinualModule.load_from_checkpoint(run.checkpoints()[4])
    for a, b in zip(same.state_dict().values(), run.model().state_dict().values()):
        torch.testing.assert_close(a, b)


def test_missing_checkpoints_and_experiences_are_named(tmp_path):
    run_experiment(compose_config([*TINY, "strategy=naive", "plots=false", "trainer.checkpoint=false"], tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="trainer.checkpoint=false"):
        clplat.load_run(tmp_path / "a").model()
    run_experiment(compose_config([*TINY, "strategy=naive", "plots=false"], tmp_path / "b"))
    with pytest.raises(KeyError, match=r"available: \[0, 1, 2, 3, 4\]"):
        clplat.load_run(tmp_path / "b").model(7)


def test_runs_saved_with_the_old_top_level_targets_still_resume_and_load(tmp_path, monkeypatch):
    """Runs made before ``strategies/`` and ``streams/`` moved into the package saved
    ``_target_: strategies.replay.Replay`` (config.yaml and every checkpoint): they still resume,
    load and compute what a run with today's names computes, with today's classes."""
    reference = compose_config([*TINY, "strategy=replay", "plots=false"], tmp_path / "new")
    run_experiment(reference)
    old = compose_config([*TINY, "strategy=replay", "plots=false"], tmp_path / "old")
    with open_dict(old):  # exactly the config of such a run: old module paths at every depth
        old.strategy._target_ = "strategies.replay.Replay"
        old.stream._target_ = "streams.split.split_stream"
        old.stream.source._target_ = "streams.sources.mnist1d"
    interrupt_at(monkeypatch, 14, RunInterrupted(signal.SIGTERM))
    with pytest.raises(RunInterrupted):
        run_experiment(old)
    monkeypatch.undo()
    assert run_experiment(old, resume=True).summary["resumed"] is True  # same config hash as its checkpoints
    saved = (tmp_path / "old" / "config.yaml").read_text()
    assert "_target_: strategies.replay.Replay" in saved and "_target_: streams.sources.mnist1d" in saved
    (old_metrics, old_summary), (new_metrics, new_summary) = comparable(tmp_path / "old"), comparable(tmp_path / "new")
    assert old_summary.pop("config_hash") != new_summary.pop("config_hash")  # the hash of the config as written
    assert (old_metrics, old_summary) == (new_metrics, new_summary)
    model = clplat.load_run(tmp_path / "old").model()
    assert type(model.strategy).__module__ == "clplat.strategies.replay"  # not a stale top-level `strategies`
    for a, b in zip(model.state_dict().values(), clplat.load_run(tmp_path / "new").model().state_dict().values()):
        torch.testing.assert_close(a, b)
