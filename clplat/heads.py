"""Classification heads: one shared head (class- and domain-IL) or one head per task (task-IL).

Both return logits over the *global* label space so that targets are never remapped: the
multi-head fills the classes outside a sample's task with ``-inf``, which cross-entropy and
``argmax`` handle exactly, so strategies, buffers and the evaluator treat both heads alike.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from clplat.config import check_values
from clplat.errors import ConfigError
from clplat.stream import Scenario, Stream


class SingleHead(nn.Module):
    """A linear classifier over all classes, optionally masked to the classes seen so far."""

    def __init__(self, in_features: int, num_classes: int, mask_unseen: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)
        self.mask_unseen = mask_unseen
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def observe_classes(self, classes: Iterable[int]) -> None:
        """Called at each experience start: its classes become 'seen'."""
        self.seen[list(classes)] = True

    def forward(self, features: Tensor, task: Tensor | None = None) -> Tensor:
        logits = self.linear(features)
        if self.mask_unseen:
            logits = logits.masked_fill(~self.seen, float("-inf"))
        return logits


class MultiHead(nn.Module):
    """One linear head per task, evaluated for all tasks in one matmul and gathered per sample.

    Computing every head for every sample costs ``num_tasks x classes_per_task`` outputs, the
    same as a single head over all classes for split streams, and avoids a Python loop over the
    tasks present in a mixed (replay) batch.
    """

    def __init__(self, in_features: int, task_classes: Sequence[Sequence[int]], num_classes: int):
        super().__init__()
        if not task_classes or any(len(c) == 0 for c in task_classes):
            raise ValueError("MultiHead needs a non-empty class list for every task")
        self.num_tasks = len(task_classes)
        self.num_classes = num_classes
        width = max(len(c) for c in task_classes)
        self.width = width
        self.linear = nn.Linear(in_features, self.num_tasks * width)
        # global class of each (task, local output); padding points at an extra, dropped column
        index = torch.full((self.num_tasks, width), num_classes, dtype=torch.long)
        for t, classes in enumerate(task_classes):
            index[t, : len(classes)] = torch.tensor(sorted(classes), dtype=torch.long)
        self.register_buffer("class_index", index)

    def observe_classes(self, classes: Iterable[int]) -> None:
        """Task heads are fixed by the stream; nothing to update."""

    def forward(self, features: Tensor, task: Tensor | None = None) -> Tensor:
        if task is None:
            raise ValueError("MultiHead needs the task id of every sample")
        local = self.linear(features).view(-1, self.num_tasks, self.width)
        local = local[torch.arange(local.shape[0], device=local.device), task]
        logits = local.new_full((local.shape[0], self.num_classes + 1), float("-inf"))
        logits.scatter_(1, self.class_index[task], local)
        return logits[:, : self.num_classes]


def build_head(head_type: str, mask_unseen: bool, stream: Stream, in_features: int) -> nn.Module:
    """Choose and build the head for ``stream`` (``auto``: multi-head exactly for task-IL)."""
    check_values("head", {"type": head_type, "mask_unseen": mask_unseen})
    if head_type == "auto":
        head_type = "multi" if stream.scenario is Scenario.TASK_INCREMENTAL else "single"
    if head_type == "multi":
        if stream.scenario is not Scenario.TASK_INCREMENTAL:
            raise ConfigError(
                "head.type", "multi",
                f"a multi-head needs task ids at test time, but stream {stream.name!r} is "
                f"{stream.scenario.value}; use head.type=single or a task-incremental stream",
            )
        if mask_unseen:
            raise ConfigError("head.mask_unseen", True, "only applies to head.type=single")
        return MultiHead(in_features, stream.task_classes, stream.num_classes)
    return SingleHead(in_features, stream.num_classes, mask_unseen)
