"""Methods that keep one solution per task (a hypernetwork's embeddings, one network per task)
predict through the same rule: the sample's own task with task ids, else the most confident task."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clplat.errors import ConfigError
from clplat.stream import Scenario, Stream

INFERENCE = ("auto", "given", "entropy")
#: classes outside the task chosen by entropy get this log-probability: finite, so the
#: evaluator's loss stays finite when the task is guessed wrong; argmax is unaffected
OUTSIDE_LOGPROB = math.log(1e-6)


def resolve_task_inference(choice: str, stream: Stream) -> str:
    """``given`` or ``entropy`` for ``stream`` (``auto``: given ids on task-IL streams only)."""
    if choice == "auto":
        return "given" if stream.scenario is Scenario.TASK_INCREMENTAL else "entropy"
    if choice == "given" and stream.scenario is not Scenario.TASK_INCREMENTAL:
        raise ConfigError(".task_inference", "given", f"needs task ids at test time, but stream "
                          f"{stream.name!r} is {stream.scenario.value}; use auto or entropy")
    return choice


def task_class_mask(stream: Stream) -> Tensor:
    """``(num_tasks, num_classes)``: True where a class belongs to a task."""
    mask = torch.zeros(stream.num_tasks, stream.num_classes, dtype=torch.bool)
    for t, classes in enumerate(stream.task_classes):
        mask[t, list(classes)] = True
    return mask


def lowest_entropy(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``logits (J, B, C)`` with ``-inf`` outside each candidate's classes -> (chosen index ``(B,)``,
    log-probabilities of the chosen candidate ``(B, C)``, ``-inf`` outside its classes)."""
    logp = torch.log_softmax(logits, dim=2)
    plogp = torch.where(torch.isfinite(logp), logp.exp() * logp, torch.zeros_like(logp))
    entropy = -plogp.sum(dim=2)  # (J, B)
    choice = entropy.argmin(dim=0)
    chosen = logp[choice, torch.arange(logp.shape[1], device=logp.device)]
    return choice, chosen


def with_finite_floor(chosen: Tensor) -> Tensor:
    """The chosen candidate's log-probabilities with ``OUTSIDE_LOGPROB`` outside its classes."""
    return torch.where(torch.isfinite(chosen), chosen, torch.full_like(chosen, OUTSIDE_LOGPROB))
