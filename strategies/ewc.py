"""Elastic Weight Consolidation and its online form.

- EWC: Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks"
  (PNAS; arXiv:1612.00796). One quadratic penalty per past task, each with that task's diagonal
  Fisher and its end-of-task parameters as anchor.
- Online EWC: Schwarz et al. 2018, "Progress & Compress" (arXiv:1805.06370), as in mammoth
  ``models/ewc_on.py``: one running Fisher ``F <- gamma * F + F_new`` and one anchor (the latest
  end-of-task parameters).

Penalty (both): ``lambda * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` added to the
cross-entropy. This is mammoth's form (no 1/2), so our ``lambda`` equals Kirkpatrick's lambda/2 and
mammoth's ``e_lambda``. The Fisher is mammoth's confidence-weighted per-sample estimate, averaged
over the samples (``strategies/parts/fisher.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.errors import check_choice, check_float, check_int
from clplat.stream import Experience
from clplat.strategy import Batch, Strategy, tensor_nbytes
from clplat.seeds import SeedStream, seeded_generator

from .parts.common import named_trainable, snapshot, to_device
from .parts.fisher import diagonal_fisher

MODES = ("separate", "online")


class EWC(Strategy):
    """Cross-entropy plus a Fisher-weighted quadratic pull towards past tasks' parameters."""

    name = "ewc"
    # every rank estimates the Fisher on the same seeded subset with the same weights: identical terms
    supports_ddp = True
    checkpointed = ("fishers", "anchors", "generator")

    def __init__(self, ewc_lambda: float = 10.0, mode: str = "separate", gamma: float = 1.0,
                 fisher_samples: int | None = 200, seed: int = 0):
        super().__init__()
        check_float(".ewc_lambda", ewc_lambda, 0.0)
        check_choice(".mode", mode, MODES)
        check_float(".gamma", gamma, 0.0, 1.0)
        check_int(".fisher_samples", fisher_samples, 1, allow_none=True)
        self.ewc_lambda, self.mode, self.gamma = float(ewc_lambda), mode, float(gamma)
        self.fisher_samples = fisher_samples
        self.name = "ewc" if mode == "separate" else "ewc_online"
        self.generator = seeded_generator(seed, SeedStream.EWC)
        # separate: one (Fisher, anchor) per past task; online: at most one pair
        self.fishers: list[dict[str, Tensor]] = []
        self.anchors: list[dict[str, Tensor]] = []

    def before_experience(self, experience: Experience) -> None:
        super().before_experience(experience)
        device = next(self.module.parameters()).device  # a resumed state arrives on the CPU
        self.fishers = [to_device(f, device) for f in self.fishers]
        self.anchors = [to_device(a, device) for a in self.anchors]

    def penalty(self) -> Tensor:
        """``lambda * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` (zero before the first boundary)."""
        named = named_trainable(self.module)
        total = named[0][1].new_zeros(())
        for fisher, anchor in zip(self.fishers, self.anchors):
            for name, p in named:
                total = total + (fisher[name] * (p - anchor[name]).pow(2)).sum()
        return self.ewc_lambda * total

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        loss = self.criterion(self.module(x, task), y)
        if self.fishers and self.ewc_lambda > 0:
            loss = loss + self.penalty()
        return loss

    def after_experience(self, experience: Experience) -> None:
        if experience.index == len(self.stream) - 1:
            return  # nothing is trained after the last task: its Fisher would never be used
        fisher = diagonal_fisher(self.module, experience.train, self.fisher_samples, self.generator)
        n = len(experience.train)
        self.count_samples("fisher", n if self.fisher_samples is None else min(self.fisher_samples, n))
        anchor = snapshot(self.module)
        if self.mode == "separate" or not self.fishers:
            self.fishers.append(fisher)
            self.anchors.append(anchor)
        else:
            self.fishers[0] = {n: self.gamma * self.fishers[0][n] + f for n, f in fisher.items()}
            self.anchors[0] = anchor

    def memory_parts(self) -> dict[str, int]:
        return {"fisher": tensor_nbytes(self.fishers), "anchors": tensor_nbytes(self.anchors)}

    def summary(self) -> dict[str, Any]:
        return {"ewc_penalty_terms": len(self.fishers),
                "ewc_fisher_mean": [float(torch.cat([f.flatten() for f in F.values()]).mean()) for F in self.fishers]}
