"""The dispatcher (``clplat.hooks.Hooks``): how each hook reaches the base strategy and its plugins,
the refusals, the run context it keeps current, and the checkpoint layout."""

from __future__ import annotations

import pytest
import torch

from clplat.context import RunContext
from clplat.errors import ConfigError
from clplat.hooks import Choice, Fold, Hooks, Merge, Notify
from clplat.strategy import Plugin, Strategy
from clplat.strategies.hypernet import Hypernet
from clplat.strategies.naive import Naive
from clplat.strategies.replay import Replay
from tests.test_strategies import toy_stream, wire


class Recorder(Plugin):
    """Logs every hook it receives; adds ``bonus`` to the loss."""

    def __init__(self, name: str, log: list, bonus: float = 0.0):
        super().__init__()
        self.name, self.log, self.bonus = name, log, bonus

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.log.append((self.name, "setup"))

    def before_experience(self, experience):
        self.log.append((self.name, "before", experience.index, self.experience.index))

    def before_training_step(self, batch):
        self.log.append((self.name, "train"))

    def adjust_loss(self, batch, loss):
        self.log.append((self.name, "loss"))
        return loss + self.bonus

    def before_optimizer_step(self):
        self.log.append((self.name, "grad"))

    def after_optimizer_step(self, batch):
        self.log.append((self.name, "step"))

    def after_experience(self, experience):
        self.log.append((self.name, "after", experience.index))

    def summary(self):
        return {f"{self.name}_bonus": self.bonus, "shared": self.name}

    def memory_parts(self):
        return {"shared": 10, f"{self.name}_only": 1}

    def state_dict(self):
        return {"bonus": self.bonus}

    def load_state_dict(self, state):
        self.bonus = state["bonus"]


class RecordingBase(Naive):
    """Naive, logging its hooks; answers every choice hook recognisably."""

    def __init__(self, log: list):
        super().__init__()
        self.log = log
        self.step = 0

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.log.append(("base", "setup"))

    def before_experience(self, experience):
        self.log.append(("base", "before", experience.index, self.experience.index))

    def before_training_step(self, batch):
        self.log.append(("base", "train"))

    def before_optimizer_step(self):
        self.log.append(("base", "grad"))

    def after_optimizer_step(self, batch):
        self.log.append(("base", "step"))
        self.step += 1

    def after_experience(self, experience):
        self.log.append(("base", "after", experience.index))

    def train_data(self, experience):
        return experience.test

    def budget_scale(self, experience):
        return 7

    def predict(self, x, task):
        return torch.full((x.shape[0], 2), 3.0)

    def summary(self):
        return {"base_steps": self.step, "shared": "base"}

    def memory_parts(self):
        return {"shared": 100}

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


def composed(log: list) -> Hooks:
    return Hooks(RecordingBase(log), [Recorder("a", log, 1.0), Recorder("b", log, 10.0)])


def batch_of(exp):
    return exp.train.x, exp.train.y, exp.train.task


def test_every_hook_is_declared_in_the_table_by_its_kind():
    kinds = {name: type(row) for name, row in vars(Hooks).items() if isinstance(row, (Notify, Choice, Fold, Merge))}
    assert kinds == {
        "check_stream": Notify, "distribute": Notify, "before_experience": Notify, "before_training_step": Notify,
        "before_optimizer_step": Notify, "after_optimizer_step": Notify, "after_experience": Notify,
        "train_data": Choice, "budget_scale": Choice, "configure_optimizer": Choice, "predict": Choice,
        "training_step": Fold, "summary": Merge, "memory_parts": Merge}


def test_notifications_reach_the_base_first_then_plugins_in_order():
    log: list = []
    stream = toy_stream()
    hooks = composed(log)
    assert hooks.name == "naive+a+b"
    wire(hooks, stream)
    exp = stream[1]
    hooks.before_experience(exp)  # the context names the experience before any part runs
    batch = batch_of(exp)
    hooks.before_training_step(batch)
    hooks.training_step(batch)
    hooks.before_optimizer_step()
    hooks.after_optimizer_step(batch)
    hooks.after_experience(exp)
    assert log == [("base", "setup"), ("a", "setup"), ("b", "setup"),
                   ("base", "before", 1, 1), ("a", "before", 1, 1), ("b", "before", 1, 1),
                   ("base", "train"), ("a", "train"), ("b", "train"),
                   ("a", "loss"), ("b", "loss"),
                   ("base", "grad"), ("a", "grad"), ("b", "grad"),
                   ("base", "step"), ("a", "step"), ("b", "step"),
                   ("base", "after", 1), ("a", "after", 1), ("b", "after", 1)]


def test_the_loss_is_the_bases_adjusted_by_each_plugin_in_order():
    stream = toy_stream()
    hooks = composed([])
    wire(hooks, stream)
    batch = batch_of(stream[0])
    torch.testing.assert_close(hooks.training_step(batch), hooks.base.training_step(batch) + 11.0)

    class Doubling(Plugin):
        def adjust_loss(self, batch, loss):
            return 2 * loss

    order = Hooks(Naive(), [Recorder("a", [], 1.0), Doubling()])
    wire(order, stream)
    torch.testing.assert_close(order.training_step(batch), 2 * (order.base.training_step(batch) + 1.0))


def test_choices_are_the_bases_alone():
    stream = toy_stream()
    hooks = composed([])
    wire(hooks, stream)
    exp = stream[0]
    assert hooks.train_data(exp) is exp.test and hooks.budget_scale(exp) == 7
    assert torch.equal(hooks.predict(exp.test.x, exp.test.task), torch.full((len(exp.test), 2), 3.0))
    assert hooks.configure_optimizer(lambda params: None) is None
    for name in ("train_data", "budget_scale", "configure_optimizer", "predict", "training_step"):
        assert not hasattr(Plugin, name), name  # nothing for a plugin to answer


def test_summaries_and_memory_combine_every_part():
    hooks = composed([])
    wire(hooks, toy_stream())
    assert hooks.summary() == {"base_steps": 0, "a_bonus": 1.0, "b_bonus": 10.0, "shared": "b"}
    assert hooks.memory_parts() == {"shared": 120, "a_only": 1, "b_only": 1}
    hooks.record_memory()
    assert hooks.usage.peak_memory_bytes == 122


def test_a_run_without_plugins_goes_through_the_same_dispatcher():
    log: list = []
    stream = toy_stream()
    hooks = Hooks(RecordingBase(log))
    module = wire(hooks, stream)
    hooks.before_experience(stream[0])
    hooks.after_optimizer_step(batch_of(stream[0]))
    assert log == [("base", "setup"), ("base", "before", 0, 0), ("base", "step")]
    assert hooks.name == "naive" and hooks.summary() == {"base_steps": 1, "shared": "base"}
    assert module.strategy is hooks.base and module.hooks is hooks


def test_refusals_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"^strategy='p' is not valid: is a plugin; use it as plugin=\[\.\.\.\] "
                                          r"on top of a strategy$"):
        Hooks(Recorder("p", []))
    with pytest.raises(ConfigError, match="plugins must subclass clplat.strategy.Plugin"):
        Hooks(Naive(), [Naive()])
    with pytest.raises(ConfigError, match=r"^plugin='\[\.\.\.\]' is not valid: strategy=hypernet takes no plugins "
                                          r"\(they act on the module's parameters, which a hypernetwork generates "
                                          r"instead of training\)$"):
        Hooks(Hypernet(), [Recorder("a", [])])
    Hooks(Hypernet())  # alone it is fine


def test_supports_ddp_only_when_every_part_does():
    assert Hooks(Replay()).supports_ddp
    assert not Hooks(Replay(), [Recorder("a", [])]).supports_ddp
    assert not Hooks(Strategy()).supports_ddp


def test_the_context_carries_the_bases_declared_buffer_to_plugins():
    stream = toy_stream()
    seen = []

    class Probe(Plugin):
        def setup(self, context):
            super().setup(context)
            seen.append(context.base)

    replay = Replay(buffer_size=4)
    wire(Hooks(replay, [Probe()]), stream)
    wire(Hooks(Naive(), [Probe()]), stream)
    assert seen[0].buffer is replay.buffer and not seen[0].stores_logits
    assert seen[1].buffer is None


def test_the_context_is_kept_current_for_the_fit_and_the_plan():
    stream = toy_stream()
    hooks = Hooks(Naive())
    module = wire(hooks, stream)
    context = hooks.context
    assert context.module is module and context.stream is stream and context.usage is hooks.usage
    assert context.experience is None and context.steps_for is None and context.fit_batches is None
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    hooks.begin_fit(12, [optimizer])
    hooks.plan(lambda data: len(data))
    assert context.fit_batches == 12 and context.optimizers == [optimizer] and context.steps_for(stream[0].train) == 8
    with pytest.raises(RuntimeError, match="before setup"):
        Naive().module


def test_usage_is_counted_once_for_the_run():
    stream = toy_stream()
    plugin = Recorder("a", [])
    hooks = Hooks(Naive(), [plugin])
    wire(hooks, stream)
    plugin.count_extra_steps("unlearn", 2, 16)
    hooks.base.count_samples("replay", 5)
    assert hooks.usage.extra_steps == {"unlearn": 2} and hooks.usage.samples == {"unlearn": 16, "replay": 5}
    assert plugin.usage is hooks.base.usage is hooks.usage


def test_state_round_trips_in_both_checkpoint_layouts():
    stream = toy_stream()
    # with plugins: {"base": ..., "plugins": [...]}, as checkpoints have always held it
    hooks = composed([])
    wire(hooks, stream)
    hooks.base.step = 5
    state = hooks.state_dict()
    assert state == {"base": {"step": 5}, "plugins": [{"bonus": 1.0}, {"bonus": 10.0}]}
    fresh = composed([])
    wire(fresh, stream)
    fresh.load_state_dict(state)
    assert fresh.base.step == 5 and [p.bonus for p in fresh.plugins] == [1.0, 10.0]
    with pytest.raises(ValueError, match="checkpoint has 2 plugins, this run has 1"):
        Hooks(RecordingBase([]), [Recorder("a", [])]).load_state_dict(state)
    # without: the strategy's own state, unwrapped
    alone = Hooks(Replay(buffer_size=4))
    wire(alone, stream)
    alone.after_optimizer_step(batch_of(stream[0]))
    plain = alone.state_dict()
    assert set(plain) == {"buffer"}
    again = Hooks(Replay(buffer_size=4))
    wire(again, stream)
    again.load_state_dict(plain)
    assert torch.equal(again.base.buffer.x, alone.base.buffer.x)


class Picky(Plugin):
    """Refuses ``key`` in ``hook``: a relative key is one of its own options, an absolute one names
    another part of the config."""

    name = "picky"

    def __init__(self, key: str, hook: str):
        super().__init__()
        self.key, self.hook = key, hook

    def _refuse(self, hook: str) -> None:
        if hook == self.hook:
            raise ConfigError(self.key, 1, "is refused")

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self._refuse("setup")

    def before_experience(self, experience):
        self._refuse("before_experience")

    def adjust_loss(self, batch, loss):
        self._refuse("adjust_loss")
        return loss


def test_a_part_names_its_own_options_under_its_config_key_in_any_hook():
    stream = toy_stream()
    batch = (stream[0].train.x[:4], stream[0].train.y[:4], stream[0].train.task[:4])
    for hook, call in (("setup", lambda hooks: wire(hooks, stream)),
                       ("before_experience", lambda hooks: wire(hooks, stream).hooks.before_experience(stream[0])),
                       ("adjust_loss", lambda hooks: wire(hooks, stream).hooks.training_step(batch))):
        with pytest.raises(ConfigError, match=r"^plugin\.mine\.alpha=1 is not valid: is refused$"):
            call(Hooks(Naive(), [Picky(".alpha", hook)], keys=["strategy", "plugin.mine"]))
        with pytest.raises(ConfigError, match=r"^plugin\.picky\.alpha="):  # the default key: the plugin's name
            call(Hooks(Naive(), [Picky(".alpha", hook)]))
        with pytest.raises(ConfigError, match=r"^backbone\.num_layers=1 "):  # absolute: kept as it is
            call(Hooks(Naive(), [Picky("backbone.num_layers", hook)], keys=["strategy", "plugin.mine"]))


def test_the_same_plugin_reports_the_key_the_config_gives_it():
    """``build_hooks`` qualifies a plugin's option with its node, at construction and in its hooks."""
    from omegaconf import OmegaConf

    from clplat.experiment import build_hooks

    for name in ("fpf", "finetune"):
        cfg = OmegaConf.create({"strategy": {"_target_": "clplat.strategies.replay.Replay"},
                                "plugin": {name: {"_target_": "clplat.strategies.fpf.FPF", "top_k": 0}}})
        with pytest.raises(ConfigError, match=rf"^plugin\.{name}\.top_k=0 is not valid: must be an integer >= 1$"):
            build_hooks(cfg)
        cfg.plugin[name].top_k, cfg.plugin[name].modules = 3, ["decoder"]  # refused at setup, by the dispatcher
        with pytest.raises(ConfigError, match=rf"^plugin\.{name}\.modules='decoder' is not valid"):
            wire(build_hooks(cfg), toy_stream())
    cfg = OmegaConf.create({"strategy": {"_target_": "clplat.strategies.replay.Replay", "buffer_size": 0}})
    with pytest.raises(ConfigError, match=r"^strategy\.buffer_size=0 is not valid"):
        build_hooks(cfg)
