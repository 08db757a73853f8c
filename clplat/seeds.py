"""Named streams of randomness: every generator a run seeds from its one ``seed`` gets its own
stream name here, so two parts never draw the same numbers by accident.

A generator is ``seeded_generator(seed, SeedStream.X, *more)``: the run's seed, the stream's name
and, where one part needs several generators of the same kind, more integers (the experience,
the DDP rank). ``@unique`` refuses two names with one value at import time. The values are those
the streams had as bare integers, so results at a given seed are unchanged, except
``REFRESH_FISHER`` (it shared 29 with ``HYPERNET``).
"""

from __future__ import annotations

from enum import IntEnum, unique

import torch


@unique
class SeedStream(IntEnum):
    BUFFER = 1                  # replay-buffer sampling (reservoir / class-balanced)
    SHARP_MASKS = 7             # SHARP: connection masks, regrowth, re-initialisation
    SHARP_REPLAY = 8            # SHARP: replay draws from its activation memory
    EWC = 11                    # EWC: the Fisher's sample subset
    LWF = 13                    # LwF: head warm-up batches
    AGEM = 17                   # A-GEM: the reference batch
    POWER_LAW = 19              # power-law rehearsal: which past samples each session revisits
    REFRESH_NOISE = 23          # refresh: the unlearning step's noise
    HYPERNET = 29               # hypernetwork: its own draws
    FPF = 31                    # FPF: fine-tuning batches
    FPF_BUFFER = 37             # FPF as a plugin: its buffer's draws
    REFRESH_FISHER = 41         # refresh: the Fisher's sample subset
    EVAL_SUBSET = 7919          # the evaluator's fixed per-experience subsets
    TRAIN_BATCHES = 104729      # the order of each experience's training batches


def seeded_generator(seed: int, stream: SeedStream, *more: int) -> torch.Generator:
    """A CPU generator for one named stream, independent of the global RNG and of other streams.

    The key is hashed as plain integers: an enum member's own hash is its name's, which Python
    randomises per process.
    """
    g = torch.Generator()
    g.manual_seed(hash((int(seed), int(stream), *map(int, more))) & 0x7FFF_FFFF_FFFF_FFFF)
    return g
