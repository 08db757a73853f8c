"""Synthetic recurrent-network curricula, generated from a seed (no files).

Two families, both labelled *by construction* from the generated bits, so a wrong label can only
come from a bug in one of the small pure functions below (which the tests recompute):

**Memory curricula** (Khajehabdollahi et al., "Emergent mechanisms for long timescales depend on
training curriculum and affect performance in memory tasks", ICLR 2024). A sequence of random
bits; experience ``k`` trains memory length ``N_k = n_start + k``:

- ``parity``: the label is the parity of the last ``N`` bits;
- ``dms`` (N-delayed match-to-sample): the label is 1 when the last bit equals the bit ``N``
  steps before it.

The paper's two curricula are the ``heads`` option. ``single``: one shared binary output;
experience ``k`` trains only ``N_k``, and because the evaluator keeps testing every earlier
experience, the accuracy matrix shows how much of the smaller ``N`` survives (with one output
and identical input statistics, a smaller ``N`` is a *conflicting* labelling of the same inputs,
so this is where forgetting is expected). ``multi``: one head per ``N``, all trained together —
experience ``k``'s training set holds the same fresh input sequences labelled once for every
``N_j, j <= k``, each copy with its own task id, so the multi-head model (built from
``Stream.task_classes``) trains every head at once, as the paper's multi-head network does.
The paper reads a label at every time step of a continuous bit stream; clplat classifies whole
sequences, so the label is read at the last step and every sequence has at least ``N_max`` older
distractor bits before the window (``seq_len`` defaults to ``2 * N_max``): the network must still
forget what lies outside the window, which is what makes the task a memory-*timescale* task.

**State tracking** (Grazzi et al., "Unlocking State-Tracking in Linear RNNs Through Negative
Eigenvalues", ICLR 2025; tasks from Delétang et al., "Neural Networks and the Chomsky
Hierarchy", ICLR 2023). ``count``: bits, the label is the number of ones modulo ``modulus``
(``modulus=2`` is parity); ``sum``: tokens ``0 .. modulus-1``, the label is their sum modulo
``modulus``. Experience ``k`` holds sequences whose lengths are drawn from a range that grows with
``k`` (``[length_start + k*length_step, length_start + (k+1)*length_step - 1]``), so later
experiences are longer, and evaluating future experiences (``eval.tasks=all``) measures length
generalisation. Shorter sequences are *left*-padded with a dedicated pad channel up to the longest
length, so the last step is always the sequence's end (``pooling: last`` reads the answer there)
and padding can never be confused with a token.

Seeds: sample ``i`` of experience ``k`` depends only on ``(seed, k, split)``, so a longer stream
extends a shorter one with the same experiences; ``order_seed`` (None: the growing curriculum)
permutes the order in which the ``N`` values / length ranges are presented, to compare the
curriculum with a seeded shuffled order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clplat.errors import ConfigError, check_choice, check_int
from clplat.stream import Experience, Scenario, SequenceData, Stream

MEMORY_TASKS = ("parity", "dms")
HEADS = ("single", "multi")
ENCODINGS = ("signed", "binary", "onehot")
STATE_TASKS = ("count", "sum")

# Split ids in the per-experience RNG key, so train and test draws never share a stream.
_TRAIN, _TEST = 0, 1


def _rng(seed: int, experience: int, split: int) -> np.random.RandomState:
    """The generator of one (experience, split): legacy ``RandomState`` seeded by an array.

    ``RandomState``'s stream is frozen by numpy, so a published seed names the same data on any
    install; keying by the experience's *position in the curriculum* (not by its ``N``) keeps
    data independent of the stream's length.
    """
    return np.random.RandomState([seed, experience, split])


def task_order(n_experiences: int, order_seed: int | None) -> list[int]:
    """``0 .. n-1`` (the growing curriculum) or a seeded permutation of it (same rule as split)."""
    if order_seed is None:
        return list(range(n_experiences))
    return [int(i) for i in np.random.RandomState(order_seed).permutation(n_experiences)]


# ---------------------------------------------------------------- labels (pure functions)


def parity_labels(bits: Tensor, n: int) -> Tensor:
    """Parity of the last ``n`` bits of each row of ``bits`` ``(N, T)`` (values 0/1) -> ``(N,)``."""
    return bits[:, -n:].sum(dim=1).remainder(2).long()


def dms_labels(bits: Tensor, n: int) -> Tensor:
    """1 where the last bit equals the bit ``n`` steps earlier (delayed match-to-sample)."""
    return (bits[:, -1] == bits[:, -1 - n]).long()


def modular_labels(tokens: Tensor, lengths: Tensor, task: str, modulus: int) -> Tensor:
    """Label of left-padded ``tokens`` ``(N, T)`` whose last ``lengths`` entries are the sequence.

    ``count``: number of ones modulo ``modulus``; ``sum``: sum of tokens modulo ``modulus``.
    Padding positions are ignored whatever value they hold.
    """
    T = tokens.shape[1]
    valid = torch.arange(T)[None, :] >= (T - lengths)[:, None]
    values = (tokens == 1).long() if task == "count" else tokens.long()
    return (values * valid).sum(dim=1).remainder(modulus)


def encode_bits(bits: Tensor, encoding: str) -> Tensor:
    """Bits ``(N, T)`` as network inputs ``(N, T, F)``.

    ``signed``: one feature, -1/+1 (zero mean, what the platform's standardisation would give
    for fair bits); ``binary``: one feature, 0/1; ``onehot``: two features.
    """
    if encoding == "signed":
        return (2.0 * bits.float() - 1.0)[..., None]
    if encoding == "binary":
        return bits.float()[..., None]
    return torch.nn.functional.one_hot(bits.long(), 2).float()


# ---------------------------------------------------------------- memory curricula


def curriculum_stream(
    task: str = "parity",
    n_start: int = 2,
    n_experiences: int = 5,
    heads: str = "single",
    seq_len: int | None = None,
    train_samples: int = 2000,
    test_samples: int = 500,
    seed: int = 0,
    order_seed: int | None = None,
    encoding: str = "signed",
    name: str | None = None,
) -> Stream:
    """N-parity / N-DMS with ``N = n_start + k`` at experience ``k`` (see the module docs).

    ``train_samples``/``test_samples`` are the fresh sequences drawn per experience; with
    ``heads=multi`` experience ``k`` trains on ``(k + 1) * train_samples`` labelled copies.
    """
    check_choice(".task", task, MEMORY_TASKS)
    check_choice(".heads", heads, HEADS)
    check_choice(".encoding", encoding, ENCODINGS)
    check_int(".n_start", n_start, minimum=1)
    check_int(".n_experiences", n_experiences, minimum=1)
    check_int(".seq_len", seq_len, minimum=1, allow_none=True)
    check_int(".train_samples", train_samples, minimum=1)
    check_int(".test_samples", test_samples, minimum=1)
    check_int(".seed", seed, minimum=0)
    check_int(".order_seed", order_seed, minimum=0, allow_none=True)
    order = task_order(n_experiences, order_seed)
    ns = [n_start + i for i in order]
    n_max = max(ns)
    T = 2 * n_max if seq_len is None else seq_len
    need = n_max + 1 if task == "dms" else n_max  # dms compares with the bit N steps back
    if T < need:
        raise ConfigError(".seq_len", seq_len, f"must be at least {need} for {task} with N up to {n_max}")
    label = parity_labels if task == "parity" else dms_labels

    def draw(k: int, split: int, count: int) -> Tensor:
        return torch.from_numpy(_rng(seed, k, split).randint(0, 2, size=(count, T))).long()

    experiences = []
    for k, n in enumerate(ns):
        train_bits, test_bits = draw(k, _TRAIN, train_samples), draw(k, _TEST, test_samples)
        x_train = encode_bits(train_bits, encoding)
        if heads == "multi":  # every head so far, on the same inputs
            train = SequenceData.concat(
                [SequenceData.with_task(x_train, label(train_bits, ns[j]), j) for j in range(k + 1)]
            )
        else:
            train = SequenceData.with_task(x_train, label(train_bits, n), k)
        experiences.append(
            Experience(
                index=k,
                task_id=k,
                train=train,
                test=SequenceData.with_task(encode_bits(test_bits, encoding), label(test_bits, n), k),
                classes=(0, 1),
                name=f"exp{k}:{task}N={n}",
            )
        )
    multi = heads == "multi"
    return Stream(
        name=name or f"{task}_curriculum" + ("_multihead" if multi else ""),
        scenario=Scenario.TASK_INCREMENTAL if multi else Scenario.DOMAIN_INCREMENTAL,
        experiences=tuple(experiences),
        num_classes=2,
        input_shape=(T, experiences[0].train.x.shape[2]),
        metadata={
            "builder": "curriculum",
            "task": task,
            "heads": heads,
            "n_values": ns,
            "n_start": n_start,
            "n_experiences": n_experiences,
            "seq_len": T,
            "train_samples": train_samples,
            "test_samples": test_samples,
            "seed": seed,
            "order_seed": order_seed,
            "encoding": encoding,
        },
    )


# ---------------------------------------------------------------- state tracking


def length_ranges(n_experiences: int, length_start: int, length_step: int) -> list[tuple[int, int]]:
    """Inclusive ``(lo, hi)`` sequence lengths of each experience in curriculum order."""
    return [(length_start + k * length_step, length_start + (k + 1) * length_step - 1) for k in range(n_experiences)]


def encode_tokens(tokens: Tensor, lengths: Tensor, n_tokens: int) -> Tensor:
    """Left-padded tokens ``(N, T)`` -> one-hot ``(N, T, n_tokens + 1)``; the last channel marks padding."""
    T = tokens.shape[1]
    pad = torch.arange(T)[None, :] < (T - lengths)[:, None]
    index = torch.where(pad, torch.full_like(tokens, n_tokens), tokens)
    return torch.nn.functional.one_hot(index.long(), n_tokens + 1).float()


def state_tracking_stream(
    task: str = "count",
    modulus: int = 2,
    n_experiences: int = 5,
    length_start: int = 4,
    length_step: int = 4,
    train_samples: int = 2000,
    test_samples: int = 500,
    seed: int = 0,
    order_seed: int | None = None,
    task_labels: bool = False,
    name: str | None = None,
) -> Stream:
    """Parity / modular counting with sequence lengths growing across experiences.

    All experiences share one input width (``T = length_start + n_experiences * length_step - 1``,
    the longest length). Domain-incremental by default (same classes, the input distribution
    shifts to longer sequences, no task id at test time); ``task_labels=True`` gives a head per
    length range.
    """
    check_choice(".task", task, STATE_TASKS)
    check_int(".modulus", modulus, minimum=2)
    check_int(".n_experiences", n_experiences, minimum=1)
    check_int(".length_start", length_start, minimum=1)
    check_int(".length_step", length_step, minimum=1)
    check_int(".train_samples", train_samples, minimum=1)
    check_int(".test_samples", test_samples, minimum=1)
    check_int(".seed", seed, minimum=0)
    check_int(".order_seed", order_seed, minimum=0, allow_none=True)
    check_choice(".task_labels", task_labels, (True, False))
    n_tokens = 2 if task == "count" else modulus
    curriculum = length_ranges(n_experiences, length_start, length_step)
    order = task_order(n_experiences, order_seed)
    ranges = [curriculum[i] for i in order]
    T = curriculum[-1][1]
    classes = tuple(range(modulus))

    def draw(k: int, split: int, count: int, lo: int, hi: int) -> SequenceData:
        rng = _rng(seed, k, split)
        lengths = torch.from_numpy(rng.randint(lo, hi + 1, size=count)).long()
        tokens = torch.from_numpy(rng.randint(0, n_tokens, size=(count, T))).long()
        tokens = torch.where(torch.arange(T)[None, :] < (T - lengths)[:, None], 0, tokens)  # clean padding
        y = modular_labels(tokens, lengths, task, modulus)
        return SequenceData.with_task(encode_tokens(tokens, lengths, n_tokens), y, k)

    experiences = []
    for k, (lo, hi) in enumerate(ranges):
        experiences.append(
            Experience(
                index=k,
                task_id=k,
                train=draw(k, _TRAIN, train_samples, lo, hi),
                test=draw(k, _TEST, test_samples, lo, hi),
                classes=classes,
                name=f"exp{k}:length={lo}-{hi}",
            )
        )
    default_name = "state_parity" if task == "count" and modulus == 2 else f"state_{task}_mod{modulus}"
    return Stream(
        name=name or default_name,
        scenario=Scenario.TASK_INCREMENTAL if task_labels else Scenario.DOMAIN_INCREMENTAL,
        experiences=tuple(experiences),
        num_classes=modulus,
        input_shape=(T, n_tokens + 1),
        metadata={
            "builder": "state_tracking",
            "task": task,
            "modulus": modulus,
            "length_ranges": [list(r) for r in ranges],
            "padding": "left, pad channel = last feature",
            "n_experiences": n_experiences,
            "length_start": length_start,
            "length_step": length_step,
            "train_samples": train_samples,
            "test_samples": test_samples,
            "seed": seed,
            "order_seed": order_seed,
            "task_labels": task_labels,
        },
    )
