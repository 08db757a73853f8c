"""MNIST-1D (Greydanus & Steinbach): ten 1-D digit templates, randomly padded, scaled, shifted,
sheared and noised into length-40 signals. Generated procedurally; nothing is downloaded.

The ``mnist1d`` package builds the set one sample at a time, constructing scipy interpolators for
every sample (about 1.7 s for 5000 samples on one core). ``generate_vectorized`` reproduces the
package's algorithm *bit for bit* (same RNG draws in the same order, same floating-point
operations) but draws the random numbers in a tight loop and does the arithmetic on whole arrays,
about 10x faster (0.15 s). ``tests/test_streams.py`` checks it against
``mnist1d.data.make_dataset``, so a change of the package's algorithm shows up as a failing test
rather than as silently different data. ``implementation="package"`` calls the package itself.

Both paths use a private ``numpy.random.RandomState`` (the package seeds numpy's *global* RNG;
we restore it afterwards), so building a stream never changes the random state of the run.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from clplat.errors import ConfigError, check_choice, check_float, check_int

from .base import SourceData, finish_source

IMPLEMENTATIONS = ("vectorized", "package")


def _package_args(num_samples: int, seed: int, train_split: float, seq_length: int, shuffle_seq: bool) -> Any:
    """The package's default generation arguments with ours applied (an ``ObjectView``)."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_split
    args.final_seq_length, args.shuffle_seq = seq_length, shuffle_seq
    return args


def generate_with_package(args: Any) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` without leaking its global reseeding into the caller."""
    from mnist1d.data import make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _interp_rows(x: np.ndarray, length: int) -> np.ndarray:
    """Resample each row of ``x`` to ``length`` points on [0, 1], as ``mnist1d.transform.interpolate``.

    The package uses ``scipy.interpolate.interp1d(kind="linear")``, which for 1-D float64 data
    delegates to ``np.interp``; calling ``np.interp`` row by row gives identical numbers.
    """
    src = np.linspace(0, 1, x.shape[1])
    dst = np.linspace(0, 1, length)
    return np.stack([np.interp(dst, src, row) for row in x])


def generate_vectorized(args: Any) -> dict[str, np.ndarray]:
    """Same output as ``mnist1d.data.make_dataset(args)`` (keys ``x, y, x_test, y_test``), faster.

    Follows ``mnist1d.transform.transform`` step by step: pad, dilate, scale, translate,
    correlated noise in the padding, iid noise, shear, subsample.
    """
    from mnist1d.data import get_templates
    from scipy.ndimage import gaussian_filter1d

    templates = get_templates()
    rng = np.random.RandomState(args.seed)  # same stream as the package's np.random.seed(seed)
    n_classes = len(templates["y"])
    per_class = args.num_samples // n_classes
    n = per_class * n_classes
    low, high = args.padding
    width = args.template_len + high  # length after dilation

    # 1. Random draws, per sample in the package's order (the order matters: randn may consume
    #    a variable number of uniforms, so the draws cannot be batched).
    pads = np.empty(n, dtype=np.int64)
    scale_u = np.empty(n)
    shifts = np.empty(n, dtype=np.int64)
    corr = np.empty((n, width))
    iid = np.empty((n, width))
    shear_u = np.empty(n)
    for i in range(n):
        pads[i] = low + int(rng.rand() * (high - low + 1))
        scale_u[i] = rng.rand()
        shifts[i] = rng.choice(args.max_translation)
        corr[i] = rng.randn(width)
        iid[i] = rng.randn(width)
        shear_u[i] = rng.rand()
    labels = np.repeat(np.arange(n_classes), per_class)

    # 2. Pad + dilate: only (class, pad) pairs matter, so interpolate each pair once.
    eps = 1e-8  # the package's default ``transform(..., eps=1e-8)``
    dilated = np.empty((n_classes, high - low + 1, width))
    for c in range(n_classes):
        for p in range(low, high + 1):
            padded = np.concatenate([templates["x"][c] + eps, np.zeros(p)])
            dilated[c, p - low] = _interp_rows(padded[None, :], width)[0]
    x = dilated[labels, pads - low]

    # 3. Scale, translate (a cyclic shift by k: ``concatenate([x[-k:], x[:-k]])``).
    x = x * (1 + args.scale_coeff * (scale_u - 0.5))[:, None]
    x = np.take_along_axis(x, (np.arange(width)[None, :] - shifts[:, None]) % width, axis=1)

    # 4. Smoothed noise where the signal is exactly zero (the padding), iid noise everywhere.
    #    ``mask * x + (1 - mask) * noise`` in the package equals this ``where`` exactly.
    smooth = gaussian_filter1d(args.corr_noise_scale * corr, 2, axis=1)
    x = np.where(x != 0, x, smooth)
    x = x + args.iid_noise_scale * iid

    # 5. Shear (subtract a random linear ramp) and subsample to the final length.
    x = x - (args.shear_scale * (shear_u - 0.5))[:, None] * np.linspace(-0.5, 0.5, width)[None, :]
    x = _interp_rows(x, args.final_seq_length)

    # 6. Shuffle, global standardisation and split, as the package does.
    order = rng.permutation(n)
    xs, ys = x[order], templates["y"][labels][order]
    if args.shuffle_seq:
        xs = xs[..., rng.permutation(args.final_seq_length)]
    xs = (xs - xs.mean()) / xs.std()
    split = int(n * args.train_split)
    return {"x": xs[:split], "y": ys[:split], "x_test": xs[split:], "y_test": ys[split:]}


def mnist1d(
    num_samples: int = 5000,
    seed: int = 42,
    train_split: float = 0.8,
    seq_length: int = 40,
    shuffle_seq: bool = False,
    standardize: bool = True,
    implementation: str = "vectorized",
) -> SourceData:
    """MNIST-1D as sequences of ``seq_length`` steps x 1 feature, 10 classes.

    Defaults are the package's (5000 samples -> 4000 train / 1000 test, seed 42, length 40), so
    the default data set is the one in the MNIST-1D paper's generation code. ``num_samples`` is
    rounded down to a multiple of 10 (the package makes ``num_samples // 10`` per class). The
    package already standardises globally; ``standardize`` then applies the platform-wide train
    statistics rule (a near no-op here, kept so every source obeys the same contract).
    """
    check_int(".num_samples", num_samples, minimum=10)
    check_int(".seed", seed, minimum=0)
    check_float(".train_split", train_split, minimum=0.0, maximum=1.0)
    check_int(".seq_length", seq_length, minimum=2)
    check_choice(".implementation", implementation, IMPLEMENTATIONS)
    n = (num_samples // 10) * 10
    if not 0 < int(n * train_split) < n:
        raise ConfigError(
            ".train_split", train_split,
            f"must leave at least one train and one test sample out of {n}",
        )

    args = _package_args(num_samples, seed, train_split, seq_length, shuffle_seq)
    data = generate_vectorized(args) if implementation == "vectorized" else generate_with_package(args)

    def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, :, None], torch.from_numpy(y)

    return finish_source(
        "mnist1d",
        as_tensors(data["x"], data["y"]),
        as_tensors(data["x_test"], data["y_test"]),
        num_classes=10,
        standardize_inputs=standardize,
        metadata={
            "source": "mnist1d",
            "num_samples": n,
            "seed": seed,
            "train_split": train_split,
            "seq_length": seq_length,
            "shuffle_seq": shuffle_seq,
            "implementation": implementation,
        },
    )
