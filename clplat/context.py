"""What a strategy or plugin may know about the run it is part of: the ``RunContext``.

Hooks read the run from here (the module, the stream, the experience being trained, the budget
of the running ``fit``, the optimizers Lightning steps, what the base strategy offers plugins,
the run's compute counters) rather than reaching through the Lightning trainer or into another
strategy. The dispatcher (``clplat.hooks.Hooks``) creates the context at ``setup`` and keeps it
current; a method only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from clplat.stream import Experience, SequenceData, Stream

if TYPE_CHECKING:
    from clplat.buffers import ReplayBuffer
    from clplat.module import ContinualModule


class Usage:
    """Compute counters of one run (docs/metrics.md, "Resources"): samples through forward and
    backward by part, Lightning optimizer steps, steps taken outside the Lightning loop by part,
    and the peak of the memory held at experience boundaries. Checkpointed with the module."""

    def __init__(self) -> None:
        self.samples: dict[str, int] = {}
        self.extra_steps: dict[str, int] = {}
        self.optimizer_steps = 0
        self.peak_memory_bytes = 0

    def count_samples(self, part: str, samples: int) -> None:
        """``samples`` more went through forward and backward for ``part`` (replay draws, ...)."""
        self.samples[part] = self.samples.get(part, 0) + int(samples)

    def count_extra_steps(self, part: str, steps: int, samples: int) -> None:
        """Work outside the Lightning loop: ``steps`` parameter updates on ``samples`` samples."""
        self.extra_steps[part] = self.extra_steps.get(part, 0) + int(steps)
        self.count_samples(part, samples)

    def count_training_step(self, batch_size: int) -> None:
        """One Lightning step on a batch of ``batch_size`` stream samples (``ContinualModule``)."""
        self.optimizer_steps += 1
        self.count_samples("stream", batch_size)

    def record_memory(self, nbytes: int) -> None:
        """Raise the peak to ``nbytes`` held now."""
        self.peak_memory_bytes = max(self.peak_memory_bytes, int(nbytes))

    def state_dict(self) -> dict[str, Any]:
        return {"samples": dict(self.samples), "extra_steps": dict(self.extra_steps),
                "optimizer_steps": self.optimizer_steps, "peak_memory_bytes": self.peak_memory_bytes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples = {str(k): int(v) for k, v in state["samples"].items()}
        self.extra_steps = {str(k): int(v) for k, v in state["extra_steps"].items()}
        self.optimizer_steps = int(state["optimizer_steps"])
        self.peak_memory_bytes = int(state["peak_memory_bytes"])


@dataclass(frozen=True)
class BaseCapabilities:
    """What the base strategy declares it offers plugins (``Strategy.provides_buffer``,
    ``Strategy.stores_logits``), read once it is set up: a plugin that works on a memory (FPF)
    uses ``buffer`` when there is one instead of keeping its own."""

    #: the base's replay buffer (``None``: it declares none)
    buffer: "ReplayBuffer | None" = None
    #: whether each sample in ``buffer`` carries the logits it was stored with
    stores_logits: bool = False


@dataclass(eq=False)  # compared by identity: it holds the module
class RunContext:
    """The run as hooks see it. Fields below the first two change during the run; the
    dispatcher updates them before the hooks that depend on them run."""

    module: "ContinualModule"
    stream: Stream
    #: the run's one set of compute counters (summary.json ``resources``), shared by all parts
    usage: Usage
    #: the experience being trained (set before ``before_experience``; ``None`` before the first)
    experience: Experience | None = None
    #: ``steps_for(data)``: optimizer steps one experience training on ``data`` takes, as the
    #: loop computes them (``None``: not run by the experiment loop); a method that schedules work
    #: over the whole run (k-FPF's triggers) sums it over the stream
    steps_for: Callable[[SequenceData], int] | None = None
    #: training batches of the running ``fit``: the steps of this experience (``None`` outside a fit)
    fit_batches: int | None = None
    #: the optimizers Lightning steps in the running ``fit``
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    #: what the base strategy offers plugins
    base: BaseCapabilities = field(default_factory=BaseCapabilities)


__all__ = ["Usage", "BaseCapabilities", "RunContext"]
