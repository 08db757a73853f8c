"""Data sources: labelled train/test sequences ``(N, T, F)`` that scenarios cut into experiences.

Each source is a plain function of keyword arguments returning a ``SourceData`` so a Hydra
config can name it with ``_target_: clplat.streams.sources.<name>``. Heavy libraries (torchvision,
scikit-learn, mnist1d) are imported inside the functions, so importing this package stays cheap
for code that uses only one source.

Every source standardises its inputs per feature with the train split's mean and std
(``standardize=False`` keeps raw values), see ``base.standardize``.
"""

from .base import LAYOUTS, SourceData, images_to_sequences, standardize
from .digits import digits
from .mnist1d_source import mnist1d
from .vision import cifar10, cifar100, fashion_mnist, mnist

__all__ = [
    "LAYOUTS",
    "SourceData",
    "cifar10",
    "cifar100",
    "digits",
    "fashion_mnist",
    "images_to_sequences",
    "mnist",
    "mnist1d",
    "standardize",
]
