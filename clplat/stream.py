"""The data contract between streams, strategies and the evaluator.

Everything a backbone sees is a sequence batch ``(B, T, F)``. Embedded sources are small, so an
experience holds plain tensors: loaders slice them directly instead of indexing a ``Dataset``
sample by sample, which is what keeps per-iteration work cheap.

``clplat`` defines the types only; the scenario builders live in ``clplat.streams`` (the
repository's top-level ``streams/`` folder), which imports this module (never the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Iterator, Sequence

import torch
from torch import Tensor


class Scenario(str, Enum):
    """How experiences relate to each other and what the model is told at test time."""

    CLASS_INCREMENTAL = "class_incremental"  # new classes per experience, no task id at test time
    TASK_INCREMENTAL = "task_incremental"  # task id given at train and test time (multi-head)
    DOMAIN_INCREMENTAL = "domain_incremental"  # same classes, shifting input distribution


@dataclass(frozen=True)
class SequenceData:
    """A labelled set of sequences kept as tensors.

    ``x`` is ``(N, T, F)`` float32, ``y`` is ``(N,)`` int64 with *global* class labels, ``task``
    is ``(N,)`` int64 with the task id of every sample (constant within an experience; mixed in
    joint/cumulative data and replay batches).
    """

    x: Tensor
    y: Tensor
    task: Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 3:
            raise ValueError(f"SequenceData.x must be (N, T, F), got shape {tuple(self.x.shape)}")
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.task.shape != (n,):
            raise ValueError(
                f"SequenceData: y {tuple(self.y.shape)} and task {tuple(self.task.shape)} "
                f"must both be ({n},)"
            )

    @classmethod
    def with_task(cls, x: Tensor, y: Tensor, task_id: int) -> "SequenceData":
        """Build data whose samples all belong to one task."""
        return cls(x.float(), y.long(), torch.full((x.shape[0],), task_id, dtype=torch.long))

    @classmethod
    def concat(cls, parts: Sequence["SequenceData"]) -> "SequenceData":
        """Concatenate several sets (joint and cumulative training)."""
        if not parts:
            raise ValueError("SequenceData.concat needs at least one part")
        return cls(
            torch.cat([p.x for p in parts]),
            torch.cat([p.y for p in parts]),
            torch.cat([p.task for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: Tensor) -> "SequenceData":
        return SequenceData(self.x[index], self.y[index], self.task[index])

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(int(c) for c in torch.unique(self.y).tolist())


@dataclass(frozen=True)
class Experience:
    """One step of the stream: the data of one task and what is known about it."""

    index: int
    task_id: int
    train: SequenceData
    test: SequenceData
    classes: tuple[int, ...]
    name: str
    valid: SequenceData | None = None  # held out from the training data (``hold_out_validation``)

    def evaluation_data(self, split: str) -> SequenceData:
        """The data the evaluator scores: ``test``, or the held-out ``validation`` split."""
        if split == "test":
            return self.test
        if split == "validation":
            if self.valid is None:
                raise ValueError(f"experience {self.index} has no validation data (hold_out_validation not applied)")
            return self.valid
        raise ValueError(f"unknown split {split!r}: test | validation")


@dataclass(frozen=True)
class Stream:
    """An ordered sequence of experiences plus what strategies and heads need to know.

    Streams are deterministic functions of their config and seeds, so two runs with the same
    config see identical data in identical order.
    """

    name: str
    scenario: Scenario
    experiences: tuple[Experience, ...]
    num_classes: int
    input_shape: tuple[int, int]  # (T, F)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.experiences:
            raise ValueError(f"stream {self.name!r} has no experiences")
        for i, exp in enumerate(self.experiences):
            if exp.index != i:
                raise ValueError(f"stream {self.name!r}: experience {i} has index {exp.index}")
            if tuple(exp.train.x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"stream {self.name!r}: experience {i} has input shape "
                    f"{tuple(exp.train.x.shape[1:])}, expected {tuple(self.input_shape)}"
                )

    @property
    def num_tasks(self) -> int:
        """Number of distinct task ids (the number of heads a multi-head model needs)."""
        return 1 + max(exp.task_id for exp in self.experiences)

    @property
    def task_classes(self) -> tuple[tuple[int, ...], ...]:
        """Classes of each task id, in task-id order (what a multi-head model masks to)."""
        by_task: dict[int, set[int]] = {}
        for exp in self.experiences:
            by_task.setdefault(exp.task_id, set()).update(exp.classes)
        return tuple(tuple(sorted(by_task.get(t, ()))) for t in range(self.num_tasks))

    @property
    def has_task_labels(self) -> bool:
        """Whether the model may use task ids at test time."""
        return self.scenario is Scenario.TASK_INCREMENTAL

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, index: int) -> Experience:
        return self.experiences[index]

    def describe(self) -> str:
        """One line a run prints at start so the reader knows what was trained."""
        T, F = self.input_shape
        held_out = sum(len(e.valid) for e in self if e.valid is not None)
        return (
            f"{self.name}: {self.scenario.value}, {len(self)} experiences, "
            f"{self.num_classes} classes, sequences of {T} steps x {F} features, "
            f"{sum(len(e.train) for e in self)} train / "
            + (f"{held_out} validation / " if held_out else "")
            + f"{sum(len(e.test) for e in self)} test samples"
        )


VALIDATION_SALT = 3571  # separates the validation draw from other generators seeded by the same number


def stratified_holdout(y: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Boolean mask of the samples held out: ``round(fraction * n_c)`` of each class c, drawn at
    random with ``generator``.

    Stratified so the validation split has the class proportions of the training data (a plain
    random draw can leave a class of a small task out entirely). Every class with at least two
    samples gives at least one and keeps at least one for training.
    """
    held = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y).tolist():
        index = torch.nonzero(y == c).flatten()
        n = len(index)
        k = min(max(round(fraction * n), 1), n - 1) if n >= 2 and fraction > 0 else 0
        held[index[torch.randperm(n, generator=generator)[:k]]] = True
    return held


def hold_out_validation(stream: Stream, fraction: float, seed: int = 0) -> Stream:
    """``stream`` with ``fraction`` of each experience's training data moved to ``Experience.valid``.

    The held-out samples leave the training data (nothing trains on them, joint and cumulative
    training included) and are drawn per experience and class from ``seed`` and the experience
    index, so the split is the same in every run of the stream whatever the run seed. Tuning
    scores this split (``eval.split=validation``); the test data stays untouched for reporting.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    experiences = []
    for exp in stream:
        generator = torch.Generator().manual_seed(hash((seed, VALIDATION_SALT, exp.index)) & 0x7FFF_FFFF_FFFF_FFFF)
        held = stratified_holdout(exp.train.y, fraction, generator)
        experiences.append(replace(exp, train=exp.train.subset(~held), valid=exp.train.subset(held)))
    metadata = {**stream.metadata, "validation_fraction": fraction, "validation_seed": seed}
    return replace(stream, experiences=tuple(experiences), metadata=metadata)
