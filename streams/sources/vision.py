"""torchvision image data sets (MNIST, FashionMNIST, CIFAR-10/100) as sequences.

The real torchvision classes read the files (so the on-disk layout, and ``download=True``, are
torchvision's), but their stored arrays ``.data``/``.targets`` are converted to tensors in one
go: going through ``__getitem__`` would build one PIL image per sample, which costs seconds for
60000 images and buys nothing here. Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from clplat.errors import ConfigError, check_choice, check_int

from .base import LAYOUTS, SourceData, finish_source, images_to_sequences, seeded_subset


def _load_split(
    dataset_cls: Callable[..., Any], root: Path, train: bool, download: bool
) -> tuple[Tensor, Tensor, int]:
    """Images ``(N, H, W, C)`` uint8, labels ``(N,)`` int64 and the class count of one split."""
    try:
        ds = dataset_cls(root=str(root), train=train, download=download)
    except RuntimeError as err:
        if download:  # a failed download is not a config mistake: keep torchvision's error
            raise
        raise ConfigError(
            ".root", str(root),
            f"no {dataset_cls.__name__} files found there in torchvision's layout ({err}); "
            "point it at an existing copy or set stream.source.download=true to fetch it",
        ) from err
    images = torch.as_tensor(np.asarray(ds.data))  # MNIST: (N, H, W) tensor; CIFAR: (N, H, W, C) array
    if images.dim() == 3:
        images = images[..., None]
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images, labels, len(ds.classes)


def _vision_source(
    name: str,
    dataset_cls: Callable[..., Any],
    root: str | os.PathLike[str],
    download: bool,
    layout: str,
    max_train_samples: int | None,
    max_test_samples: int | None,
    seed: int,
    standardize: bool,
) -> SourceData:
    """Load both splits, subsample (seeded), lay images out as sequences, standardise."""
    check_choice(".layout", layout, LAYOUTS)
    check_choice(".download", download, (True, False))
    check_int(".max_train_samples", max_train_samples, minimum=1, allow_none=True)
    check_int(".max_test_samples", max_test_samples, minimum=1, allow_none=True)
    check_int(".seed", seed, minimum=0)
    root_path = Path(root).expanduser()

    splits, class_counts = [], []
    for split_id, (train, max_n) in enumerate(((True, max_train_samples), (False, max_test_samples))):
        images, labels, num_classes = _load_split(dataset_cls, root_path, train, download)
        class_counts.append(num_classes)
        # One RNG per split, so the test subset does not depend on whether train was subsampled.
        keep = seeded_subset(len(labels), max_n, np.random.RandomState([seed, split_id]))
        if keep is not None:  # subsample the uint8 images before the float copy
            images, labels = images[keep], labels[keep]
        splits.append((images_to_sequences(images, layout), labels))
    (train_x, train_y), (test_x, test_y) = splits

    return finish_source(
        name,
        (train_x, train_y),
        (test_x, test_y),
        num_classes=class_counts[0],
        standardize_inputs=standardize,
        metadata={
            "source": name,
            "root": str(root_path),
            "layout": layout,
            "max_train_samples": max_train_samples,
            "max_test_samples": max_test_samples,
            "seed": seed,
        },
    )


def mnist(
    root: str = "data",
    download: bool = False,
    layout: str = "rows",
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> SourceData:
    """MNIST: 28x28 grey digits; ``rows`` gives 28 steps x 28, ``pixels`` 784 steps x 1."""
    from torchvision.datasets import MNIST

    return _vision_source(
        "mnist", MNIST, root, download, layout, max_train_samples, max_test_samples, seed, standardize
    )


def fashion_mnist(
    root: str = "data",
    download: bool = False,
    layout: str = "rows",
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> SourceData:
    """FashionMNIST: 28x28 grey clothing images, 10 classes, same shapes as MNIST."""
    from torchvision.datasets import FashionMNIST

    return _vision_source(
        "fashion_mnist", FashionMNIST, root, download, layout, max_train_samples, max_test_samples, seed,
        standardize,
    )


def cifar10(
    root: str = "data",
    download: bool = False,
    layout: str = "rows",
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> SourceData:
    """CIFAR-10: 32x32 RGB; ``rows`` gives 32 steps x 96 (r,g,b per pixel), ``pixels`` 1024 x 3."""
    from torchvision.datasets import CIFAR10

    return _vision_source(
        "cifar10", CIFAR10, root, download, layout, max_train_samples, max_test_samples, seed, standardize
    )


def cifar100(
    root: str = "data",
    download: bool = False,
    layout: str = "rows",
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> SourceData:
    """CIFAR-100 with its 100 fine labels; same shapes as CIFAR-10."""
    from torchvision.datasets import CIFAR100

    return _vision_source(
        "cifar100", CIFAR100, root, download, layout, max_train_samples, max_test_samples, seed, standardize
    )
