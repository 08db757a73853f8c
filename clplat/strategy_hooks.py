"""``StrategyHooks``: the Lightning callback through which a fit reaches the run's hooks.

Lightning calls every callback's ``on_train_batch_end`` *before* the LightningModule's own, so a
strategy hook dispatched from the module would run after the evaluator had already scored the
step: the periodic rows would describe a model that never exists (before SHARP's masks, before
k-FPF's fine-tuning). As the first callback of the Trainer, this one runs the strategy's hooks
before any other callback, so the evaluator, the progress display and a user's own callbacks all
see the model after every hook of the step. It is also where the trainer's view of a fit (its
batches, its optimizers) enters the run context, so no method has to read the trainer.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class StrategyHooks(Callback):
    """Dispatches ``before_optimizer_step`` and ``after_optimizer_step`` to ``pl_module.hooks``,
    and tells it at every fit's start how many batches the fit has and which optimizers it steps.

    Must come first in the Trainer's callbacks (``run_experiment`` puts it there).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.hooks.begin_fit(trainer.num_training_batches, trainer.optimizers)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        pl_module.hooks.before_optimizer_step()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        pl_module.hooks.after_optimizer_step(batch)
