"""``ContinualModule``: the LightningModule that holds backbone, head and the run's hooks.

Training steps and the optimizer are delegated to the strategy through the dispatcher
(``self.hooks``, ``clplat.hooks.Hooks``), so methods that train differently plug in without
special cases here. The strategy's optimizer-step hooks are run by the
``clplat.strategy_hooks.StrategyHooks`` callback, not by this module: Lightning calls the
module's batch-end hook after every callback's, which would let the evaluator score the model
before the strategy's post-step work. The optimizer is a factory (a Hydra
``_partial_`` config) because Lightning re-creates optimizers at every ``fit``, i.e. at every
experience.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import lightning as L
import torch
from torch import Tensor, nn

from clplat.backbones.base import RecurrentBackbone
from clplat.distributed import all_reduce_sum, world
from clplat.errors import TrainingDiverged
from clplat.hooks import Hooks
from clplat.strategy import Batch, Strategy

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def skip_graph_capture_check(optimizer: torch.optim.Optimizer) -> None:
    """Drop the per-step CUDA-graph capture check of an optimizer that steps CPU parameters.

    ``Optimizer.step`` asks ``torch.accelerator`` whether CUDA is available before every step, to
    refuse a step inside a CUDA-graph capture. Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``
    at import (so the answer cannot initialise CUDA before a fork), and with that answer never
    cached until CUDA is initialised, every step loads NVML again (``dlopen``): about 0.3 ms per
    step, 5-10 % of a GRU-16 training step on this CPU (docs/performance.md). A capture is a state
    of a CUDA stream, which CPU parameters never join, so for them the check has nothing to find.
    Only this optimizer instance changes; a torch without the check is left as it is.
    """
    if callable(getattr(optimizer, "_accelerator_graph_capture_health_check", None)):
        optimizer._accelerator_graph_capture_health_check = lambda: None  # type: ignore[method-assign]


class ContinualModule(L.LightningModule):
    def __init__(self, backbone: RecurrentBackbone, head: nn.Module, hooks: Hooks, optimizer: OptimizerFactory):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.hooks = hooks
        self.optimizer_factory = optimizer
        self.last_loss: Tensor | None = None

    @property
    def strategy(self) -> Strategy:
        """The run's strategy (its plugins are ``hooks.plugins``): ``model.strategy.predict(x, task)``
        is what the evaluator scores."""
        return self.hooks.base

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning records the running hook's name on the module around every hook call, about
        # 45 times per training step, and nn.Module.__setattr__ checks each assignment against
        # parameters, buffers and submodules: a fifth of Lightning's per-step overhead in a toy
        # loop (0.65 -> 0.55 ms per step, docs/performance.md). The name is only ever a string.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        return self.head(self.backbone(x), task)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        hooks = self.hooks
        hooks.before_training_step(batch)
        loss = hooks.training_step(batch)
        hooks.usage.count_training_step(batch[0].shape[0])  # summary.json resources
        # a host sync; free on CPU, and a diverged run must stop. Under DDP every rank must stop at
        # the same step (a rank left waiting in the gradient all-reduce would hang): the summed
        # loss is non-finite on every rank as soon as one rank's loss is.
        checked = all_reduce_sum(loss.detach().double().clone()) if world()[1] > 1 else loss.detach()
        if not torch.isfinite(checked):
            current = hooks.context.experience
            experience = current.index if current is not None else 0
            raise TrainingDiverged(float(checked), self.trainer.global_step + 1, experience)
        self.last_loss = loss.detach()
        self._log_loss()
        return loss

    def _log_loss(self) -> None:
        """``train/loss`` every ``log_every_n_steps`` steps, at the step count it completes.

        Evaluations are logged at ``cl/global_iter`` = steps done; Lightning's ``self.log`` would
        put this step's loss at the count *before* it (9, 19, ... beside evaluations at 10, 20, ...),
        so the loss goes to the loggers directly, under the same x-axis. ``self.log`` would also
        cost its bookkeeping on every step (about a GRU-16 training step on CPU, benchmarks/e2e.py).
        """
        trainer = self.trainer
        done = trainer.global_step + 1
        if not trainer.loggers or done % trainer.log_every_n_steps:
            return
        metrics = {"train/loss": float(self.last_loss), "cl/global_iter": done}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=done)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # a strategy may train parameters other than the module's (hypernet: the generator)
        optimizer = self.hooks.configure_optimizer(self.optimizer_factory)
        if optimizer is None:
            optimizer = self.optimizer_factory(self.parameters())
        if self.device.type == "cpu":
            skip_graph_capture_check(optimizer)
        return optimizer

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = "cpu", **kwargs: Any) -> "ContinualModule":  # type: ignore[override]
        """The model of a clplat boundary checkpoint, rebuilt from the run config it carries.

        Lightning's version calls ``__init__`` with saved hyperparameters; this module is made of
        objects (backbone, head, strategy) that the run's config builds, so that config is what
        the checkpoint stores and what rebuilds them (``clplat.loading.model_from_checkpoint``).
        """
        from clplat.loading import model_from_checkpoint

        if kwargs:
            raise TypeError(f"load_from_checkpoint takes no other arguments for a clplat checkpoint: {sorted(kwargs)}")
        return model_from_checkpoint(checkpoint_path, map_location)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["clplat_strategy"] = self.hooks.state_dict()
        checkpoint["clplat_usage"] = self.hooks.usage.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "clplat_strategy" in checkpoint:
            self.hooks.load_state_dict(checkpoint["clplat_strategy"])
        if "clplat_usage" in checkpoint:
            self.hooks.usage.load_state_dict(checkpoint["clplat_usage"])
