"""Cumulative training: retrain on everything seen so far (the usual 'ideal rehearsal' bound)."""

from __future__ import annotations

from clplat.stream import Experience, SequenceData
from clplat.strategy import Strategy


class Cumulative(Strategy):
    """At experience k, train on the union of the training sets of experiences 0..k.

    An epoch budget grows with the data; an iteration budget stays per experience.
    """

    name = "cumulative"

    def train_data(self, experience: Experience) -> SequenceData | None:
        return SequenceData.concat([exp.train for exp in self.stream.experiences[: experience.index + 1]])
