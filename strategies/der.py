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


from torch import Tensor

from clplat.errors import check_float
from clplat.rehearsal import RehearsalStrategy
from clplat.strategy import Batch

from .parts.common import finite_mse


class DER(RehearsalStrategy):
    """Replay of stored logits (DER); with ``beta > 0`` also of stored labels (DER++)."""

    name = "der"
    #: the buffer keeps logits (FPF's distillation variant can reuse it)
    stores_logits = True
    #: per-rank buffers of the samples (and logits) each rank trained on, as replay's
    supports_ddp = True

    def __init__(self, buffer_size: int = 500, alpha: float = 0.3, beta: float = 0.0,
                 replay_batch_size: int | None = None, memory_bytes: int | None = None, seed: int = 0):
        super().__init__(buffer_size, memory_bytes, seed, "reservoir", replay_batch_size)
        check_float(".alpha", alpha, 0.0)
        check_float(".beta", beta, 0.0)
        self.alpha, self.beta = float(alpha), float(beta)
        self.name = "derpp" if self.beta > 0 else "der"
        self._logits: Tensor | None = None

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
