"""A power-law learning *environment* over a permuted stream: rehearsal without a buffer.

Gandhi, Shah, Marupudi & Varma 2024 (arXiv:2401.10393) frame power-law rehearsal as a property of
the environment rather than of the learner: in a naturalistic world, past tasks simply come back,
with a probability that decays as a power law of the time since they were last met. This builder
makes that environment a stream, so any strategy (``strategy=naive`` to study the environment
alone) trains in it and nothing limits how much of a past task can come back.

Experience ``k`` is permutation ``k`` of the source (as in ``clplat.streams.permuted``) plus
``rehearsal_size`` samples of earlier permutations, ``Multinomial(rehearsal_size, p)`` per earlier
task with ``p`` from ``clplat.rehearsal_schedule`` (power law, exponential or uniform in the age
``k - last_seen``), drawn from that task's **whole** training set. Rehearsed samples keep their own
task id (the evaluator and multi-heads rely on it); test data are the current permutation's only.
The revisit counts are recorded in ``Stream.metadata["revisits"]``.

The environment is a deterministic function of its arguments (``seed`` drives the schedule's draws).
"""

from __future__ import annotations

import torch

from clplat.errors import check_choice, check_int
from clplat.stream import Experience, SequenceData, Stream
from clplat.rehearsal_schedule import RecencyClock, check_schedule, plan_rehearsal

from .permuted import permuted_stream
from .sources.base import SourceData


def power_law_permuted_stream(
    source: SourceData,
    n_experiences: int = 10,
    permutation_seed: int = 0,
    first_identity: bool = True,
    schedule: str = "power_law",
    exponent: float = 1.0,
    decay: float = 1.0,
    rehearsal_size: int = 1000,
    reset_recency: bool = False,
    seed: int = 0,
    name: str | None = None,
) -> Stream:
    """A domain-incremental permuted stream whose experiences bring earlier tasks back by ``schedule``."""
    check_schedule(schedule, exponent, decay)
    check_int(".rehearsal_size", rehearsal_size, 0)
    check_choice(".reset_recency", reset_recency, (True, False))
    check_int(".seed", seed, 0)
    base = permuted_stream(source, n_experiences, permutation_seed, first_identity, task_labels=False)
    generator = torch.Generator().manual_seed(seed)
    clock = RecencyClock()
    experiences, revisits = [], []
    for exp in base.experiences:
        now = exp.index
        past = list(range(now))
        plan = plan_rehearsal(clock, past, now, rehearsal_size, schedule, exponent, decay, generator)
        parts = [exp.train]
        for task, count in sorted(plan.items()):
            pool = base.experiences[task].train
            index = torch.randint(len(pool), (count,), generator=generator) if count > len(pool) else \
                torch.randperm(len(pool), generator=generator)[:count]
            parts.append(pool.subset(index))
            if reset_recency:
                clock.see(task, now)
        clock.see(now, now)
        revisits.append({str(t): c for t, c in sorted(plan.items())})
        train = SequenceData.concat(parts)
        experiences.append(Experience(exp.index, exp.task_id, train, exp.test, exp.classes,
                                      exp.name + (f"+rehearsal{sum(plan.values())}" if plan else "")))
    return Stream(
        name=name or f"power_law_{base.name}",
        scenario=base.scenario,
        experiences=tuple(experiences),
        num_classes=base.num_classes,
        input_shape=base.input_shape,
        metadata={**base.metadata, "builder": "power_law_permuted", "schedule": schedule, "exponent": exponent,
                  "decay": decay, "rehearsal_size": rehearsal_size, "reset_recency": reset_recency,
                  "seed": seed, "revisits": revisits},
    )


__all__ = ["power_law_permuted_stream"]
