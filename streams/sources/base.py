"""What every source returns, and the few tensor helpers all sources share.

A *source* is a labelled data set already cut into train and test and already shaped as
sequences ``(N, T, F)``. Scenarios (split, permuted, ...) only regroup or transform it, so the
way pixels become time steps and the normalisation are decided once, here, for every scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clplat.errors import ConfigError, check_choice

#: How an image ``(H, W, C)`` is read as a sequence. ``rows``: one step per image row, the row's
#: pixels (and channels) as features, T=H, F=W*C. ``pixels``: one step per pixel in raster order,
#: the channels as features, T=H*W, F=C ("sequential MNIST").
LAYOUTS = ("rows", "pixels")

# A feature whose train std is below this is constant (e.g. an always-black border column):
# it is centred but not scaled, so it stays 0 instead of turning into noise divided by ~0.
_MIN_STD = 1e-6


@dataclass(frozen=True)
class SourceData:
    """A labelled set of sequences split into train and test, plus what scenarios need to know.

    ``train_x``/``test_x`` are ``(N, T, F)`` float32, ``train_y``/``test_y`` are ``(N,)`` int64
    holding labels in ``0 .. num_classes - 1``. ``metadata`` is plain JSON-friendly data (seeds,
    layout, normalisation statistics) that scenarios copy into ``Stream.metadata`` so a run
    records exactly which data it saw.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Catch a malformed source here, at its origin, rather than as a shape error deep in a
        # training step of some later experience.
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dim() != 3 or x.dtype != torch.float32:
                raise ValueError(
                    f"source {self.name!r}: {split}_x must be (N, T, F) float32, "
                    f"got {tuple(x.shape)} {x.dtype}"
                )
            if y.shape != (x.shape[0],) or y.dtype != torch.int64:
                raise ValueError(
                    f"source {self.name!r}: {split}_y must be ({x.shape[0]},) int64, "
                    f"got {tuple(y.shape)} {y.dtype}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"source {self.name!r}: {split}_y outside 0..{self.num_classes - 1}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(
                f"source {self.name!r}: train sequences {tuple(self.train_x.shape[1:])} and test "
                f"sequences {tuple(self.test_x.shape[1:])} differ in shape"
            )

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(T, F)``: time steps and features per step."""
        return int(self.train_x.shape[1]), int(self.train_x.shape[2])


def images_to_sequences(images: Tensor, layout: str) -> Tensor:
    """Read ``(N, H, W, C)`` images as ``(N, T, F)`` sequences following ``layout`` (see LAYOUTS).

    Both layouts are plain reshapes of the channels-last array, so no pixel is copied twice and
    ``rows`` features are ordered pixel-major, channel-minor (``r0 g0 b0 r1 g1 b1 ...``).
    """
    check_choice(".layout", layout, LAYOUTS)
    n, h, w, c = images.shape
    if layout == "rows":
        return images.reshape(n, h, w * c)
    return images.reshape(n, h * w, c)


def standardize(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor, dict[str, list[float]]]:
    """Standardise both splits per feature with the *train* split's mean and std.

    Statistics are taken over samples and time steps together (one mean/std per feature ``F``),
    because a recurrent model applies the same input weights at every step: a per-step
    normalisation would make the same pixel value mean different things at different times.
    Only train statistics are used so no information leaks from the test set. The inputs are
    left untouched (the work happens in place on float32 copies, which matters for the memory
    of large image sets); the statistics are returned for the record.
    """
    train_x = train_x.to(torch.float32, copy=True)
    test_x = test_x.to(torch.float32, copy=True)
    std, mean = torch.std_mean(train_x, dim=(0, 1), correction=0)
    std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
    train_x.sub_(mean).div_(std)
    test_x.sub_(mean).div_(std)
    return train_x, test_x, {"mean": mean.tolist(), "std": std.tolist()}


def seeded_subset(n: int, max_n: int | None, rng: np.random.RandomState) -> Tensor | None:
    """Indices of a seeded random subset of ``max_n`` out of ``n`` items (sorted), or None for all.

    Sorted so the subset keeps the data set's original order, which makes it easy to compare
    against the unsubsampled data when debugging.
    """
    if max_n is None or max_n >= n:
        return None
    return torch.from_numpy(np.sort(rng.permutation(n)[:max_n]))


def finish_source(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    standardize_inputs: bool,
    metadata: dict[str, Any],
) -> SourceData:
    """Convert to the contract's dtypes, optionally standardise, and wrap in ``SourceData``.

    Every source ends here so dtypes, normalisation and the metadata record are uniform.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    if standardize_inputs:
        train_x, test_x, stats = standardize(train_x, test_x)
        metadata = {**metadata, "standardized": True}
        metadata.update(feature_mean=stats["mean"], feature_std=stats["std"])
    else:
        train_x, test_x = train_x.to(torch.float32), test_x.to(torch.float32)
        metadata = {**metadata, "standardized": False}
    return SourceData(
        name=name,
        train_x=train_x.contiguous(),
        train_y=train_y.to(torch.int64),
        test_x=test_x.contiguous(),
        test_y=test_y.to(torch.int64),
        num_classes=num_classes,
        metadata=metadata,
    )


def require_source(source: Any) -> SourceData:
    """Check that a scenario got a built source, not e.g. a config dict that was not instantiated.

    Hydra instantiates the nested ``source`` config first; a plain mapping here means it had no
    ``_target_`` (or recursion was turned off), which is a config mistake worth naming.
    """
    if not isinstance(source, SourceData):
        raise ConfigError(
            ".source", type(source).__name__,
            "must be a source config with a _target_ such as clplat.streams.sources.mnist1d",
        )
    return source
