"""Rotated scenarios (Rotated MNIST and friends): domain-incremental, every experience holds all
classes and all samples, the images rotated by a fixed angle per experience.

Rotation needs the *image*, while a source hands out sequences. The geometry is recovered from
the source's declared layout (``rows``: T=H, F=W*C; ``pixels``: T=H*W, F=C; square images unless
``image_shape`` says otherwise), the images are rotated, and read back with the same layout, so
a rotated stream works in either layout.

Sources standardise per feature; rotating standardised values would fill the corners with the
*mean* and move pixels between features with different scales. So the rotation runs in raw pixel
units (the source's recorded ``feature_mean``/``feature_std`` undo the standardisation, the
corners get ``fill``, the black background of MNIST/digits by default) and the result is
standardised again with the same statistics. An angle of 0 reuses the source tensors unchanged.

Angles: explicit ``angles``, or evenly spaced ``k * max_angle / n_experiences`` (0, 36, 72, 108,
144 degrees for 5 experiences), or with ``rotation_seed`` drawn uniformly in ``[0, max_angle)``
as Avalanche's ``RotatedMNIST`` does; ``first_identity`` keeps experience 0 unrotated.
``order_seed`` (the task-order seed) then permutes the experiences' angles.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from clplat.errors import ConfigError, check_choice, check_float, check_int
from clplat.stream import Experience, Scenario, SequenceData, Stream

from .sources.base import LAYOUTS, SourceData, require_source
from .split import class_order


def image_geometry(source: SourceData, image_shape: Sequence[int] | None = None) -> tuple[str, int, int, int]:
    """``(layout, H, W, C)`` of the images behind ``source``'s sequences.

    Raises a ``ConfigError`` for sources that are not images (MNIST-1D has no layout), because
    rotating a 1-D signal has no meaning and a silent reshape would produce garbage.
    """
    layout = source.metadata.get("layout")
    if layout not in LAYOUTS:
        raise ConfigError(".source", source.name,
                          "must be an image source with a layout (digits, mnist, fashion_mnist, cifar10, ...)")
    T, F = source.input_shape
    if image_shape is not None:
        if len(image_shape) != 2:
            raise ConfigError(".image_shape", list(image_shape), "must be [H, W]")
        H, W = int(image_shape[0]), int(image_shape[1])
    elif layout == "rows":
        H = W = T
    else:
        H = W = math.isqrt(T)
    C = F // W if layout == "rows" else F
    if (layout == "rows" and (H != T or W * C != F)) or (layout == "pixels" and H * W != T):
        raise ConfigError(".image_shape", None if image_shape is None else list(image_shape),
                          f"does not match {source.name}'s {layout} sequences of {T} steps x {F} features; "
                          "give the image size as [H, W]")
    return layout, H, W, C


def sequences_to_images(x: Tensor, layout: str, h: int, w: int, c: int) -> Tensor:
    """``(N, T, F)`` -> ``(N, C, H, W)``: the inverse of ``images_to_sequences`` (channels first)."""
    return x.reshape(x.shape[0], h, w, c).permute(0, 3, 1, 2)


def images_to_layout(images: Tensor, layout: str) -> Tensor:
    """``(N, C, H, W)`` -> ``(N, T, F)`` in ``layout`` (see ``clplat.streams.sources.base.LAYOUTS``)."""
    n, c, h, w = images.shape
    hwc = images.permute(0, 2, 3, 1)
    return (hwc.reshape(n, h, w * c) if layout == "rows" else hwc.reshape(n, h * w, c)).contiguous()


def rotation_angles(
    n_experiences: int,
    max_angle: float = 180.0,
    rotation_seed: int | None = None,
    first_identity: bool = True,
    angles: Sequence[float] | None = None,
    order_seed: int | None = None,
) -> list[float]:
    """The angle (degrees, counter-clockwise) of each experience; public so analysis code can
    recompute them from a run's metadata."""
    if angles is not None:
        chosen = [float(a) for a in angles]
    elif rotation_seed is None:
        chosen = [k * max_angle / n_experiences for k in range(n_experiences)]
    else:
        chosen = [float(a) for a in np.random.RandomState(rotation_seed).uniform(0.0, max_angle, n_experiences)]
    if first_identity:
        chosen[0] = 0.0
    return [chosen[i] for i in class_order(len(chosen), order_seed)]


def rotate(x: Tensor, angle: float, geometry: tuple[str, int, int, int], mean: Tensor, std: Tensor,
           fill: float) -> Tensor:
    """Rotate standardised sequences ``x`` by ``angle`` degrees in raw pixel units (see module docs)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    layout, h, w, c = geometry
    raw = x * std + mean
    images = TF.rotate(sequences_to_images(raw, layout, h, w, c), angle,
                       interpolation=InterpolationMode.BILINEAR, fill=fill)
    return (images_to_layout(images, layout) - mean) / std


def rotated_stream(
    source: SourceData,
    n_experiences: int = 5,
    max_angle: float = 180.0,
    rotation_seed: int | None = None,
    first_identity: bool = True,
    angles: Sequence[float] | None = None,
    order_seed: int | None = None,
    fill: float = 0.0,
    image_shape: Sequence[int] | None = None,
    task_labels: bool = False,
    name: str | None = None,
) -> Stream:
    """``n_experiences`` copies of an image ``source``, each rotated by its own fixed angle.

    Domain-incremental by default; ``task_labels=True`` makes it task-incremental. Like the
    permuted stream, every experience holds the whole source.
    """
    source = require_source(source)
    check_int(".n_experiences", n_experiences, minimum=1)
    check_float(".max_angle", max_angle, minimum=0.0, maximum=360.0)
    check_int(".rotation_seed", rotation_seed, minimum=0, allow_none=True)
    check_int(".order_seed", order_seed, minimum=0, allow_none=True)
    check_choice(".first_identity", first_identity, (True, False))
    check_choice(".task_labels", task_labels, (True, False))
    check_float(".fill", fill)
    if angles is not None:
        angles = list(angles)
        if len(angles) != n_experiences:
            raise ConfigError(".angles", angles, f"must list one angle per experience ({n_experiences})")
        for a in angles:
            check_float(".angles", a)
    geometry = image_geometry(source, image_shape)
    T, F = source.input_shape
    meta = source.metadata
    if meta.get("standardized"):
        mean, std = torch.tensor(meta["feature_mean"]), torch.tensor(meta["feature_std"])
    else:
        mean, std = torch.zeros(F), torch.ones(F)
    chosen = rotation_angles(n_experiences, max_angle, rotation_seed, first_identity, angles, order_seed)
    classes = tuple(range(source.num_classes))

    experiences = []
    for k, angle in enumerate(chosen):
        if angle % 360 == 0:
            train_x, test_x = source.train_x, source.test_x
        else:
            train_x, test_x = (rotate(x, angle, geometry, mean, std, fill) for x in (source.train_x, source.test_x))
        experiences.append(
            Experience(
                index=k,
                task_id=k,
                train=SequenceData.with_task(train_x, source.train_y, k),
                test=SequenceData.with_task(test_x, source.test_y, k),
                classes=classes,
                name=f"exp{k}:rotation={angle:g}",
            )
        )
    return Stream(
        name=name or f"rotated_{source.name}" + ("_til" if task_labels else ""),
        scenario=Scenario.TASK_INCREMENTAL if task_labels else Scenario.DOMAIN_INCREMENTAL,
        experiences=tuple(experiences),
        num_classes=source.num_classes,
        input_shape=(T, F),
        metadata={
            "builder": "rotated",
            "source": source.name,
            "source_metadata": source.metadata,
            "n_experiences": n_experiences,
            "angles": chosen,
            "max_angle": max_angle,
            "rotation_seed": rotation_seed,
            "order_seed": order_seed,
            "first_identity": first_identity,
            "fill": fill,
            "image_shape": list(geometry[1:3]),
            "task_labels": task_labels,
        },
    )
