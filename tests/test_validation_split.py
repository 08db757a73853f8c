"""The validation split: held out of the training data, class-stratified, seeded, scored on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clplat.experiment import build_stream, run_experiment
from clplat.stream import hold_out_validation, stratified_holdout
from tests.conftest import TINY, compose_config
from tests.helpers import preflight_error


def rows(data) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) for x in data.x}


def test_stratified_holdout_takes_the_fraction_of_every_class():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 3 + [3] * 1)
    held = stratified_holdout(y, 0.1, torch.Generator().manual_seed(0))
    # round(0.1 * n) per class, at least one, never the last one: 5, 3, 1 (0.3 -> 1), 0 (a single sample)
    assert [int(held[y == c].sum()) for c in range(4)] == [5, 3, 1, 0]


def test_validation_is_disjoint_stratified_and_the_same_for_every_run_seed(tmp_path):
    plain = build_stream(compose_config(["stream.source.num_samples=1000"]))
    cfg = ["stream.source.num_samples=1000", "validation.fraction=0.2"]
    held = build_stream(compose_config([*cfg, "seed=0"]))
    again = build_stream(compose_config([*cfg, "seed=7"]))  # the run seed does not move the split
    other = build_stream(compose_config([*cfg, "validation.seed=1"]))
    for before, exp, same, moved in zip(plain, held, again, other):
        assert len(exp.train) + len(exp.valid) == len(before.train)
        assert rows(exp.train).isdisjoint(rows(exp.valid))
        assert rows(exp.train) | rows(exp.valid) == rows(before.train)
        assert rows(exp.valid).isdisjoint(rows(exp.test)) and torch.equal(exp.test.x, before.test.x)
        for c in exp.classes:  # stratified: 20 % of every class, rounded
            assert int((exp.valid.y == c).sum()) == round(0.2 * int((before.train.y == c).sum()))
        assert torch.equal(exp.valid.x, same.valid.x) and not torch.equal(exp.valid.x, moved.valid.x)
    assert held.metadata["validation_fraction"] == 0.2


def test_joint_training_never_sees_the_validation_data():
    from clplat.strategies.joint import Joint
    from tests.test_strategies import wire

    stream = build_stream(compose_config(["stream.source.num_samples=500", "validation.fraction=0.25"]))
    strategy = Joint()
    wire(strategy, stream)
    trained = rows(strategy.train_data(stream[0]))  # joint trains everything during experience 0
    assert all(rows(exp.valid).isdisjoint(trained) for exp in stream)


def test_a_run_scores_the_validation_split_when_asked(tmp_path):
    cfg = compose_config([*TINY, "strategy=naive", "plots=false", "validation.fraction=0.2", "eval.split=validation"],
                         tmp_path / "run")
    result = run_experiment(cfg)
    assert result.summary["eval"]["split"] == "validation"
    stream = build_stream(cfg)
    ckpt = torch.load(Path(cfg.run_dir) / "checkpoints" / "exp_4.ckpt", weights_only=False)
    subsets = next(v for k, v in ckpt["callbacks"].items() if "ContinualEvaluator" in k)["subset_indices"]
    # TINY's subset (40) is capped at each experience's validation size: the whole split is scored
    assert [len(s) for s in subsets] == [min(40, len(exp.valid)) for exp in stream]
    assert json.loads((Path(cfg.run_dir) / "summary.json").read_text())["eval"]["split"] == "validation"


def test_hold_out_validation_refuses_a_fraction_outside_0_1():
    stream = build_stream(compose_config(["stream.source.num_samples=300"]))
    with pytest.raises(ValueError, match="fraction"):
        hold_out_validation(stream, 1.0)


@pytest.mark.parametrize("argv, message", [
    (["eval.split=validation"], "eval.split='validation' is not valid: needs held-out training data"),
    (["validation.fraction=1.5"], "validation.fraction=1.5 is not valid: must be in [0, 1)"),
    (["eval.split=train"], "eval.split='train' is not valid"),
])
def test_bad_validation_settings_stop_with_one_line(argv, message, capsys):
    assert message in preflight_error(argv, capsys)
