"""Scenario builders: functions that turn a data source into a ``clplat.stream.Stream``.

Each builder takes plain keyword arguments so ``conf/stream/*.yaml`` can name it with
``_target_`` and Hydra can instantiate it, the nested ``source`` config first. This package
imports ``clplat``; ``clplat`` never imports it.
"""

from .permuted import permuted_stream
from .split import split_stream

__all__ = ["permuted_stream", "split_stream"]
