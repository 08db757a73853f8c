"""``Hooks``: the one dispatcher between a run and its methods.

Everything that calls a method's hooks (the experiment loop, ``ContinualModule``, the
``StrategyHooks`` callback, the evaluator, checkpoint loading) calls them here. A run has one
base strategy and any number of plugins; how each hook reaches them is declared once, in the
table that is ``Hooks``' class body, by the hook's kind:

- ``Notify``: every part, the base strategy first, then the plugins in the order given;
- ``Choice``: the base strategy alone answers (the data, the budget, the optimizer, the
  prediction): a run can use one answer only, and plugins declare none;
- ``Fold``: the base strategy's answer, then each plugin's adjustment of it (the loss);
- ``Merge``: every part's answer, combined (summary entries; memory by part).

A run without plugins goes through the same dispatcher. The dispatcher also owns the run's
``RunContext`` and keeps it current (the experience, the running fit's budget and optimizers),
so a method reads the run there instead of reaching into the trainer or another method. Every
call into a part goes through ``_qualified``: a ``ConfigError`` a part raises about one of its
own options (a relative key, ``clplat.errors.ConfigError``) names it under the config node the
part was built from (``Hooks.keys``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from clplat.context import BaseCapabilities, RunContext, Usage
from clplat.errors import ConfigError, options_of
from clplat.stream import Experience, SequenceData, Stream
from clplat.strategy import Component, Plugin, Strategy

if TYPE_CHECKING:
    from clplat.module import ContinualModule


def _qualified(key: str, hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook``, a part's bound method, with its relative ``ConfigError`` keys qualified by ``key``."""

    def call(*args: Any) -> Any:
        with options_of(key):
            return hook(*args)

    return call


class _Hook:
    """A row of the dispatch table: a hook's name (the attribute it is bound to) and its kind."""

    name: str

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


class Notify(_Hook):
    """Every part receives the hook, the base strategy first, then each plugin in order.

    ``keep(context, *args)`` updates the run context from the hook's arguments before any part
    runs, so every part sees the run as the hook describes it.
    """

    def __init__(self, keep: Callable[..., None] | None = None) -> None:
        self.keep = keep

    def __get__(self, hooks: "Hooks | None", owner: type | None = None) -> Any:
        if hooks is None:
            return self
        keep = self.keep
        parts = [_qualified(key, getattr(part, self.name)) for part, key in zip(hooks.parts, hooks.keys)]

        def notify(*args: Any) -> None:
            if keep is not None:
                keep(hooks.context, *args)
            for part in parts:
                part(*args)

        return notify


class Choice(_Hook):
    """The base strategy alone answers."""

    def __get__(self, hooks: "Hooks | None", owner: type | None = None) -> Any:
        return self if hooks is None else _qualified(hooks.keys[0], getattr(hooks.base, self.name))


class Fold(_Hook):
    """The base strategy's answer, passed through each plugin's ``adjust`` hook in order."""

    def __init__(self, adjust: str) -> None:
        self.adjust = adjust

    def __get__(self, hooks: "Hooks | None", owner: type | None = None) -> Any:
        if hooks is None:
            return self
        answer = _qualified(hooks.keys[0], getattr(hooks.base, self.name))
        adjustments = [_qualified(key, getattr(plugin, self.adjust))
                       for plugin, key in zip(hooks.plugins, hooks.keys[1:])]

        def fold(*args: Any) -> Any:
            value = answer(*args)
            for adjust in adjustments:
                value = adjust(*args, value)
            return value

        return fold


class Merge(_Hook):
    """Every part's answer, combined by ``combine`` (base first, then plugins)."""

    def __init__(self, combine: Callable[[list[Any]], Any]) -> None:
        self.combine = combine

    def __get__(self, hooks: "Hooks | None", owner: type | None = None) -> Any:
        if hooks is None:
            return self
        return lambda: self.combine([_qualified(key, getattr(part, self.name))()
                                     for part, key in zip(hooks.parts, hooks.keys)])


def _entries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary entries of every part (a later part's entry replaces an earlier one of the same name)."""
    out: dict[str, Any] = {}
    for summary in summaries:
        out.update(summary)
    return out


def _bytes_by_part(parts: list[dict[str, int]]) -> dict[str, int]:
    """Memory by part, summed over the parts that name the same one."""
    out: dict[str, int] = {}
    for memory in parts:
        for key, value in memory.items():
            out[key] = out.get(key, 0) + value
    return out


def _current_experience(context: RunContext, experience: Experience) -> None:
    context.experience = experience


def _capabilities(base: Strategy) -> BaseCapabilities:
    """What ``base`` declares it offers plugins, as the context carries it."""
    buffer = base.buffer if base.provides_buffer else None  # type: ignore[attr-defined]
    return BaseCapabilities(buffer=buffer, stores_logits=base.stores_logits)


class Hooks:
    """A run's base strategy and its plugins behind one set of hooks (the table below)."""

    # -- the dispatch table ------------------------------------------------------------------
    check_stream = Notify()
    distribute = Notify()
    before_experience = Notify(keep=_current_experience)
    before_training_step = Notify()
    before_optimizer_step = Notify()
    after_optimizer_step = Notify()
    after_experience = Notify()
    train_data = Choice()
    budget_scale = Choice()
    configure_optimizer = Choice()
    predict = Choice()
    training_step = Fold(adjust="adjust_loss")
    summary = Merge(_entries)
    memory_parts = Merge(_bytes_by_part)

    def __init__(self, base: Strategy, plugins: Sequence[Plugin] = (), keys: Sequence[str] | None = None) -> None:
        """``keys``: the config node each part was built from, the base's first (``build_hooks``
        passes ``strategy`` and ``plugin.<name>`` as the config names them); by default
        ``strategy`` and ``plugin.<the plugin's name>``, the keys of the shipped configs."""
        if isinstance(base, Plugin):
            raise ConfigError("strategy", base.name, "is a plugin; use it as plugin=[...] on top of a strategy")
        if not isinstance(base, Strategy):
            raise ConfigError("strategy", type(base).__name__, "must be a clplat.strategy.Strategy")
        for plugin in plugins:
            if not isinstance(plugin, Plugin):
                raise ConfigError("plugin", type(plugin).__name__, "plugins must subclass clplat.strategy.Plugin")
        if plugins and not base.accepts_plugins:
            reason = f" ({base.plugins_refusal})" if base.plugins_refusal else ""
            raise ConfigError("plugin", "[...]", f"strategy={base.name} takes no plugins{reason}")
        self.base, self.plugins = base, list(plugins)
        self.parts: list[Component] = [base, *self.plugins]
        self.keys = list(keys) if keys is not None else ["strategy", *(f"plugin.{p.name}" for p in self.plugins)]
        if len(self.keys) != len(self.parts):
            raise ValueError(f"{len(self.keys)} keys for {len(self.parts)} parts (the base strategy and its plugins)")
        self.usage = Usage()
        self._context: RunContext | None = None

    @property
    def name(self) -> str:
        """The run's method as summaries name it: ``replay``, ``replay+refresh+fpf``."""
        return "+".join(part.name for part in self.parts)

    @property
    def supports_ddp(self) -> bool:
        return all(part.supports_ddp for part in self.parts)

    @property
    def ddp_refusal(self) -> str:
        """Why the first part without ``supports_ddp`` refuses DDP (empty when all support it)."""
        refusing = [part for part in self.parts if not part.supports_ddp]
        if not refusing:
            return ""
        part = refusing[0]
        return part.ddp_refusal if part is self.base and not self.plugins else f"{part.name}: {part.ddp_refusal}"

    # -- the run context ---------------------------------------------------------------------
    @property
    def context(self) -> RunContext:
        if self._context is None:
            raise RuntimeError("Hooks are used before setup(module, stream)")
        return self._context

    def setup(self, module: "ContinualModule", stream: Stream) -> None:
        """Create the run context and set every part up with it, the base first: its declared
        capabilities (a buffer, as it is once set up) are in the context when plugins set up."""
        self._context = RunContext(module=module, stream=stream, usage=self.usage)
        _qualified(self.keys[0], self.base.setup)(self._context)
        self._context.base = _capabilities(self.base)
        for plugin, key in zip(self.plugins, self.keys[1:]):
            _qualified(key, plugin.setup)(self._context)

    def plan(self, steps_for: Callable[[SequenceData], int]) -> None:
        """Before the first experience: ``steps_for(data)`` is the number of optimizer steps one
        experience training on ``data`` takes (``RunContext.steps_for``)."""
        self.context.steps_for = steps_for

    def begin_fit(self, batches: int, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """At the start of every ``fit``: its training batches and the optimizers Lightning steps."""
        self.context.fit_batches = int(batches)
        self.context.optimizers = list(optimizers)

    # -- resources (summary.json "resources"; docs/metrics.md) -------------------------------
    def record_memory(self) -> None:
        """Raise the peak to the memory every part holds now (the loop calls it after every experience)."""
        self.usage.record_memory(sum(self.memory_parts().values()))

    def resources(self, budget_bytes: int | None = None) -> dict[str, Any]:
        """summary.json's ``resources``: memory held at the end and at the peak, and compute."""
        self.record_memory()
        usage = self.usage
        parts = {k: int(v) for k, v in sorted(self.memory_parts().items())}
        samples = {k: usage.samples[k] for k in sorted(usage.samples)}
        extra = {k: usage.extra_steps[k] for k in sorted(usage.extra_steps)}
        return {
            "memory_bytes": sum(parts.values()),
            "memory_bytes_by_part": parts,
            "peak_memory_bytes": usage.peak_memory_bytes,
            "memory_budget_bytes": budget_bytes,
            "stream_samples": samples.get("stream", 0),
            "samples_processed": sum(samples.values()),
            "samples_by_part": samples,
            "optimizer_steps": usage.optimizer_steps,
            "extra_steps": sum(extra.values()),
            "extra_steps_by_part": extra,
        }

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base strategy's state as it is; with plugins, ``{"base": ..., "plugins": [...]}``
        (the layout checkpoints have always had, so older ones load)."""
        if not self.plugins:
            return self.base.state_dict()
        return {"base": self.base.state_dict(), "plugins": [p.state_dict() for p in self.plugins]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.plugins:
            self.base.load_state_dict(state)
            return
        self.base.load_state_dict(state["base"])
        if len(state["plugins"]) != len(self.plugins):
            raise ValueError(f"checkpoint has {len(state['plugins'])} plugins, this run has {len(self.plugins)}")
        for plugin, plugin_state in zip(self.plugins, state["plugins"]):
            plugin.load_state_dict(plugin_state)


__all__ = ["Hooks", "Notify", "Choice", "Fold", "Merge"]
