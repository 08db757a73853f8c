"""Split scenarios: a source's classes are dealt out to experiences (Split MNIST and friends).

Targets keep their *global* labels (class 7 is 7 in every experience); a multi-head model masks
its output to ``Stream.task_classes`` instead of relabelling, so one label space serves class-,
task- and domain-incremental runs alike and replayed samples never need translating.

Every experience carries ``task_id = experience index`` in every scenario: the evaluator needs
to know which experience a test sample came from. Whether the *model* may use that id at test
time is what ``Stream.scenario`` says (task-incremental: yes; class-incremental: no).
"""

from __future__ import annotations

import numpy as np
import torch

from clplat.errors import ConfigError, check_choice, check_int
from clplat.stream import Experience, Scenario, SequenceData, Stream

from .sources.base import SourceData, require_source


def class_order(num_classes: int, order_seed: int | None) -> list[int]:
    """``0 .. C-1`` when ``order_seed`` is None, else a seeded permutation of it.

    Uses numpy's legacy ``RandomState``, whose stream numpy keeps fixed across versions, so a
    published ``order_seed`` names the same class order on any install.
    """
    if order_seed is None:
        return list(range(num_classes))
    return [int(c) for c in np.random.RandomState(order_seed).permutation(num_classes)]


def _select(x: torch.Tensor, y: torch.Tensor, classes: list[int], task_id: int) -> SequenceData:
    mask = torch.isin(y, torch.tensor(classes, dtype=y.dtype))
    return SequenceData.with_task(x[mask], y[mask], task_id)


def split_stream(
    source: SourceData,
    n_experiences: int = 5,
    classes_per_experience: int | None = None,
    order_seed: int | None = None,
    task_labels: bool = False,
    name: str | None = None,
) -> Stream:
    """Deal ``source``'s classes to ``n_experiences`` experiences of ``classes_per_experience``.

    ``classes_per_experience`` None means ``num_classes // n_experiences``; either way the
    experiences must use every class exactly once (``n_experiences * classes_per_experience ==
    num_classes``), so a typo cannot silently drop classes. ``order_seed`` None keeps the natural
    order (experience 0 gets classes 0, 1, ...). ``task_labels`` chooses task-incremental
    (model gets task ids at test time) over class-incremental.
    """
    source = require_source(source)
    num_classes = source.num_classes
    check_int(".n_experiences", n_experiences, minimum=1)
    check_int(".classes_per_experience", classes_per_experience, minimum=1, allow_none=True)
    check_int(".order_seed", order_seed, minimum=0, allow_none=True)
    check_choice(".task_labels", task_labels, (True, False))
    if n_experiences > num_classes:
        raise ConfigError(
            ".n_experiences", n_experiences,
            f"must be at most the {num_classes} classes of {source.name}",
        )
    per_exp = num_classes // n_experiences if classes_per_experience is None else classes_per_experience
    if per_exp * n_experiences != num_classes:
        key, value = (
            (".n_experiences", n_experiences)
            if classes_per_experience is None
            else (".classes_per_experience", classes_per_experience)
        )
        raise ConfigError(
            key, value,
            f"n_experiences x classes_per_experience must equal the {num_classes} classes of "
            f"{source.name} (got {n_experiences} x {per_exp})",
        )

    order = class_order(num_classes, order_seed)
    experiences = []
    for k in range(n_experiences):
        classes = sorted(order[k * per_exp : (k + 1) * per_exp])
        experiences.append(
            Experience(
                index=k,
                task_id=k,
                train=_select(source.train_x, source.train_y, classes, k),
                test=_select(source.test_x, source.test_y, classes, k),
                classes=tuple(classes),
                name=f"exp{k}:classes={','.join(map(str, classes))}",
            )
        )
    return Stream(
        name=name or f"split_{source.name}" + ("_til" if task_labels else ""),
        scenario=Scenario.TASK_INCREMENTAL if task_labels else Scenario.CLASS_INCREMENTAL,
        experiences=tuple(experiences),
        num_classes=num_classes,
        input_shape=source.input_shape,
        metadata={
            "builder": "split",
            "source": source.name,
            "source_metadata": source.metadata,
            "n_experiences": n_experiences,
            "classes_per_experience": per_exp,
            "order_seed": order_seed,
            "class_order": order,
            "task_labels": task_labels,
        },
    )
