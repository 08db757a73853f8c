"""scikit-learn's ``load_digits``: 1797 real 8x8 handwritten digit scans shipped inside
scikit-learn, so it is available offline and loads in milliseconds (the smallest real-image
source, used by fast tests and smoke runs)."""

from __future__ import annotations

import numpy as np
import torch

from clplat.errors import check_choice, check_float, check_int

from .base import LAYOUTS, SourceData, finish_source, images_to_sequences


def digits(
    layout: str = "rows", test_fraction: float = 0.2, seed: int = 0, standardize: bool = True
) -> SourceData:
    """sklearn digits as ``rows`` (8 steps x 8 features) or ``pixels`` (64 steps x 1 feature).

    The data set has no official test split, so one is drawn: stratified (every class keeps its
    share in both splits, which small class-incremental experiences need) and seeded by ``seed``.
    """
    check_choice(".layout", layout, LAYOUTS)
    check_float(".test_fraction", test_fraction, minimum=0.01, maximum=0.99)
    check_int(".seed", seed, minimum=0)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32))[..., None]  # (N, 8, 8, 1)
    x = images_to_sequences(images, layout)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return finish_source(
        "digits",
        (x[train_idx], y[train_idx]),
        (x[test_idx], y[test_idx]),
        num_classes=10,
        standardize_inputs=standardize,
        metadata={"source": "digits", "layout": layout, "test_fraction": test_fraction, "seed": seed},
    )
