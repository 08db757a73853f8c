"""Dark Experience Replay (DER) and DER++.

Buzzega, Boschini, Porrello, Abati & Calderara 2020, "Dark Experience for General Continual
Learning: a Strong, Simple Baseline" (NeurIPS; arXiv:2004.07211); step as in mammoth
``models/der.py`` and ``models/derpp.py``.

A reservoir buffer keeps each sample with the logits the network produced for it when it was
inserted; training regresses the current logits on them (MSE), which distils the past function
rather than only the past labels. DER++ adds a cross-entropy term on the stored labels of a
second, independent buffer draw::

    L = CE(f(x), y) + alpha * MSE(f(x'), z')  [+ beta * CE(f(x''), y'')]

The stored logits come from the step's own forward pass (before the optimizer step), as in mammoth.

**Deviation.** With a multi-head (task-IL) or ``head.mask_unseen``, some logits are ``-inf`` and the
MSE is taken over the finite entries only (``common.finite_mse``); with an ordinary single head it
is mammoth's plain mean.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from clplat.buffers import ReplayBuffer, sample_nbytes, samples_for_budget
from clplat.errors import check_float, check_int
from clplat.stream import Stream
from clplat.strategy import Batch, Strategy
from clplat.seeds import SeedStream, seeded_generator

from .parts.common import finite_mse


class DER(Strategy):
    """Replay of stored logits (DER); with ``beta > 0`` also of stored labels (DER++)."""

    name = "der"
    #: the buffer keeps logits (FPF's distillation variant can reuse it)
    stores_logits = True

    def __init__(self, buffer_size: int = 500, alpha: float = 0.3, beta: float = 0.0,
                 replay_batch_size: int | None = None, memory_bytes: int | None = None, seed: int = 0):
        super().__init__()
        check_int("strategy.buffer_size", buffer_size, 1)
        check_int("strategy.memory_bytes", memory_bytes, 1, allow_none=True)
        self.memory_bytes, self.seed = memory_bytes, seed
        check_float("strategy.alpha", alpha, 0.0)
        check_float("strategy.beta", beta, 0.0)
        check_int("strategy.replay_batch_size", replay_batch_size, 1, allow_none=True)
        self.alpha, self.beta = float(alpha), float(beta)
        self.replay_batch_size = replay_batch_size
        self.buffer = ReplayBuffer(buffer_size, "reservoir", seeded_generator(seed, SeedStream.BUFFER))
        self.name = "derpp" if self.beta > 0 else "der"
        self._logits: Tensor | None = None

    def setup(self, module, stream: Stream) -> None:
        """With ``memory_bytes``, the buffer holds as many samples (with their logits) as fit."""
        super().setup(module, stream)
        if self.memory_bytes is not None:
            size = samples_for_budget("strategy.memory_bytes", self.memory_bytes, sample_nbytes(stream, logits=True))
            self.buffer = ReplayBuffer(size, "reservoir", seeded_generator(self.seed, SeedStream.BUFFER))

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        out = self.module(x, task)
        self._logits = out.detach()
        loss = self.criterion(out, y)
        if self.buffer.is_empty:
            return loss
        n = self.replay_batch_size or x.shape[0]
        if self.alpha > 0:
            memory = self.buffer.sample(n)
            self.count_samples("replay", memory["x"].shape[0])
            loss = loss + self.alpha * finite_mse(self.module(memory["x"], memory["task"]), memory["logits"])
        if self.beta > 0:
            memory = self.buffer.sample(n)  # an independent draw (mammoth DER++)
            self.count_samples("replay", memory["x"].shape[0])
            loss = loss + self.beta * self.criterion(self.module(memory["x"], memory["task"]), memory["y"])
        return loss

    def after_optimizer_step(self, batch: Batch) -> None:
        x, y, task = batch
        if self._logits is None:
            return
        self.buffer.add(x, y, task, logits=self._logits.float())  # float32 whatever the precision
        self._logits = None

    def summary(self) -> dict[str, Any]:
        return {"buffer_size": len(self.buffer), "buffer_bytes": self.buffer.nbytes()}

    def memory_parts(self) -> dict[str, int]:
        return self.buffer.nbytes_by_part()

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
