"""The Strategy hook contract, plugin composition, and the foundation strategies."""

from __future__ import annotations

import pytest
import torch

from clplat.backbones import GRUBackbone
from clplat.errors import ConfigError
from clplat.heads import SingleHead
from clplat.module import ContinualModule
from clplat.stream import Experience, Scenario, SequenceData, Stream
from clplat.strategy import ComposedStrategy, Plugin, Strategy, compose
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


def wire(strategy: Strategy, stream: Stream) -> ContinualModule:
    module = ContinualModule(GRUBackbone(2, 8), SingleHead(8, stream.num_classes), strategy,
                             lambda p: torch.optim.SGD(p, lr=0.1))
    strategy.setup(module, stream)
    return module


class Recorder(Plugin):
    def __init__(self, name: str, log: list, bonus: float = 0.0):
        super().__init__()
        self.name, self.log, self.bonus = name, log, bonus

    def before_experience(self, experience):
        super().before_experience(experience)
        self.log.append((self.name, "before", experience.index))

    def adjust_loss(self, batch, loss):
        self.log.append((self.name, "loss"))
        return loss + self.bonus

    def after_optimizer_step(self, batch):
        self.log.append((self.name, "step"))

    def after_experience(self, experience):
        self.log.append((self.name, "after", experience.index))

    def state_dict(self):
        return {"bonus": self.bonus}

    def load_state_dict(self, state):
        self.bonus = state["bonus"]


class RecordingBase(Naive):
    def __init__(self, log: list):
        super().__init__()
        self.log = log

    def before_experience(self, experience):
        super().before_experience(experience)
        self.log.append(("base", "before", experience.index))

    def after_optimizer_step(self, batch):
        self.log.append(("base", "step"))

    def after_experience(self, experience):
        self.log.append(("base", "after", experience.index))


def test_hooks_run_base_first_then_plugins_in_order():
    log: list = []
    stream = toy_stream()
    strategy = compose(RecordingBase(log), [Recorder("a", log, 1.0), Recorder("b", log, 10.0)])
    assert isinstance(strategy, ComposedStrategy) and strategy.name == "naive+a+b"
    module = wire(strategy, stream)
    exp = stream[0]
    strategy.before_experience(exp)
    batch = (exp.train.x, exp.train.y, exp.train.task)
    base_loss = strategy.base.training_step(batch)
    loss = strategy.training_step(batch)
    torch.testing.assert_close(loss, base_loss + 11.0)  # both plugins adjusted the base loss
    strategy.after_optimizer_step(batch)
    strategy.after_experience(exp)
    assert log == [("base", "before", 0), ("a", "before", 0), ("b", "before", 0),
                   ("a", "loss"), ("b", "loss"),
                   ("base", "step"), ("a", "step"), ("b", "step"),
                   ("base", "after", 0), ("a", "after", 0), ("b", "after", 0)]
    state = strategy.state_dict()
    strategy.plugins[0].bonus = 0.0
    strategy.load_state_dict(state)
    assert strategy.plugins[0].bonus == 1.0
    assert module.strategy is strategy


def test_compose_refuses_a_plugin_as_base_and_non_plugins():
    with pytest.raises(ConfigError, match="is a plugin"):
        compose(Recorder("p", []), [])
    with pytest.raises(ConfigError, match="plugin"):
        compose(Naive(), [Naive()])
    assert isinstance(compose(Naive(), []), Naive)


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
    with pytest.raises(ConfigError, match="strategy.buffer_size"):
        Replay(buffer_size=-1)
