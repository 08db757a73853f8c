"""Power-law rehearsal.

Gandhi, Shah, Marupudi & Varma 2024, "Catastrophic Interference is Mitigated in Naturalistic
Power-Law Learning Environments" (arXiv:2401.10393 v1: domain-incremental permuted MNIST; v3,
"Natural Mitigation of Catastrophic Interference: Continual Learning in Power-Law Learning
Environments": class-incremental splits, power-law and exponential schedules, combination with LwF).

Past tasks are rehearsed with a probability that decays as a power of the time since each was
last seen (``clplat/rehearsal_schedule.py``), the statistics of natural environments (Anderson
& Schooler 1991), instead of uniformly.

Defaults follow the public code for the paper's setting (``archana53/power-law-for-CI``,
``environments.py``, not confirmed as the authors'): each phase trains on the current task's data
*with* the rehearsed samples of older tasks concatenated to it (``when=interleaved``), and the
rehearsal amount is a fraction of a task's training set (``rehearsal_fraction``; that code's
values 1, .75, .5, .25, .1). Memory is replay's: ``buffer_size`` samples (or, with
``memory_bytes``, as many as replay's buffer holds in that many bytes), shared equally by the
pools of the tasks seen so far (a pool shrinks, keeping a uniform random subset, when a new task
arrives). A rehearsal draws ``Multinomial(amount, p)`` samples per past task from the pools.

``schedule=uniform`` and ``schedule=exponential`` are the controls: the same pools, the same
rehearsal amount and timing, only the revisit law differs. ``reset_recency`` makes a rehearsal
count as "seeing" the task. ``when=after_task`` keeps the older reading of v1's "data rehearsed
after each task": a separate session on the older tasks only, after each task, with a fresh
optimizer; in class-IL it erases the task just learned (docs/strategies.md), so it is not the default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.buffers import sample_nbytes, samples_for_budget
from clplat.context import RunContext
from clplat.errors import check_choice, check_float, check_int
from clplat.stream import Experience, SequenceData
from clplat.strategy import Batch, Strategy, tensor_nbytes

from .parts.common import epoch_batches, manual_steps, named_trainable
from clplat.rehearsal_schedule import RecencyClock, check_schedule, plan_rehearsal
from clplat.seeds import SeedStream, seeded_generator

WHEN = ("interleaved", "after_task")


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
    # pools and rehearsal draws come from shared seeded generators, so every rank builds the same
    # training data (and the same after-task session) and the loop shards it as any other data;
    # each rank holds the whole pools
    supports_ddp = True
    checkpointed = ("generator", "clock", "revisits", "rehearsal_steps")  # and pools, below

    def __init__(self, schedule: str = "power_law", exponent: float = 1.0, decay: float = 1.0,
                 rehearsal_fraction: float = 1.0, buffer_size: int = 500, when: str = "interleaved",
                 reset_recency: bool = False, rehearsal_epochs: int = 1, batch_size: int = 64,
                 memory_bytes: int | None = None, seed: int = 0):
        super().__init__()
        check_int(".memory_bytes", memory_bytes, 1, allow_none=True)
        self.memory_bytes = memory_bytes
        check_schedule(schedule, exponent, decay)
        check_float(".rehearsal_fraction", rehearsal_fraction, 0.0)
        check_int(".buffer_size", buffer_size, 1)
        check_choice(".when", when, WHEN)
        check_choice(".reset_recency", reset_recency, (True, False))
        check_int(".rehearsal_epochs", rehearsal_epochs, 1)
        check_int(".batch_size", batch_size, 1)
        self.schedule, self.exponent, self.decay = schedule, float(exponent), float(decay)
        self.rehearsal_fraction, self.buffer_size, self.when = float(rehearsal_fraction), buffer_size, when
        self.reset_recency, self.rehearsal_epochs, self.batch_size = reset_recency, rehearsal_epochs, batch_size
        self.name = "power_law" if schedule == "power_law" else f"power_law_{schedule}"
        self.generator = seeded_generator(seed, SeedStream.POWER_LAW)
        self.pools: dict[int, SequenceData] = {}
        self.clock = RecencyClock()
        self.revisits: list[dict[str, Any]] = []  # one entry per rehearsal: time and samples per task
        self.rehearsal_steps = 0
        self._interleaved: tuple[int, SequenceData] | None = None
        self._drawn: SequenceData | None = None  # the rehearsal set being trained on (counted in the peak)

    def setup(self, context: RunContext) -> None:
        """With ``memory_bytes``, ``buffer_size`` is what replay's buffer holds in those bytes
        (``budget // bytes per sample``), so both methods store the same samples at one budget;
        a budget that cannot give every experience one sample is refused."""
        super().setup(context)
        stream = context.stream
        if self.memory_bytes is not None:
            per_sample = sample_nbytes(stream)
            samples_for_budget(".memory_bytes", self.memory_bytes, per_sample, slots=len(stream))
            self.buffer_size = samples_for_budget(".memory_bytes", self.memory_bytes, per_sample)
        else:  # every task's pool needs one sample at least
            check_int(".buffer_size", self.buffer_size, len(stream))

    # -- the schedule ------------------------------------------------------------------------
    def rehearsal_amount(self, experience: Experience) -> int:
        """Samples rehearsed at ``experience``: ``rehearsal_fraction`` of its training set (the
        public code's ``replay_fraction x task size``; 1 = as many as replay's minibatches add)."""
        return int(round(self.rehearsal_fraction * len(experience.train)))

    def _rehearsal_set(self, now: int, amount: int) -> SequenceData | None:
        past = sorted(t for t in self.pools if t < now)
        plan = plan_rehearsal(self.clock, past, now, amount, self.schedule, self.exponent, self.decay,
                              self.generator)
        if not plan:
            return None
        self.revisits.append({"time": now, "counts": {str(t): c for t, c in plan.items()}})
        if self.reset_recency:
            for t in plan:
                self.clock.see(t, now)
        return SequenceData.concat([draw_from_pool(self.pools[t], c, self.generator) for t, c in sorted(plan.items())])

    def _store_pool(self, experience: Experience) -> None:
        """Share ``buffer_size`` equally among the tasks seen so far: the new task gets a uniform
        random subset, and every older pool keeps a uniform random subset of itself (pools are
        stored in random order, so their first samples are one)."""
        per_task = self.buffer_size // (len(self.pools) + (experience.index not in self.pools))
        for t in self.pools:
            self.pools[t] = self.pools[t].subset(torch.arange(min(per_task, len(self.pools[t]))))
        index = torch.randperm(len(experience.train), generator=self.generator)[:per_task]
        self.pools[experience.index] = experience.train.subset(index)

    # -- hooks -------------------------------------------------------------------------------
    def train_data(self, experience: Experience) -> SequenceData | None:
        """The experience's own training data, with (``interleaved``) its rehearsal set
        concatenated: the loop shuffles both together, as one phase's dataset."""
        if self.when != "interleaved":
            return experience.train
        if self._interleaved is None or self._interleaved[0] != experience.index:
            rehearsal = self._rehearsal_set(experience.index, self.rehearsal_amount(experience))
            data = experience.train if rehearsal is None else SequenceData.concat([experience.train, rehearsal])
            self._interleaved = (experience.index, data)
            self._drawn = rehearsal
            self.record_memory()  # held for the whole experience
        return self._interleaved[1]

    def after_experience(self, experience: Experience) -> None:
        now = experience.index
        self._store_pool(experience)
        self.clock.see(now, now)
        self._interleaved = self._drawn = None
        if self.when != "after_task":
            return
        rehearsal = self._rehearsal_set(now, self.rehearsal_amount(experience))
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
            "buffer_size": self.buffer_size,
            "pool_samples": sum(len(p) for p in self.pools.values()),
        }

    # pools hold SequenceData, saved as (x, y, task) tuples: the one key written by hand
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "pools": {t: (p.x.cpu(), p.y.cpu(), p.task.cpu()) for t, p in self.pools.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pools = {int(t): SequenceData(*p) for t, p in state["pools"].items()}
