"""The base of every strategy that keeps a replay buffer.

It owns what those strategies would otherwise each repeat: the buffer's size (``buffer_size``,
or as many samples as ``memory_bytes`` holds, logits included when the strategy stores them),
its seeded generator, its share under DDP, its state in checkpoints, its entry in
``summary.json`` and in the memory accounting. A subclass decides only *when* samples go in and
*how* they are used, and declares its own checkpointed attributes (``checkpointed = (...)``,
added to ``buffer``; clplat/state.py).

A plugin that works on a buffer (FPF) is offered the base strategy's by the dispatcher
(``RunContext.base``, because the class declares :attr:`Strategy.provides_buffer`) rather than
probing for an attribute.
"""

from __future__ import annotations

from typing import Any

from clplat.buffers import ReplayBuffer, sample_nbytes, samples_for_budget
from clplat.distributed import split_count
from clplat.errors import check_int
from clplat.seeds import SeedStream, seeded_generator
from clplat.context import RunContext
from clplat.strategy import Strategy


class RehearsalStrategy(Strategy):
    """A strategy with one replay buffer (``self.buffer``)."""

    provides_buffer = True
    #: the buffer's state (``ReplayBuffer.state_dict``), saved once here for every rehearsal method
    checkpointed = ("buffer",)
    stores_logits = False
    """Whether each stored sample carries its logits (DER, k-FPF's distillation): the budget in
    bytes then buys fewer samples."""

    def __init__(self, buffer_size: int, memory_bytes: int | None, seed: int, policy: str = "reservoir",
                 replay_batch_size: int | None = None) -> None:
        super().__init__()
        check_int(".buffer_size", buffer_size, 1)
        check_int(".memory_bytes", memory_bytes, 1, allow_none=True)
        check_int(".replay_batch_size", replay_batch_size, 1, allow_none=True)
        self.buffer_size, self.memory_bytes, self.seed, self.policy = buffer_size, memory_bytes, seed, policy
        self.replay_batch_size = replay_batch_size
        self.buffer = self._new_buffer()

    def setup(self, context: RunContext) -> None:
        """With ``memory_bytes``, the buffer holds as many samples as fit (replaces ``buffer_size``)."""
        super().setup(context)
        if self.memory_bytes is not None:
            self.buffer_size = samples_for_budget(".memory_bytes", self.memory_bytes,
                                                  sample_nbytes(context.stream, logits=self.stores_logits))
            self.buffer = self._new_buffer()

    def distribute(self, rank: int, world_size: int) -> None:
        """Split the memory, not multiply it: rank r keeps its share of ``buffer_size`` slots (its
        own generator) and draws its share of the replay minibatch, so the ranks together hold
        and replay as much as one process would. Used by subclasses that declare ``supports_ddp``."""
        super().distribute(rank, world_size)
        self.buffer = self._new_buffer()
        if self.replay_batch_size is not None:
            self.replay_batch_size = max(1, split_count(self.replay_batch_size, rank, world_size))

    def _new_buffer(self) -> ReplayBuffer:
        if self.world_size == 1:
            return ReplayBuffer(self.buffer_size, self.policy, seeded_generator(self.seed, SeedStream.BUFFER))
        capacity = split_count(self.buffer_size, self.rank, self.world_size)
        check_int(".buffer_size", capacity, 1)  # fewer slots than ranks: say so, not a crash
        return ReplayBuffer(capacity, self.policy, seeded_generator(self.seed, SeedStream.BUFFER, self.rank, self.world_size))

    def summary(self) -> dict[str, Any]:
        return {"buffer_size": len(self.buffer), "buffer_bytes": self.buffer.nbytes(),
                "buffer_class_counts": {str(k): v for k, v in self.buffer.class_counts().items()}}

    def memory_parts(self) -> dict[str, int]:
        return self.buffer.nbytes_by_part()
