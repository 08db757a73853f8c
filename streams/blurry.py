"""Blurry class-incremental scenarios: task boundaries that overlap.

Classes are dealt to experiences exactly as in ``split`` (same ``order_seed`` rule), which gives
every class a *home* experience. In a split stream all of a class's training samples live in its
home experience; here a share ``blur`` of them is moved to the neighbouring experiences, up to
``width`` experiences away on either side, with a share that decays linearly with the distance:
an experience at distance ``d`` gets weight ``width + 1 - d``, and the weights of the neighbours
that exist are normalised to ``blur``. So a class keeps exactly ``1 - blur`` of its samples at
home wherever its home is (at the ends of the stream its whole ``blur`` goes to the one side that
exists), and experience ``k`` sees some samples of the classes of ``k - 1``, ``k + 1`` (more) and
``k - 2``, ``k + 2`` (fewer): a smooth transition instead of a hard switch, like the "blurry"
setting of Aljundi et al. (CVPR 2019) and Bang et al. (Rainbow Memory, CVPR 2021), where a share
of each task's data comes from other tasks.

Samples are *moved*, not copied: every training sample appears exactly once in the stream, so a
blurry stream has the same data as the split stream with the same ``order_seed``. Per-class counts
are the weights times the class size, rounded by largest remainder (so they sum exactly); which
samples move is drawn from ``blur_seed``. Test sets are the home classes' test samples (disjoint,
as in split), so the accuracy matrix has the usual meaning. ``Experience.classes`` lists every
class present in the experience's *training* data (home and blurred), which is what
``head.mask_unseen`` must unmask before the first step (otherwise a blurred sample's target would
have a ``-inf`` logit).
"""

from __future__ import annotations

import numpy as np
import torch

from clplat.errors import ConfigError, check_float, check_int
from clplat.stream import Experience, Scenario, SequenceData, Stream

from .sources.base import SourceData, require_source
from .split import class_order


def blur_weights(n_experiences: int, home: int, blur: float, width: int) -> np.ndarray:
    """Share of a class whose home is ``home`` that goes to each experience ``(n_experiences,)``."""
    weights = np.zeros(n_experiences)
    neighbours = [j for j in range(n_experiences) if 0 < abs(j - home) <= width]
    if not neighbours or blur == 0:
        weights[home] = 1.0
        return weights
    raw = np.array([width + 1 - abs(j - home) for j in neighbours], dtype=np.float64)
    weights[neighbours] = blur * raw / raw.sum()
    weights[home] = 1.0 - blur
    return weights


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, as close to ``total * weights`` as rounding allows.

    Floors first, then gives the left-over samples to the largest fractional parts (ties to the
    lower index, via a stable sort), so counts are deterministic and never off by more than one.
    """
    exact = total * weights
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def blurry_stream(
    source: SourceData,
    n_experiences: int = 5,
    classes_per_experience: int | None = None,
    order_seed: int | None = None,
    blur: float = 0.1,
    width: int = 2,
    blur_seed: int = 0,
    name: str | None = None,
) -> Stream:
    """A class-incremental split of ``source`` whose boundaries are blurred (see the module docs).

    ``blur`` is the share of each class's training samples that leaves its home experience
    (0 gives the split stream), ``width`` how many experiences away on each side they may go.
    """
    source = require_source(source)
    num_classes = source.num_classes
    check_int(".n_experiences", n_experiences, minimum=1)
    check_int(".classes_per_experience", classes_per_experience, minimum=1, allow_none=True)
    check_int(".order_seed", order_seed, minimum=0, allow_none=True)
    check_float(".blur", blur, minimum=0.0, maximum=1.0)
    if blur >= 1.0:
        raise ConfigError(".blur", blur, "must be below 1 (a class must keep some samples at home)")
    check_int(".width", width, minimum=1)
    check_int(".blur_seed", blur_seed, minimum=0)
    if n_experiences > num_classes:
        raise ConfigError(".n_experiences", n_experiences,
                          f"must be at most the {num_classes} classes of {source.name}")
    per_exp = num_classes // n_experiences if classes_per_experience is None else classes_per_experience
    if per_exp * n_experiences != num_classes:
        key, value = ((".n_experiences", n_experiences) if classes_per_experience is None
                      else (".classes_per_experience", classes_per_experience))
        raise ConfigError(key, value, f"n_experiences x classes_per_experience must equal the {num_classes} "
                          f"classes of {source.name} (got {n_experiences} x {per_exp})")

    order = class_order(num_classes, order_seed)
    home = {c: i // per_exp for i, c in enumerate(order)}
    rng = np.random.RandomState(blur_seed)
    train_y = source.train_y.numpy()
    members: list[list[np.ndarray]] = [[] for _ in range(n_experiences)]
    counts = np.zeros((num_classes, n_experiences), dtype=np.int64)
    for c in range(num_classes):  # class by class in label order: the draws do not depend on order_seed
        index = np.flatnonzero(train_y == c)
        counts[c] = largest_remainder(len(index), blur_weights(n_experiences, home[c], blur, width))
        moved = index[rng.permutation(len(index))]
        bounds = np.concatenate([[0], np.cumsum(counts[c])])
        for j in range(n_experiences):
            members[j].append(moved[bounds[j] : bounds[j + 1]])

    experiences = []
    for k in range(n_experiences):
        home_classes = sorted(order[k * per_exp : (k + 1) * per_exp])
        index = torch.from_numpy(np.sort(np.concatenate(members[k])))
        train = SequenceData.with_task(source.train_x[index], source.train_y[index], k)
        test_mask = torch.isin(source.test_y, torch.tensor(home_classes, dtype=source.test_y.dtype))
        experiences.append(
            Experience(
                index=k,
                task_id=k,
                train=train,
                test=SequenceData.with_task(source.test_x[test_mask], source.test_y[test_mask], k),
                classes=train.classes,
                name=f"exp{k}:classes={','.join(map(str, home_classes))}+blur",
            )
        )
    return Stream(
        name=name or f"blurry_{source.name}",
        scenario=Scenario.CLASS_INCREMENTAL,
        experiences=tuple(experiences),
        num_classes=num_classes,
        input_shape=source.input_shape,
        metadata={
            "builder": "blurry",
            "source": source.name,
            "source_metadata": source.metadata,
            "n_experiences": n_experiences,
            "classes_per_experience": per_exp,
            "order_seed": order_seed,
            "class_order": order,
            "home_classes": [sorted(order[k * per_exp : (k + 1) * per_exp]) for k in range(n_experiences)],
            "blur": blur,
            "width": width,
            "blur_seed": blur_seed,
            # counts[c][k]: training samples of class c in experience k
            "class_counts": counts.tolist(),
        },
    )
