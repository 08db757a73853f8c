"""One network per task: the reference a task-conditioned hypernetwork claims to match while compressing.

von Oswald et al. (ICLR 2020) argue that a hypernetwork smaller than its target network keeps
every task's solution in fewer parameters than storing one network per task. This strategy is
that uncompressed alternative: each new task trains the backbone and head from the run's initial
weights (``init: fresh``, independent networks) or from the previous task's network
(``init: previous``, fine-tuning transfer), and a finished task's weights are kept. Nothing is
forgotten by construction; the cost is memory, ``(T - 1)`` copies of the network besides the live
one, which ``summary.json``'s resources report.

Prediction: with task ids (task-incremental) each sample is run through its task's network. Without
(class- and domain-incremental), every trained network predicts over its own task's classes and the
most confident one (lowest entropy) is used, the same task inference as the hypernetwork's HNET+ENT.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from clplat.context import RunContext
from clplat.errors import check_choice
from clplat.stream import Experience
from clplat.strategy import Strategy, tensor_nbytes

from .parts.task_inference import (INFERENCE, lowest_entropy, resolve_task_inference, task_class_mask,
                                   with_finite_floor)

INITS = ("fresh", "previous")


class SeparateNetworks(Strategy):
    """Train one backbone + head per task and predict each task with its own network."""

    name = "separate"
    supports_ddp = True  # every rank loads the same stored weights at the same boundaries
    checkpointed = ("networks", "initial", "current")

    def __init__(self, init: str = "fresh", task_inference: str = "auto") -> None:
        super().__init__()
        check_choice(".init", init, INITS)
        check_choice(".task_inference", task_inference, INFERENCE)
        self.init, self.task_inference = init, task_inference
        self.networks: dict[int, dict[str, Tensor]] = {}  # task id -> weights, every task but the live one
        self.initial: dict[str, Tensor] = {}
        self.current: int | None = None
        self.class_mask: Tensor | None = None

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.task_inference = resolve_task_inference(self.task_inference, context.stream)
        self.initial = self._weights()
        self.class_mask = task_class_mask(context.stream)

    def _weights(self) -> dict[str, Tensor]:
        """A copy of the live network's weights (parameters and buffers)."""
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def _load(self, weights: dict[str, Tensor]) -> None:
        """Copy ``weights`` into the live network in place (optimizers keep their parameters)."""
        self.module.load_state_dict(weights)

    def before_experience(self, experience: Experience) -> None:
        t = experience.task_id
        if t == self.current:
            return  # the same task goes on with its own network
        if self.current is not None:
            self.networks[self.current] = self._weights()
        if t in self.networks:
            self._load(self.networks.pop(t))  # a task that recurs continues its network
        elif self.current is not None and self.init == "fresh":
            self._load(self.initial)
        self.current = t

    def _logits(self, x: Tensor, task: Tensor, t: int) -> Tensor:
        """Task ``t``'s network on ``x``, logits masked to ``t``'s classes (the live module for the
        task being trained, and for a task not trained yet)."""
        weights = self.networks.get(t)
        if weights is None:
            logits = self.module(x, task)
        else:
            logits = functional_call(self.module, {k: v.to(x.device) for k, v in weights.items()}, (x, task))
        return logits.masked_fill(~self.class_mask[t].to(logits.device), float("-inf"))

    def predict(self, x: Tensor, task: Tensor) -> Tensor:
        if self.task_inference == "given":
            out = x.new_full((x.shape[0], self.stream.num_classes), float("-inf"))
            for t in task.unique().tolist():
                rows = task == t
                out[rows] = self._logits(x[rows], task[rows], int(t))
            return out
        trained = [*self.networks, *([] if self.current is None else [self.current])]
        candidates = sorted(trained) or [0]
        logits = torch.stack([self._logits(x, torch.full_like(task, t), t) for t in candidates])
        _, chosen = lowest_entropy(logits)
        return with_finite_floor(chosen)

    def memory_parts(self) -> dict[str, int]:
        """The stored networks (every trained task's but the live one's) and, with ``init: fresh``,
        the initial weights each new task starts from."""
        parts = {"networks": tensor_nbytes(self.networks)}
        if self.init == "fresh":
            parts["initial_weights"] = tensor_nbytes(self.initial)
        return parts

    def summary(self) -> dict[str, Any]:
        return {"separate_networks": len(self.networks) + (self.current is not None),
                "separate_params_per_network": sum(p.numel() for p in self.module.parameters()),
                "separate_task_inference": self.task_inference}

    def after_load_state(self) -> None:
        self.networks = {int(t): w for t, w in self.networks.items()}
        self.current = None if self.current is None else int(self.current)


__all__ = ["SeparateNetworks", "INITS"]
