"""Synaptic Intelligence.

Zenke, Poole & Ganguli 2017, "Continual Learning Through Synaptic Intelligence" (ICML;
arXiv:1703.04200); loss, defaults and gradient clipping as in mammoth ``models/si.py``.

Each parameter accumulates its contribution to the decrease of the loss along the training path,
``omega += -g * delta_theta`` over every optimizer step; at the end of a task it becomes an
importance ``Omega += omega / ((theta - theta*)^2 + xi)``, the anchor ``theta*`` moves to the
current parameters and ``omega`` restarts. Training minimises ``CE + c * sum Omega (theta - theta*)^2``.

**Deviation (measured path integral).** mammoth accumulates ``lr * g^2``, which equals
``-g * delta_theta`` only for plain SGD; with Adam (our default optimizer) it is not the path
integral. We measure ``delta_theta`` around each step (``before_optimizer_step`` /
``after_optimizer_step``), which is Zenke et al.'s definition for any optimizer and identical to
mammoth's for SGD. ``g`` is the gradient of the total (regularised) loss after clipping, as in
mammoth. The first anchor is the parameters at initialisation, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.context import RunContext
from clplat.errors import ConfigError, check_float
from clplat.stream import Experience
from clplat.strategy import Batch, Strategy, tensor_nbytes

from .parts.common import named_trainable, snapshot, to_device, zeros_like_params


class SI(Strategy):
    """Cross-entropy plus a path-integral importance-weighted pull towards the last anchor."""

    name = "si"
    # importance accumulates all-reduced gradients times shared parameter moves: identical on every rank
    supports_ddp = True
    checkpointed = ("anchor", "importance", "omega")

    def __init__(self, c: float = 0.1, xi: float = 0.1, clip_value: float | None = 1.0):
        super().__init__()
        check_float(".c", c, 0.0)
        check_float(".xi", xi, 0.0)
        if xi <= 0:
            raise ConfigError(".xi", xi, "must be a number > 0 (it keeps the importance finite)")
        check_float(".clip_value", clip_value, 0.0, allow_none=True)
        self.c, self.xi, self.clip_value = float(c), float(xi), clip_value
        self.anchor: dict[str, Tensor] = {}
        self.importance: dict[str, Tensor] = {}
        self.omega: dict[str, Tensor] = {}
        self._grads: dict[str, Tensor] | None = None
        self._before: dict[str, Tensor] | None = None

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        module = context.module
        self.anchor = snapshot(module)  # theta at initialisation
        self.importance = zeros_like_params(module)
        self.omega = zeros_like_params(module)

    def before_experience(self, experience: Experience) -> None:
        super().before_experience(experience)
        device = next(self.module.parameters()).device
        self.anchor = to_device(self.anchor, device)
        self.importance = to_device(self.importance, device)
        self.omega = to_device(self.omega, device)

    def penalty(self) -> Tensor:
        named = named_trainable(self.module)
        total = named[0][1].new_zeros(())
        for name, p in named:
            total = total + (self.importance[name] * (p - self.anchor[name]).pow(2)).sum()
        return self.c * total

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        return self.criterion(self.module(x, task), y) + self.penalty()

    def before_optimizer_step(self) -> None:
        named = named_trainable(self.module)
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_([p for _, p in named], self.clip_value)
        self._grads = {n: p.grad.detach().clone() for n, p in named if p.grad is not None}
        self._before = {n: p.detach().clone() for n, p in named if p.grad is not None}

    def after_optimizer_step(self, batch: Batch) -> None:
        if self._grads is None or self._before is None:
            return
        for name, p in named_trainable(self.module):
            if name in self._grads:
                self.omega[name].add_(-self._grads[name] * (p.detach() - self._before[name]))
        self._grads = self._before = None

    def after_experience(self, experience: Experience) -> None:
        for name, p in named_trainable(self.module):
            delta = p.detach() - self.anchor[name]
            self.importance[name].add_(self.omega[name] / (delta.pow(2) + self.xi))
            self.anchor[name] = p.detach().clone()
            self.omega[name].zero_()

    def memory_parts(self) -> dict[str, int]:
        """Held between steps (the per-step gradient and parameter copies are transient)."""
        return {"anchors": tensor_nbytes(self.anchor), "importance": tensor_nbytes(self.importance),
                "path_integral": tensor_nbytes(self.omega)}

    def summary(self) -> dict[str, Any]:
        flat = torch.cat([v.flatten() for v in self.importance.values()]) if self.importance else torch.zeros(1)
        return {"si_importance_mean": float(flat.mean()), "si_importance_max": float(flat.max())}
