"""Strategies and plugins: the hooks a continual-learning method implements.

A method is a plain object, not a module: the dispatcher (``clplat.hooks.Hooks``) calls its
hooks, and it reads the run (module, stream, experience, budget, optimizers) from the
``RunContext`` it is set up with. A run has one ``Strategy``, which answers the questions only one
method may answer (the data, the optimizer, the loss, the prediction), and any number of
``Plugin``s, which add behaviour around it (refresh learning, FPF) without either knowing about
the other. Both share ``Component``: wiring, the hooks every part receives, resources and state.

Hook order within one experience::

    before_experience(exp)           task start (observe classes, snapshot teachers, ...)
    train_data(exp)                  the data this experience trains on (joint/cumulative change it)
    configure_optimizer(factory)     at each fit: what is trained (None: the module's parameters)
    repeat: before_training_step(batch)  before the loss is computed (refresh's unlearn step, ...)
            training_step(batch)     the loss (plugins then ``adjust_loss``)
            before_optimizer_step()  gradients ready, step not taken (A-GEM projection, SI, ...)
            after_optimizer_step()   after every optimizer step (buffer insertion, ...)
    after_experience(exp)            task end (Fisher, fine-tuning, ...), before the boundary evaluation

Before the first experience the loop gives the dispatcher ``steps_for`` (``RunContext.steps_for``):
how many optimizer steps an experience's training data gets, so a method that spreads work over
the whole run (k-FPF's triggers) can count the run's steps in advance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clplat.context import RunContext, Usage
from clplat.errors import ConfigError
from clplat.state import Stateful
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


class Component(Stateful):
    """What the dispatcher (``clplat.hooks.Hooks``) drives: a strategy or a plugin.

    It holds what both share: the run context it is set up with (``self.module``, ``self.stream``,
    ``self.experience`` read from it), its rank under DDP, the hooks every part may receive, the
    resource accounting and its checkpointed state: the attributes a method names in
    ``checkpointed`` (added to its bases'), saved and loaded by :class:`clplat.state.Stateful`.
    The hooks below are no-ops; a method overrides those it needs.
    """

    #: scenarios this method supports; the loop refuses the others with a clear error
    supported_scenarios: tuple[Scenario, ...] = tuple(Scenario)
    #: a config key name used in error messages and summaries
    name: str = "component"
    #: whether the method stays correct when each of several DDP ranks trains on its shard of every
    #: batch (see docs/reliability.md); False refuses ``trainer.devices > 1`` at start-up. A method
    #: whose state depends on the data it saw must keep that state per rank (``distribute``).
    supports_ddp: bool = False
    #: why a method without ``supports_ddp`` is refused (the start-up error shows it)
    ddp_refusal: str = "it does not declare that its state stays consistent across ranks"

    def __init__(self) -> None:
        self._context: RunContext | None = None
        self.rank, self.world_size = 0, 1

    # -- wiring ------------------------------------------------------------------------------
    @property
    def context(self) -> RunContext:
        if self._context is None:
            raise RuntimeError(f"{type(self).__name__} is used before setup (Hooks.setup(module, stream))")
        return self._context

    @property
    def module(self) -> "ContinualModule":
        return self.context.module

    @property
    def stream(self) -> Stream:
        return self.context.stream

    @property
    def experience(self) -> Experience | None:
        """The experience being trained (``None`` before the first)."""
        return self.context.experience

    @property
    def usage(self) -> Usage:
        """The run's compute counters (one set, shared with the other parts of the run)."""
        return self.context.usage

    def check_stream(self, stream: Stream) -> None:
        """Refuse scenarios the method does not support, before anything is trained."""
        if stream.scenario not in self.supported_scenarios:
            allowed = ", ".join(s.value for s in self.supported_scenarios)
            raise ConfigError("strategy", self.name, f"does not support {stream.scenario.value} streams "
                              f"(stream {stream.name!r}); it supports: {allowed}")

    def distribute(self, rank: int, world_size: int) -> None:
        """Called before ``setup`` in a multi-process run: this process is ``rank`` of ``world_size``.

        Each rank trains on ``1/world_size`` of every batch; a method holding per-sample state
        (a buffer) sizes and seeds it per rank here.
        """
        self.rank, self.world_size = rank, world_size

    def setup(self, context: RunContext) -> None:
        """Called once before the first experience, with the context the hooks read the run from."""
        self.check_stream(context.stream)
        self._context = context

    # -- hooks every part receives (the base strategy first, then each plugin) ----------------
    def before_experience(self, experience: Experience) -> None:
        """Task start (``self.experience`` is already ``experience``)."""

    def before_training_step(self, batch: Batch) -> None:
        """Before the loss of a training step is computed (may change parameters in place, e.g.
        refresh learning's unlearning step runs here so the base strategy's step sees its result)."""

    def before_optimizer_step(self) -> None:
        """After backward, before the optimizer step (Lightning ``on_before_optimizer_step``):
        the gradients in ``p.grad`` may be read or rewritten (A-GEM's projection, SI's path integral)."""

    def after_optimizer_step(self, batch: Batch) -> None:
        """After every optimizer step, before any evaluation of that step (buffer insertion, ...)."""

    def after_experience(self, experience: Experience) -> None:
        """Task end, before the boundary evaluation (Fisher, fine-tuning, ...)."""

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

    def count_samples(self, part: str, samples: int) -> None:
        """``samples`` more went through forward and backward for ``part`` (replay draws, ...)."""
        self.usage.count_samples(part, samples)

    def count_extra_steps(self, part: str, steps: int, samples: int) -> None:
        """Work outside the Lightning loop: ``steps`` parameter updates on ``samples`` samples."""
        self.usage.count_extra_steps(part, steps, samples)

    def record_memory(self) -> None:
        """Raise the run's peak to what this method holds now (for memory held only between
        boundaries, e.g. a rehearsal set drawn for one experience; the loop records the run's
        total after every experience)."""
        self.usage.record_memory(sum(self.memory_parts().values()))


class Strategy(Component):
    """Base strategy: plain fine-tuning with cross-entropy. Subclasses override hooks.

    A strategy answers the questions only one method of a run may answer: what each experience
    trains on and for how long, what is trained, the loss, and how the model predicts.
    """

    name = "strategy"
    #: whether ``self.buffer`` is a replay buffer plugins may draw from (clplat.rehearsal.RehearsalStrategy);
    #: the dispatcher offers it to plugins through ``RunContext.base``
    provides_buffer: bool = False
    #: whether that buffer keeps each sample's logits (DER, k-FPF with distillation)
    stores_logits: bool = False
    #: whether plugins may be added (``plugin=[...]``); a method that trains something other than
    #: the module's parameters, which plugins act on, sets it False and says why in ``plugins_refusal``
    accepts_plugins: bool = True
    plugins_refusal: str = ""

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

    def training_step(self, batch: Batch) -> Tensor:
        """The loss of one training step (plugins then adjust it)."""
        x, y, task = batch
        return self.criterion(self.module(x, task), y)

    def predict(self, x: Tensor, task: Tensor) -> Tensor:
        """Logits over the global label space; evaluation goes through here."""
        return self.module(x, task)


class Plugin(Component):
    """Behaviour added to any base strategy: ``strategy=replay plugin=[refresh]``.

    Plugins receive every hook after the base strategy. They neither choose the data, the
    optimizer nor the prediction, nor replace the loss: they adjust it (``adjust_loss``) or act
    around it (``before_training_step``, ``after_optimizer_step``, ...).
    """

    name = "plugin"

    def adjust_loss(self, batch: Batch, loss: Tensor) -> Tensor:
        """The base strategy's loss (after earlier plugins') with this plugin's terms added."""
        return loss
