"""Power-law rehearsal.

Gandhi, Shah, Marupudi & Varma 2024, "Catastrophic Interference is Mitigated in Naturalistic
Power-Law Learning Environments" (arXiv:2401.10393 v1: domain-incremental permuted MNIST; v3,
"Natural Mitigation of Catastrophic Interference: Continual Learning in Power-Law Learning
Environments": class-incremental splits, power-law and exponential schedules, combination with LwF).

Past tasks are rehearsed with a probability that decays as a power of the time since each was
last seen (``strategies/rehearsal_schedule.py``), the statistics of natural environments (Anderson
& Schooler 1991), instead of uniformly. Per task the strategy keeps a pool of ``pool_size`` of its
training samples (drawn at the end of the task; not a shared fixed-size reservoir). A rehearsal
of ``rehearsal_size`` samples draws ``Multinomial(rehearsal_size, p)`` samples per past task from
the pools, and happens

- ``when=after_task`` (v1's "amount of data rehearsed after each task"): in a rehearsal session
  right after each task (from the second one on), ``rehearsal_epochs`` passes with a fresh
  optimizer from the run's optimizer factory, before the boundary evaluation; or
- ``when=interleaved``: mixed into the next task's training data (shuffled with it), so the
  ordinary training loop, budget and evaluation cover it.

``schedule=uniform`` and ``schedule=exponential`` are the paper's controls: the same pools, the
same rehearsal amount and timing, only the revisit law differs. ``reset_recency`` makes a
rehearsal count as "seeing" the task (the clock of the rehearsed tasks restarts); by default the
age of a task is the time since it was trained as the current task.

Not verified against the paper's text (no official code; see docs/strategies.md): the exponent
default, the time unit (one experience), the recency rule and the multinomial allocation follow
the project's reference notes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.buffers import sample_nbytes, samples_for_budget
from clplat.errors import check_choice, check_int
from clplat.stream import Experience, SequenceData, Stream
from clplat.strategy import Batch, Strategy, seeded_generator, tensor_nbytes

from .common import epoch_batches, manual_steps, named_trainable, random_subset
from .rehearsal_schedule import RecencyClock, check_schedule, plan_rehearsal

WHEN = ("after_task", "interleaved")


def draw_from_pool(pool: SequenceData, count: int, generator: torch.Generator) -> SequenceData:
    """``count`` samples of ``pool``: whole shuffled copies while ``count`` exceeds the pool, then a
    uniform draw without replacement for the remainder (every sample used as evenly as possible)."""
    n = len(pool)
    parts = [torch.randperm(n, generator=generator) for _ in range(count // n)]
    parts.append(torch.randperm(n, generator=generator)[: count % n])
    return pool.subset(torch.cat(parts))


class PowerLawRehearsal(Strategy):
    """Rehearse past tasks' pools with revisit probabilities that follow a power law of their age."""

    name = "power_law"

    def __init__(self, schedule: str = "power_law", exponent: float = 1.0, decay: float = 1.0,
                 rehearsal_size: int = 1000, pool_size: int | None = 500, when: str = "after_task",
                 reset_recency: bool = False, rehearsal_epochs: int = 1, batch_size: int = 64,
                 memory_bytes: int | None = None, seed: int = 0):
        super().__init__()
        check_int("strategy.memory_bytes", memory_bytes, 1, allow_none=True)
        self.memory_bytes = memory_bytes
        check_schedule("strategy", schedule, exponent, decay)
        check_int("strategy.rehearsal_size", rehearsal_size, 0)
        check_int("strategy.pool_size", pool_size, 1, allow_none=True)
        check_choice("strategy.when", when, WHEN)
        check_choice("strategy.reset_recency", reset_recency, (True, False))
        check_int("strategy.rehearsal_epochs", rehearsal_epochs, 1)
        check_int("strategy.batch_size", batch_size, 1)
        self.schedule, self.exponent, self.decay = schedule, float(exponent), float(decay)
        self.rehearsal_size, self.pool_size, self.when = rehearsal_size, pool_size, when
        self.reset_recency, self.rehearsal_epochs, self.batch_size = reset_recency, rehearsal_epochs, batch_size
        self.name = "power_law" if schedule == "power_law" else f"power_law_{schedule}"
        self.generator = seeded_generator(seed, 19)
        self.pools: dict[int, SequenceData] = {}
        self.clock = RecencyClock()
        self.revisits: list[dict[str, Any]] = []  # one entry per rehearsal: time and samples per task
        self.rehearsal_steps = 0
        self._interleaved: tuple[int, SequenceData] | None = None
        self._drawn: SequenceData | None = None  # the rehearsal set being trained on (counted in the peak)

    def setup(self, module, stream: Stream) -> None:
        """With ``memory_bytes``, every task's pool gets an equal share: ``pool_size`` is the most
        samples per task such that the pools of all the stream's experiences fit."""
        super().setup(module, stream)
        if self.memory_bytes is not None:
            self.pool_size = samples_for_budget("strategy.memory_bytes", self.memory_bytes, sample_nbytes(stream),
                                                slots=len(stream))

    # -- the schedule ------------------------------------------------------------------------
    def _rehearsal_set(self, now: int) -> SequenceData | None:
        past = sorted(t for t in self.pools if t < now)
        plan = plan_rehearsal(self.clock, past, now, self.rehearsal_size, self.schedule, self.exponent,
                              self.decay, self.generator)
        if not plan:
            return None
        self.revisits.append({"time": now, "counts": {str(t): c for t, c in plan.items()}})
        if self.reset_recency:
            for t in plan:
                self.clock.see(t, now)
        return SequenceData.concat([draw_from_pool(self.pools[t], c, self.generator) for t, c in sorted(plan.items())])

    # -- hooks -------------------------------------------------------------------------------
    def train_data(self, experience: Experience) -> SequenceData | None:
        if self.when != "interleaved":
            return experience.train
        if self._interleaved is None or self._interleaved[0] != experience.index:
            rehearsal = self._rehearsal_set(experience.index)
            data = experience.train if rehearsal is None else SequenceData.concat([experience.train, rehearsal])
            self._interleaved = (experience.index, data)
            self._drawn = rehearsal
            self.record_memory()  # held for the whole experience
        return self._interleaved[1]

    def after_experience(self, experience: Experience) -> None:
        now = experience.index
        index = random_subset(len(experience.train), self.pool_size, self.generator)
        self.pools[now] = experience.train.subset(index)
        self.clock.see(now, now)
        self._interleaved = self._drawn = None
        if self.when != "after_task":
            return
        rehearsal = self._rehearsal_set(now)
        if rehearsal is None:
            return
        self._drawn = rehearsal
        self.record_memory()  # held for the session
        module = self.module
        params = [p for _, p in named_trainable(module)]

        def loss_fn(batch: Batch) -> Tensor:
            x, y, task = batch
            return self.criterion(module(x, task), y)

        steps = manual_steps(
            module, params, epoch_batches(rehearsal, self.batch_size, self.rehearsal_epochs, self.generator), loss_fn)
        self.rehearsal_steps += steps
        self.count_extra_steps("rehearsal", steps, len(rehearsal) * self.rehearsal_epochs)
        self._drawn = None

    def memory_parts(self) -> dict[str, int]:
        """The pools, and while one exists the drawn rehearsal set (so it reaches the peak only)."""
        out = {"pools": tensor_nbytes(list(self.pools.values()))}
        if self._drawn is not None:
            out["rehearsal_set"] = tensor_nbytes(self._drawn)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "rehearsal_when": self.when,
            "rehearsal_samples": sum(sum(r["counts"].values()) for r in self.revisits) * (
                self.rehearsal_epochs if self.when == "after_task" else 1),
            "rehearsal_steps": self.rehearsal_steps,
            "revisits": self.revisits,
            "pool_samples": sum(len(p) for p in self.pools.values()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "pools": {t: (p.x.cpu(), p.y.cpu(), p.task.cpu()) for t, p in self.pools.items()},
            "clock": self.clock.state_dict(),
            "revisits": self.revisits,
            "rehearsal_steps": self.rehearsal_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.pools = {int(t): SequenceData(*p) for t, p in state["pools"].items()}
        self.clock.load_state_dict(state["clock"])
        self.revisits = list(state["revisits"])
        self.rehearsal_steps = int(state["rehearsal_steps"])

