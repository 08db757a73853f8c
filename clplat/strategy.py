"""The Strategy hook interface and plugin composition.

A strategy is a plain object, not a module: ``ContinualModule`` and the experiment loop call its
hooks, and it reaches the network through ``self.module``. This keeps methods one file each and
lets plugins (refresh learning, FPF, ...) add behaviour to any base strategy without either
knowing about the other.

Before the first experience the loop calls ``plan(steps_for)``: how many optimizer steps an
experience's training data gets, so a method that spreads work over the whole run (k-FPF's
triggers) can count the run's steps in advance.

Hook order within one experience::

    before_experience(exp)           task start (observe classes, snapshot teachers, ...)
    train_data(exp)                  the data this experience trains on (joint/cumulative change it)
    configure_optimizer(factory)     at each fit: what is trained (None: the module's parameters)
    repeat: before_training_step(batch)  before the loss is computed (refresh's unlearn step, ...)
            training_step(batch)     the loss (plugins then ``adjust_loss``)
            before_optimizer_step()  gradients ready, step not taken (A-GEM projection, SI, ...)
            after_optimizer_step()   after every optimizer step (buffer insertion, ...)
    after_experience(exp)            task end (Fisher, fine-tuning, ...), before the boundary evaluation
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clplat.errors import ConfigError
from clplat.stream import Experience, Scenario, SequenceData, Stream

if TYPE_CHECKING:
    from clplat.module import ContinualModule

Batch = tuple[Tensor, Tensor, Tensor]  # (x (B,T,F), y (B,), task (B,))


def tensor_nbytes(*objects: Any) -> int:
    """Bytes of the tensors in ``objects`` (tensors, modules' parameters and buffers, mappings,
    sequences, ``SequenceData``, ``ReplayBuffer``-like objects with ``x``/``y``/``task``/``extras``),
    each tensor counted once however often it is reachable."""
    seen: set[tuple[int, int, int]] = set()
    total = 0

    def visit(obj: Any) -> None:
        nonlocal total
        if obj is None:
            return
        if isinstance(obj, Tensor):
            size = obj.element_size() * obj.numel()
            key = (obj.data_ptr(), size, id(obj) if obj.data_ptr() == 0 else 0)
            if key not in seen:
                seen.add(key)
                total += size
        elif isinstance(obj, nn.Module):
            for t in [*obj.parameters(), *obj.buffers()]:
                visit(t)
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)
        elif isinstance(obj, SequenceData):
            visit((obj.x, obj.y, obj.task))
        elif hasattr(obj, "extras") and hasattr(obj, "x"):
            visit((obj.x, obj.y, obj.task, obj.extras))
        else:
            raise TypeError(f"tensor_nbytes cannot count a {type(obj).__name__}")

    for obj in objects:
        visit(obj)
    return total


class Usage:
    """Compute counters of one run (docs/metrics.md, "Resources"): samples through forward and
    backward by part, Lightning optimizer steps, steps taken outside the Lightning loop by part,
    and the peak of the memory held at experience boundaries. Checkpointed with the module."""

    def __init__(self) -> None:
        self.samples: dict[str, int] = {}
        self.extra_steps: dict[str, int] = {}
        self.optimizer_steps = 0
        self.peak_memory_bytes = 0

    def state_dict(self) -> dict[str, Any]:
        return {"samples": dict(self.samples), "extra_steps": dict(self.extra_steps),
                "optimizer_steps": self.optimizer_steps, "peak_memory_bytes": self.peak_memory_bytes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples = {str(k): int(v) for k, v in state["samples"].items()}
        self.extra_steps = {str(k): int(v) for k, v in state["extra_steps"].items()}
        self.optimizer_steps = int(state["optimizer_steps"])
        self.peak_memory_bytes = int(state["peak_memory_bytes"])


class Strategy:
    """Base strategy: plain fine-tuning with cross-entropy. Subclasses override hooks."""

    #: scenarios this method supports; the loop refuses the others with a clear error
    supported_scenarios: tuple[Scenario, ...] = tuple(Scenario)
    #: a config key name used in error messages and summaries
    name: str = "strategy"
    #: whether the method stays correct when each of several DDP ranks trains on its shard of every
    #: batch (see docs/reliability.md); False refuses ``trainer.devices > 1`` at start-up. A method
    #: whose state depends on the data it saw must keep that state per rank (``distribute``).
    supports_ddp: bool = False
    #: why a method without ``supports_ddp`` is refused (the start-up error shows it)
    ddp_refusal: str = "it does not declare that its state stays consistent across ranks"
    #: whether ``self.buffer`` is a replay buffer others may draw from (clplat.rehearsal.RehearsalStrategy)
    provides_buffer: bool = False
    #: whether that buffer keeps each sample's logits (DER, k-FPF with distillation)
    stores_logits: bool = False

    def __init__(self) -> None:
        self._module: ContinualModule | None = None
        self._stream: Stream | None = None
        self.experience: Experience | None = None
        self.rank, self.world_size = 0, 1
        self.usage = Usage()
        self.steps_for: Callable[[SequenceData], int] | None = None

    # -- wiring ------------------------------------------------------------------------------
    @property
    def module(self) -> "ContinualModule":
        if self._module is None:
            raise RuntimeError(f"{type(self).__name__} is used before setup(module, stream)")
        return self._module

    @property
    def stream(self) -> Stream:
        if self._stream is None:
            raise RuntimeError(f"{type(self).__name__} is used before setup(module, stream)")
        return self._stream

    def check_stream(self, stream: Stream) -> None:
        """Refuse scenarios the method does not support, before anything is trained."""
        if stream.scenario not in self.supported_scenarios:
            allowed = ", ".join(s.value for s in self.supported_scenarios)
            raise ConfigError("strategy", self.name, f"does not support {stream.scenario.value} streams "
                              f"(stream {stream.name!r}); it supports: {allowed}")

    def distribute(self, rank: int, world_size: int) -> None:
        """Called before ``setup`` in a multi-process run: this process is ``rank`` of ``world_size``.

        Each rank trains on ``1/world_size`` of every batch; a strategy holding per-sample state
        (a buffer) sizes and seeds it per rank here.
        """
        self.rank, self.world_size = rank, world_size

    def setup(self, module: "ContinualModule", stream: Stream) -> None:
        """Called once before the first experience."""
        self.check_stream(stream)
        self._module, self._stream = module, stream

    def plan(self, steps_for: Callable[[SequenceData], int]) -> None:
        """Called by the loop before the first experience: ``steps_for(data)`` is the number of
        optimizer steps one experience training on ``data`` takes (``trainer.epochs`` /
        ``trainer.iterations`` / ``trainer.batch_size``, or the online regime), times 1; the loop
        multiplies by ``budget_scale``. Kept as ``self.steps_for``; a method that schedules work
        over the whole run (k-FPF's triggers) sums it over the stream (``None``: outside the loop)."""
        self.steps_for = steps_for

    # -- hooks -------------------------------------------------------------------------------
    def before_experience(self, experience: Experience) -> None:
        self.experience = experience

    def train_data(self, experience: Experience) -> SequenceData | None:
        """The data trained on during ``experience`` (``None``: no training, boundary eval only)."""
        return experience.train

    def budget_scale(self, experience: Experience) -> int:
        """Multiplier of an iteration budget for this experience (joint trains all at once)."""
        return 1

    def configure_optimizer(self, factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
                            ) -> torch.optim.Optimizer | None:
        """The optimizer Lightning steps in this experience's ``fit`` (``None``: the run's optimizer
        over all of the module's parameters, the usual case).

        Called at every ``fit``, after the module is on its device. A method whose trained
        parameters are not the module's (a hypernetwork generates the backbone's weights and is
        trained instead of them) returns ``factory(its_parameters)`` here.
        """
        return None

    def before_training_step(self, batch: Batch) -> None:
        """Before the loss of a training step is computed (may change parameters in place, e.g.
        refresh learning's unlearning step runs here so the base strategy's step sees its result)."""

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        return self.criterion(self.module(x, task), y)

    def before_optimizer_step(self) -> None:
        """After backward, before the optimizer step (Lightning ``on_before_optimizer_step``):
        the gradients in ``p.grad`` may be read or rewritten (A-GEM's projection, SI's path integral)."""

    def adjust_loss(self, batch: Batch, loss: Tensor) -> Tensor:
        """Plugins add terms to the base strategy's loss here (a base strategy returns it as is)."""
        return loss

    def after_optimizer_step(self, batch: Batch) -> None:
        pass

    def after_experience(self, experience: Experience) -> None:
        pass

    def predict(self, x: Tensor, task: Tensor) -> Tensor:
        """Logits over the global label space; evaluation goes through here."""
        return self.module(x, task)

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def criterion(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def summary(self) -> dict[str, Any]:
        """Extra numbers for summary.json (buffer sizes, parameter counts, ...)."""
        return {}

    # -- resources (summary.json "resources"; docs/metrics.md) -------------------------------
    def memory_parts(self) -> dict[str, int]:
        """Bytes of the tensors this method holds *now* beyond the trained model, by part
        (``{"buffer": ..., "fisher": ...}``; a method holding nothing returns ``{}``)."""
        return {}

    @property
    def run_usage(self) -> Usage:
        """The run's one set of counters: the module's strategy's (so a plugin counts into the
        composed strategy's), or this strategy's own when it is used outside a module."""
        owner = getattr(self._module, "strategy", None)
        return owner.usage if isinstance(owner, Strategy) else self.usage

    def count_samples(self, part: str, samples: int) -> None:
        """``samples`` more went through forward and backward for ``part`` (replay draws, ...)."""
        usage = self.run_usage
        usage.samples[part] = usage.samples.get(part, 0) + int(samples)

    def count_extra_steps(self, part: str, steps: int, samples: int) -> None:
        """Work outside the Lightning loop: ``steps`` parameter updates on ``samples`` samples."""
        usage = self.run_usage
        usage.extra_steps[part] = usage.extra_steps.get(part, 0) + int(steps)
        self.count_samples(part, samples)

    def count_training_step(self, batch_size: int) -> None:
        """One Lightning step on a batch of ``batch_size`` stream samples (``ContinualModule``)."""
        self.run_usage.optimizer_steps += 1
        self.count_samples("stream", batch_size)

    def record_memory(self) -> None:
        """Raise the peak to the memory held now (the loop calls it after every experience)."""
        usage = self.run_usage
        usage.peak_memory_bytes = max(usage.peak_memory_bytes, sum(self.memory_parts().values()))

    def resources(self, budget_bytes: int | None = None) -> dict[str, Any]:
        """summary.json's ``resources``: memory held at the end and at the peak, and compute."""
        self.record_memory()
        usage = self.run_usage
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
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Plugin(Strategy):
    """A strategy that adds behaviour to a base one: ``strategy=replay plugin=[refresh]``.

    Plugins see every hook after the base strategy. They may not replace the loss or the data;
    they adjust them (``adjust_loss``) or act around them (``after_optimizer_step``, ...).
    """

    name = "plugin"


class ComposedStrategy(Strategy):
    """A base strategy plus plugins: hooks run base first, then plugins in order."""

    def __init__(self, base: Strategy, plugins: Sequence[Plugin]):
        super().__init__()
        for plugin in plugins:
            if not isinstance(plugin, Plugin):
                raise ConfigError("plugin", type(plugin).__name__, "plugins must subclass clplat.strategy.Plugin")
        self.base, self.plugins = base, list(plugins)
        self.name = "+".join([base.name, *(p.name for p in plugins)])

    @property
    def parts(self) -> list[Strategy]:
        return [self.base, *self.plugins]

    @property
    def supports_ddp(self) -> bool:  # type: ignore[override]
        return all(part.supports_ddp for part in self.parts)

    @property
    def ddp_refusal(self) -> str:  # type: ignore[override]
        refusing = [part for part in self.parts if not part.supports_ddp]
        return f"{refusing[0].name}: {refusing[0].ddp_refusal}" if refusing else ""

    def distribute(self, rank: int, world_size: int) -> None:
        super().distribute(rank, world_size)
        for part in self.parts:
            part.distribute(rank, world_size)

    def check_stream(self, stream: Stream) -> None:
        for part in self.parts:
            part.check_stream(stream)

    def setup(self, module: "ContinualModule", stream: Stream) -> None:
        super().setup(module, stream)
        for part in self.parts:
            part.setup(module, stream)

    def plan(self, steps_for: Callable[[SequenceData], int]) -> None:
        super().plan(steps_for)
        for part in self.parts:
            part.plan(steps_for)

    def before_experience(self, experience: Experience) -> None:
        super().before_experience(experience)
        for part in self.parts:
            part.before_experience(experience)

    def train_data(self, experience: Experience) -> SequenceData | None:
        return self.base.train_data(experience)

    def budget_scale(self, experience: Experience) -> int:
        return self.base.budget_scale(experience)

    def configure_optimizer(self, factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
                            ) -> torch.optim.Optimizer | None:
        return self.base.configure_optimizer(factory)  # plugins do not choose what is trained

    def before_training_step(self, batch: Batch) -> None:
        for part in self.parts:
            part.before_training_step(batch)

    def training_step(self, batch: Batch) -> Tensor:
        loss = self.base.training_step(batch)
        for plugin in self.plugins:
            loss = plugin.adjust_loss(batch, loss)
        return loss

    def before_optimizer_step(self) -> None:
        for part in self.parts:
            part.before_optimizer_step()

    def after_optimizer_step(self, batch: Batch) -> None:
        for part in self.parts:
            part.after_optimizer_step(batch)

    def after_experience(self, experience: Experience) -> None:
        for part in self.parts:
            part.after_experience(experience)

    def predict(self, x: Tensor, task: Tensor) -> Tensor:
        return self.base.predict(x, task)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in self.parts:
            out.update(part.summary())
        return out

    def memory_parts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.parts:
            for key, value in part.memory_parts().items():
                out[key] = out.get(key, 0) + value
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base.state_dict(), "plugins": [p.state_dict() for p in self.plugins]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state["base"])
        if len(state["plugins"]) != len(self.plugins):
            raise ValueError(f"checkpoint has {len(state['plugins'])} plugins, this run has {len(self.plugins)}")
        for plugin, plugin_state in zip(self.plugins, state["plugins"]):
            plugin.load_state_dict(plugin_state)


def compose(base: Strategy, plugins: Sequence[Plugin]) -> Strategy:
    """The strategy a run uses: the base alone, or the base with its plugins."""
    if isinstance(base, Plugin):
        raise ConfigError("strategy", base.name, "is a plugin; use it as plugin=[...] on top of a strategy")
    return ComposedStrategy(base, plugins) if plugins else base
