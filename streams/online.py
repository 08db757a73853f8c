"""Online continual learning: every training sample is seen once, in small batches, no epochs.

Online CL (e.g. Aljundi et al. 2019; Mai et al., "Online continual learning in image
classification: an empirical survey", 2022; Avalanche's ``split_online_stream`` and Mammoth's
online configs: batch 10, one pass) is a training *regime*, not a different data set: any stream
can be run online. So ``online_stream`` wraps an already built stream (Hydra builds the nested
``stream`` config first) and only marks it: ``metadata["online"] = {"batch_size": b}``.

A stream cannot set trainer options, so the experiment loop reads that mark: for an online stream
each experience is one pass over the data the strategy trains on (``ceil(n / b)`` optimizer
steps, the last batch possibly smaller) in batches of ``b``, and ``trainer.epochs`` /
``trainer.iterations`` / ``trainer.batch_size`` are ignored (the loop says so at start-up).
Keeping the regime in the stream means ``stream=online_split_mnist1d`` alone selects it, a run's
``config.yaml``/``summary.json`` record it with the data, and nothing in the core needs a second
switch that could disagree with the stream.
"""

from __future__ import annotations

from dataclasses import replace

from clplat.errors import ConfigError, check_int
from clplat.stream import Stream

#: The key of ``Stream.metadata`` the experiment loop reads.
ONLINE_KEY = "online"


def online_stream(stream: Stream, batch_size: int = 10, name: str | None = None) -> Stream:
    """``stream`` with the same experiences, trained online in batches of ``batch_size``."""
    if not isinstance(stream, Stream):
        raise ConfigError(".stream", type(stream).__name__,
                          "must be a stream config with a _target_ such as clplat.streams.split.split_stream")
    check_int(".batch_size", batch_size, minimum=1)
    metadata = {**stream.metadata, ONLINE_KEY: {"batch_size": batch_size}, "base_stream": stream.name}
    return replace(stream, name=name or f"online_{stream.name}", metadata=metadata)
