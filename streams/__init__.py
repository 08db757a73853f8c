"""Scenario builders: functions that turn a data source into a ``clplat.stream.Stream``.

Each builder takes plain keyword arguments so ``conf/stream/*.yaml`` can name it with
``_target_`` and Hydra can instantiate it, the nested ``source`` config first. This package
(``clplat.streams``) imports clplat's core; the core never imports it. ``avalanche_stream``
needs no Avalanche import to wrap a benchmark; the helpers that build one import ``avalanche``
when called.
"""

from .avalanche_adapter import avalanche_stream, benchmark_from_source, benchmark_from_tensors
from .blurry import blurry_stream
from .online import online_stream
from .permuted import permuted_stream
from .rotated import rotated_stream
from .sequence_tasks import curriculum_stream, state_tracking_stream
from .split import split_stream

__all__ = [
    "avalanche_stream",
    "benchmark_from_source",
    "benchmark_from_tensors",
    "blurry_stream",
    "curriculum_stream",
    "online_stream",
    "permuted_stream",
    "rotated_stream",
    "split_stream",
    "state_tracking_stream",
]
