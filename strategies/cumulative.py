"""Cumulative training: retrain on everything seen so far (the usual 'ideal rehearsal' bound)."""

from __future__ import annotations

from clplat.stream import Experience, SequenceData
from clplat.strategy import Strategy, tensor_nbytes


class Cumulative(Strategy):
    """At experience k, train on the union of the training sets of experiences 0..k.

    An epoch budget grows with the data; an iteration budget stays per experience.
    """

    name = "cumulative"
    supports_ddp = True  # only the data changes, the same on every rank; the loop shards it

    def train_data(self, experience: Experience) -> SequenceData | None:
        return SequenceData.concat([exp.train for exp in self.stream.experiences[: experience.index + 1]])

    def memory_parts(self) -> dict[str, int]:
        """The past experiences' training data, kept to be trained on again."""
        if self.experience is None:
            return {}
        return {"data": tensor_nbytes([exp.train for exp in self.stream.experiences[: self.experience.index]])}
