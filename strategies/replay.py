"""Experience replay with a reservoir (or class-balanced) buffer.

Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning" (arXiv:1902.10486);
reservoir sampling as in mammoth's ``utils/buffer.py``; the class-balanced policy is CBRS
(Chrysakis & Moens, ICML 2020).
"""

from __future__ import annotations

import torch
from torch import Tensor

from clplat.rehearsal import RehearsalStrategy
from clplat.strategy import Batch


class Replay(RehearsalStrategy):
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
        super().__init__(buffer_size, memory_bytes, seed, policy, replay_batch_size)

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
