"""The Strategy hook contract and the foundation strategies (the dispatcher: tests/test_hooks.py)."""

from __future__ import annotations

import pytest
import torch

from clplat.backbones import GRUBackbone
from clplat.errors import ConfigError
from clplat.heads import SingleHead
from clplat.hooks import Hooks
from clplat.module import ContinualModule
from clplat.stream import Experience, Scenario, SequenceData, Stream
from clplat.strategy import Strategy
from clplat.strategies.cumulative import Cumulative
from clplat.strategies.joint import Joint
from clplat.strategies.naive import Naive
from clplat.strategies.replay import Replay


def toy_stream(n_exp: int = 3, per_exp: int = 8) -> Stream:
    exps = []
    for k in range(n_exp):
        y = torch.tensor([2 * k, 2 * k + 1] * (per_exp // 2))
        data = SequenceData.with_task(torch.randn(per_exp, 5, 2), y, k)
        exps.append(Experience(k, k, data, data, (2 * k, 2 * k + 1), f"exp{k}"))
    return Stream("toy", Scenario.CLASS_INCREMENTAL, tuple(exps), num_classes=2 * n_exp, input_shape=(5, 2))


def wire(strategy: Strategy | Hooks, stream: Stream) -> ContinualModule:
    """A small module on ``stream`` driven by ``strategy`` (a bare strategy gets a dispatcher of
    its own, as a run without plugins), set up; its hooks are ``module.hooks``."""
    hooks = strategy if isinstance(strategy, Hooks) else Hooks(strategy)
    module = ContinualModule(GRUBackbone(2, 8), SingleHead(8, stream.num_classes), hooks,
                             lambda p: torch.optim.SGD(p, lr=0.1))
    hooks.setup(module, stream)
    return module


def test_strategy_refuses_unsupported_scenarios():
    class ClassILOnly(Naive):
        supported_scenarios = (Scenario.CLASS_INCREMENTAL,)

    stream = toy_stream()
    domain = Stream("d", Scenario.DOMAIN_INCREMENTAL, stream.experiences, stream.num_classes, stream.input_shape)
    with pytest.raises(ConfigError, match="does not support domain_incremental"):
        ClassILOnly().check_stream(domain)


def test_joint_and_cumulative_data():
    stream = toy_stream()
    joint = Joint()
    wire(joint, stream)
    assert len(joint.train_data(stream[0])) == 24 and joint.train_data(stream[1]) is None
    assert joint.budget_scale(stream[0]) == 3
    cumulative = Cumulative()
    wire(cumulative, stream)
    assert [len(cumulative.train_data(e)) for e in stream] == [8, 16, 24]
    assert set(cumulative.train_data(stream[1]).y.tolist()) == {0, 1, 2, 3}


def test_replay_mixes_memory_into_the_step_and_stores_after_it():
    stream = toy_stream()
    replay = Replay(buffer_size=6, replay_batch_size=3)
    module = wire(replay, stream)
    exp0, exp1 = stream[0], stream[1]
    batch0 = (exp0.train.x, exp0.train.y, exp0.train.task)
    seen_batch_sizes = []
    module.register_forward_pre_hook(lambda m, args: seen_batch_sizes.append(args[0].shape[0]))
    replay.training_step(batch0)
    assert seen_batch_sizes == [8] and replay.buffer.is_empty  # empty memory: stream batch only
    replay.after_optimizer_step(batch0)
    assert len(replay.buffer) == 6 and set(replay.buffer.y.tolist()) <= {0, 1}
    replay.training_step((exp1.train.x, exp1.train.y, exp1.train.task))
    assert seen_batch_sizes[-1] == 8 + 3
    summary = replay.summary()
    assert summary["buffer_size"] == 6 and summary["buffer_bytes"] == replay.buffer.nbytes()
    with pytest.raises(ConfigError, match="^buffer_size"):
        Replay(buffer_size=-1)
