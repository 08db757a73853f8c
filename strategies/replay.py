"""Experience replay with a reservoir (or class-balanced) buffer.

Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning" (arXiv:1902.10486);
reservoir sampling as in mammoth's ``utils/buffer.py``; the class-balanced policy is CBRS
(Chrysakis & Moens, ICML 2020).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.buffers import ReplayBuffer, sample_nbytes, samples_for_budget
from clplat.distributed import split_count
from clplat.errors import check_int
from clplat.stream import Stream
from clplat.strategy import Batch, Strategy
from clplat.seeds import SeedStream, seeded_generator


class Replay(Strategy):
    """Mix a minibatch drawn from the buffer into every training step; insert after the step.

    The loss is the mean cross-entropy over the concatenated stream + replay batch (current
    mammoth ``models/er.py``), not a sum of two means. The stream batch is inserted into the
    buffer after the optimizer step, un-augmented.
    """

    name = "replay"
    #: per-rank buffers: each rank stores (a reservoir of) the stream samples it trained on
    supports_ddp = True

    def __init__(self, buffer_size: int = 500, replay_batch_size: int | None = None,
                 policy: str = "reservoir", memory_bytes: int | None = None, seed: int = 0):
        super().__init__()
        check_int("strategy.buffer_size", buffer_size, 1)
        check_int("strategy.replay_batch_size", replay_batch_size, 1, allow_none=True)
        check_int("strategy.memory_bytes", memory_bytes, 1, allow_none=True)
        self.buffer = ReplayBuffer(buffer_size, policy, seeded_generator(seed, SeedStream.BUFFER))
        self.replay_batch_size = replay_batch_size
        self.buffer_size, self.policy, self.seed = buffer_size, policy, seed
        self.memory_bytes = memory_bytes

    def setup(self, module, stream: Stream) -> None:
        """With ``memory_bytes``, the buffer holds as many samples as fit (replaces ``buffer_size``)."""
        super().setup(module, stream)
        if self.memory_bytes is not None:
            self.buffer_size = samples_for_budget("strategy.memory_bytes", self.memory_bytes, sample_nbytes(stream))
            self._build_buffer()

    def distribute(self, rank: int, world_size: int) -> None:
        """Split the memory, not multiply it: rank r keeps its share of ``buffer_size`` slots (its
        own generator) and draws its share of the replay minibatch, so the ranks together hold
        and replay as much as one process would."""
        super().distribute(rank, world_size)
        self._build_buffer()
        if self.replay_batch_size is not None:
            self.replay_batch_size = max(1, split_count(self.replay_batch_size, rank, world_size))

    def _build_buffer(self) -> None:
        if self.world_size == 1:
            self.buffer = ReplayBuffer(self.buffer_size, self.policy, seeded_generator(self.seed, SeedStream.BUFFER))
            return
        capacity = split_count(self.buffer_size, self.rank, self.world_size)
        check_int("strategy.buffer_size", capacity, 1)  # fewer slots than ranks: say so, not a crash
        self.buffer = ReplayBuffer(capacity, self.policy, seeded_generator(self.seed, SeedStream.BUFFER, self.rank, self.world_size))

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        if not self.buffer.is_empty:
            memory = self.buffer.sample(self.replay_batch_size or x.shape[0])
            self.count_samples("replay", memory["x"].shape[0])
            x = torch.cat([x, memory["x"]])
            y = torch.cat([y, memory["y"]])
            task = torch.cat([task, memory["task"]])
        return self.criterion(self.module(x, task), y)

    def after_optimizer_step(self, batch: Batch) -> None:
        x, y, task = batch
        self.buffer.add(x, y, task)

    def summary(self) -> dict[str, Any]:
        return {
            "buffer_size": len(self.buffer),
            "buffer_bytes": self.buffer.nbytes(),
            "buffer_class_counts": {str(k): v for k, v in self.buffer.class_counts().items()},
        }

    def memory_parts(self) -> dict[str, int]:
        return self.buffer.nbytes_by_part()

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
