"""Revisit schedules of power-law rehearsal: which past task is revisited how often.

Gandhi, Shah, Marupudi & Varma 2024, "Catastrophic Interference is Mitigated in Naturalistic
Power-Law Learning Environments" (arXiv:2401.10393; v3 retitled "Natural Mitigation of
Catastrophic Interference: Continual Learning in Power-Law Learning Environments"), after
Anderson & Schooler 1991 ("Reflections of the environment in memory"): in natural environments
the chance that something is needed again decays as a power of the time since it was last
needed. The paper rehearses past tasks with that statistic and compares it with schedules that
do not have it: uniform rehearsal and (v3) an exponential decay.

At time ``now`` (the index of the current experience) task ``i`` has age ``dt_i = now - last_seen_i``
(>= 1 for every past task) and weight::

    power_law:    dt_i ** -exponent
    exponential:  exp(-decay * dt_i)
    uniform:      1

normalised to probabilities ``p_i``. A rehearsal of ``R`` samples draws the number of samples of
each task from ``Multinomial(R, p)``, i.e. every rehearsed sample independently revisits task ``i``
with probability ``p_i``.

Pure functions plus a small clock, shared by the strategy (``strategies/power_law.py``) and the
buffer-free environment (``streams/power_law_env.py``) so both follow the same law.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from clplat.errors import ConfigError, check_choice, check_float

SCHEDULES = ("power_law", "exponential", "uniform")


def check_schedule(schedule: str, exponent: float, decay: float) -> None:
    """Validate schedule arguments, options of the strategy or stream that takes them (relative keys)."""
    check_choice(".schedule", schedule, SCHEDULES)
    check_float(".exponent", exponent, 0.0)
    check_float(".decay", decay, 0.0)


def revisit_weights(ages: Tensor, schedule: str, exponent: float = 1.0, decay: float = 1.0) -> Tensor:
    """Unnormalised revisit weights of tasks whose ages (time since last seen, >= 1) are ``ages``."""
    ages = ages.to(torch.float64)
    if bool((ages <= 0).any()):
        raise ValueError(f"ages must be >= 1 (time since a past task was last seen), got {ages.tolist()}")
    if schedule == "power_law":
        return ages.pow(-exponent)
    if schedule == "exponential":
        return torch.exp(-decay * ages)
    if schedule == "uniform":
        return torch.ones_like(ages)
    raise ConfigError(".schedule", schedule, "allowed values are " + ", ".join(SCHEDULES))


def revisit_probabilities(ages: Tensor, schedule: str, exponent: float = 1.0, decay: float = 1.0) -> Tensor:
    """``revisit_weights`` normalised to sum to one."""
    weights = revisit_weights(ages, schedule, exponent, decay)
    return weights / weights.sum()


def sample_counts(probabilities: Tensor, total: int, generator: torch.Generator) -> Tensor:
    """``Multinomial(total, probabilities)``: how many of ``total`` rehearsed samples go to each task."""
    if total <= 0 or probabilities.numel() == 0:
        return torch.zeros(probabilities.numel(), dtype=torch.long)
    draws = torch.multinomial(probabilities.to(torch.float64), total, replacement=True, generator=generator)
    return torch.bincount(draws, minlength=probabilities.numel())


@dataclass
class RecencyClock:
    """When each task was last seen (trained on, or rehearsed when ``reset_recency``)."""

    last_seen: dict[int, int] = field(default_factory=dict)

    def see(self, task: int, now: int) -> None:
        self.last_seen[task] = now

    def ages(self, tasks: list[int], now: int) -> Tensor:
        return torch.tensor([now - self.last_seen[t] for t in tasks], dtype=torch.float64)

    def state_dict(self) -> dict[str, Any]:
        return {"last_seen": dict(self.last_seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_seen = {int(k): int(v) for k, v in state["last_seen"].items()}


def plan_rehearsal(clock: RecencyClock, tasks: list[int], now: int, total: int, schedule: str, exponent: float,
                   decay: float, generator: torch.Generator) -> dict[int, int]:
    """Samples to rehearse per past task at time ``now`` (tasks with zero draws are left out)."""
    if not tasks or total <= 0:
        return {}
    probs = revisit_probabilities(clock.ages(tasks, now), schedule, exponent, decay)
    counts = sample_counts(probs, total, generator)
    return {t: int(c) for t, c in zip(tasks, counts.tolist()) if c > 0}


__all__ = ["SCHEDULES", "check_schedule", "revisit_weights", "revisit_probabilities", "sample_counts",
           "RecencyClock", "plan_rehearsal"]
