"""Training batches straight from tensors, with the per-experience budget built in.

A ``DataLoader`` over a ``TensorDataset`` indexes and collates sample by sample; for the small
embedded streams that costs more than the RNN step. ``ExperienceLoader`` slices a shuffled
permutation instead: one gather per batch. It yields exactly ``iterations`` batches (cycling
through reshuffled passes when the budget exceeds an epoch), so one Lightning epoch is one
experience whatever the budget, and its shuffling has its own seeded generator so training
order does not depend on anything else that draws random numbers.

Under DDP every rank builds the same loader (same generator seed, so the same global batches)
and keeps its own disjoint slice of each batch (``clplat.distributed.shard``): every rank takes
exactly ``iterations`` steps, and the ranks together see what a single process would see.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor

from clplat.distributed import shard
from clplat.errors import ConfigError, check_int
from clplat.stream import SequenceData


def iterations_for(num_samples: int, batch_size: int, epochs: int | None, iterations: int | None,
                   scale: int = 1) -> int:
    """Optimizer steps for one experience: ``iterations * scale`` or ``epochs`` full passes."""
    if iterations is not None:
        return iterations * scale
    if epochs is None:
        raise ConfigError("trainer.epochs", None, "set trainer.epochs or trainer.iterations")
    return epochs * math.ceil(num_samples / batch_size)


class ExperienceLoader:
    """Yields ``(x, y, task)`` batches: ``iterations`` of them, reshuffling after each full pass."""

    def __init__(self, data: SequenceData, batch_size: int, iterations: int, generator: torch.Generator,
                 rank: int = 0, world_size: int = 1):
        check_int("trainer.batch_size", batch_size, 1)
        check_int("iterations", iterations, 0)
        check_int("world_size", world_size, 1)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size} processes")
        if len(data) == 0:
            raise ValueError("cannot train on an empty experience")
        self.data = data
        self.batch_size = batch_size
        self.iterations = iterations
        self.generator = generator
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        n = len(self.data)
        x, y, task = self.data.x, self.data.y, self.data.task
        order = torch.randperm(n, generator=self.generator)
        start = 0
        for _ in range(self.iterations):
            if start >= n:
                order = torch.randperm(n, generator=self.generator)
                start = 0
            index = shard(order[start : start + self.batch_size], self.rank, self.world_size)
            start += self.batch_size
            yield x[index], y[index], task[index]
