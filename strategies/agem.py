"""Averaged Gradient Episodic Memory (A-GEM).

Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019, "Efficient Lifelong Learning with A-GEM" (ICLR;
arXiv:1812.00420); memory filling as in mammoth ``models/agem.py``.

The episodic memory holds ``buffer_size // num_experiences`` random training samples of every
finished task. At each step the gradient ``g`` of the stream loss is compared with a reference
gradient ``g_ref`` of the loss on a random memory minibatch; if they conflict (``g . g_ref < 0``)
``g`` is projected so that the memory loss does not increase to first order::

    g <- g - (g . g_ref) / (g_ref . g_ref) * g_ref

The reference gradient is computed in ``training_step`` with ``torch.autograd.grad`` (so ``.grad``
holds the stream gradient only) and the projection is applied in ``before_optimizer_step``,
between backward and the optimizer step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.context import RunContext
from clplat.distributed import all_reduce_sum, shard
from clplat.errors import ConfigError
from clplat.rehearsal import RehearsalStrategy
from clplat.seeds import SeedStream, seeded_generator
from clplat.stream import Experience
from clplat.strategy import Batch

from .parts.common import named_trainable, random_subset


def project(grad: Tensor, reference: Tensor) -> Tensor:
    """A-GEM's projection of a flat gradient against a flat reference gradient."""
    dot = torch.dot(grad, reference)
    if dot >= 0:
        return grad
    return grad - dot / torch.dot(reference, reference).clamp_min(1e-12) * reference


class AGEM(RehearsalStrategy):
    """Stream-loss steps whose gradient never points against a memory minibatch's gradient."""

    name = "agem"
    # under DDP every rank keeps its share of each task's memory samples and the reference
    # gradients are averaged over the ranks before the projection, so every rank projects the
    # same gradient against the same reference: the one-process step with the union's memory batch
    supports_ddp = True
    checkpointed = ("generator", "projections", "steps")  # and the rehearsal base's buffer

    def __init__(self, buffer_size: int = 500, replay_batch_size: int | None = None,
                 memory_bytes: int | None = None, seed: int = 0):
        super().__init__(buffer_size, memory_bytes, seed, "reservoir", replay_batch_size)
        self.generator = seeded_generator(seed, SeedStream.AGEM)
        self._reference: Tensor | None = None
        self.projections = 0
        self.steps = 0

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        stream = context.stream
        needed = len(stream) * self.world_size  # one sample per task on every rank
        if self.buffer_size < needed:
            raise ConfigError(".buffer_size", self.buffer_size,
                              f"A-GEM keeps buffer_size // {len(stream)} samples per task"
                              + (f", split over {self.world_size} ranks" if self.world_size > 1 else "")
                              + f"; needs at least {needed}")

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        self._reference = None
        if not self.buffer.is_empty:
            memory = self.buffer.sample(self.replay_batch_size or x.shape[0])
            self.count_samples("replay", memory["x"].shape[0])  # the reference gradient's batch
            params = [p for _, p in named_trainable(self.module)]
            ref_loss = self.criterion(self.module(memory["x"], memory["task"]), memory["y"])
            grads = torch.autograd.grad(ref_loss, params, allow_unused=True)
            self._reference = torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                                         for p, g in zip(params, grads)])
        return self.criterion(self.module(x, task), y)

    def before_optimizer_step(self) -> None:
        self.steps += 1
        if self._reference is None:
            return
        if self.world_size > 1:  # every rank the same reference (the loss over the union's memory batch)
            self._reference = all_reduce_sum(self._reference).div_(self.world_size)
        params = [p for _, p in named_trainable(self.module)]
        grad = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in params])
        projected = project(grad, self._reference)
        if projected is not grad:
            self.projections += 1
            offset = 0
            for p in params:
                n = p.numel()
                p.grad = projected[offset : offset + n].view_as(p).clone()
                offset += n
        self._reference = None

    def after_experience(self, experience: Experience) -> None:
        # one draw on every rank (a shared generator), each rank keeping its part of it
        per_task = self.buffer_size // len(self.stream)
        index = random_subset(len(experience.train), per_task, self.generator)
        data = experience.train.subset(shard(index, self.rank, self.world_size))
        self.buffer.add(data.x, data.y, data.task)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "agem_projected_fraction": self.projections / max(self.steps, 1)}
