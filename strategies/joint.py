"""Joint training on the whole stream: the upper bound (not continual learning)."""

from __future__ import annotations

from clplat.stream import Experience, SequenceData
from clplat.strategy import Strategy, tensor_nbytes


class Joint(Strategy):
    """Train once, during the first experience, on every experience's data shuffled together.

    The later experiences train nothing and only take their boundary evaluation, so the run
    still yields one accuracy-matrix row per experience. An epoch budget therefore covers all the
    data; an iteration budget is scaled by the number of experiences, so joint spends the same
    number of optimizer steps as a sequential method.
    """

    name = "joint"
    supports_ddp = True  # only the data changes, the same on every rank; the loop shards it

    def train_data(self, experience: Experience) -> SequenceData | None:
        if experience.index > 0:
            return None
        return SequenceData.concat([exp.train for exp in self.stream])

    def memory_parts(self) -> dict[str, int]:
        """During the first experience: every other experience's training data, trained on at once
        (dropped afterwards; the peak keeps it)."""
        if self.experience is None or self.experience.index > 0:
            return {}
        return {"data": tensor_nbytes([exp.train for exp in self.stream.experiences[1:]])}

    def budget_scale(self, experience: Experience) -> int:
        return len(self.stream) if experience.index == 0 else 0
