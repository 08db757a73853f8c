"""Refresh learning: unlearn, then relearn (a plugin for any base strategy).

Wang, Li, Shen & Huang 2024, "A Unified and General Framework for Continual Learning" (ICLR;
arXiv:2403.13249); the step follows the authors' code (``joey-wang123/CL-refresh-learning``,
DER++ and ER with refresh).

Before every training step of the base strategy, the current stream batch (no buffer data) is
first *unlearned*: one gradient-ascent step on its cross-entropy, preconditioned by the inverse
diagonal Fisher and with Gaussian noise (a Langevin-like step, the paper's "refresh")::

    g = grad CE(f_theta(x), y)                         per parameter tensor p:
    u = (||p|| / (||g|| + eps)) * g                    ascent direction rescaled to ||p||
    p <- p + gamma * (1 / (1 + damping * F)) * (u + noise_std * N(0, I))

and then the base strategy *relearns* with its ordinary step at the perturbed parameters. ``F``
is the diagonal Fisher of the last task (``strategies/fisher.py``), re-estimated at every task
boundary as ``F <- fisher_decay * F + F_new``. Before the first boundary ``F = 0``.

Defaults are the constants hard-coded in the authors' code: ``gamma`` = 1e-5 (their ``delta``),
``damping`` = 1e-3 (``1 / (1 + 0.001 F)`` approximates the inverse Fisher), ``noise_std`` = 1e-3,
``fisher_decay`` = 1e-5 (so ``F`` is effectively the latest task's), one unlearning step per
training step. Their ascent uses a scratch copy of the model and SGD with lr 0.01; since the step
is rescaled per tensor the learning rate cancels, and we take the gradient directly.
**Deviations:** the noise comes from the plugin's own seeded generator (checkpointed), the Fisher
uses a random subset of ``fisher_samples`` training samples in eval mode (``fisher.py``), and it
is not computed after the last task (it would never be used).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.errors import check_float, check_int
from clplat.stream import Experience
from clplat.strategy import Batch, Plugin, seeded_generator, tensor_nbytes

from .common import named_trainable, to_device, zeros_like_params
from .fisher import diagonal_fisher

EPS = 1e-20


class Refresh(Plugin):
    """Fisher-scaled, norm-rescaled, noisy gradient ascent on the batch before the base step."""

    name = "refresh"

    def __init__(self, gamma: float = 1e-5, damping: float = 1e-3, noise_std: float = 1e-3,
                 unlearn_steps: int = 1, fisher_decay: float = 1e-5, fisher_samples: int | None = 200,
                 seed: int = 0):
        super().__init__()
        check_float("plugin.refresh.gamma", gamma, 0.0)
        check_float("plugin.refresh.damping", damping, 0.0)
        check_float("plugin.refresh.noise_std", noise_std, 0.0)
        check_int("plugin.refresh.unlearn_steps", unlearn_steps, 0)
        check_float("plugin.refresh.fisher_decay", fisher_decay, 0.0, 1.0)
        check_int("plugin.refresh.fisher_samples", fisher_samples, 1, allow_none=True)
        self.gamma, self.damping, self.noise_std = float(gamma), float(damping), float(noise_std)
        self.unlearn_steps, self.fisher_decay, self.fisher_samples = unlearn_steps, float(fisher_decay), fisher_samples
        self.generator = seeded_generator(seed, 23)  # noise
        self.fisher_generator = seeded_generator(seed, 29)  # Fisher subsets
        self.fisher: dict[str, Tensor] = {}
        self.unlearn_count = 0

    def setup(self, module, stream) -> None:
        super().setup(module, stream)
        self.fisher = zeros_like_params(module)

    def before_experience(self, experience: Experience) -> None:
        super().before_experience(experience)
        self.fisher = to_device(self.fisher, next(self.module.parameters()).device)

    @torch.no_grad()
    def _perturb(self, params: list[tuple[str, Tensor]], grads: tuple[Tensor | None, ...]) -> None:
        for (name, p), g in zip(params, grads):
            if g is None:
                continue
            u = (p.norm() / (g.norm() + EPS)) * g
            if self.noise_std > 0:
                noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
                u = u + self.noise_std * noise
            p.add_(self.gamma * u / (1.0 + self.damping * self.fisher[name]))

    def unlearn(self, batch: Batch) -> None:
        """The unlearning step(s) on the stream batch, in place."""
        x, y, task = batch
        named = named_trainable(self.module)
        params = [p for _, p in named]
        for _ in range(self.unlearn_steps):
            loss = self.criterion(self.module(x, task), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            self._perturb(named, grads)
            self.unlearn_count += 1
            self.count_extra_steps("unlearn", 1, x.shape[0])

    def before_training_step(self, batch: Batch) -> None:
        if self.gamma > 0 and self.unlearn_steps > 0:
            self.unlearn(batch)

    def after_experience(self, experience: Experience) -> None:
        if experience.index == len(self.stream) - 1:
            return
        new = diagonal_fisher(self.module, experience.train, self.fisher_samples, self.fisher_generator)
        n = len(experience.train)
        self.count_samples("refresh_fisher", n if self.fisher_samples is None else min(self.fisher_samples, n))
        self.fisher = {n: self.fisher_decay * self.fisher[n] + f for n, f in new.items()}

    def memory_parts(self) -> dict[str, int]:
        return {"refresh_fisher": tensor_nbytes(self.fisher)}

    def summary(self) -> dict[str, Any]:
        return {"refresh_unlearn_steps": self.unlearn_count}

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": self.fisher, "generator": self.generator.get_state(),
                "fisher_generator": self.fisher_generator.get_state(), "unlearn_count": self.unlearn_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fisher = dict(state["fisher"])
        self.generator.set_state(state["generator"])
        self.fisher_generator.set_state(state["fisher_generator"])
        self.unlearn_count = int(state["unlearn_count"])
