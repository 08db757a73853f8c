"""Replay buffers and the tensor batch loader."""

from __future__ import annotations

import math

import pytest
import torch

from clplat.buffers import ReplayBuffer
from clplat.data import ExperienceLoader, iterations_for
from clplat.errors import ConfigError
from clplat.stream import SequenceData


def _offer(buffer: ReplayBuffer, labels: torch.Tensor, batch: int) -> None:
    for start in range(0, len(labels), batch):
        y = labels[start : start + batch]
        x = y.float().view(-1, 1, 1)  # the sample's id as its input, to check pairing
        buffer.add(x, y, torch.zeros_like(y))


def test_reservoir_keeps_a_uniform_sample():
    """After N offers every sample is kept with probability M/N, whatever its position."""
    N, M, runs = 200, 20, 400
    hits = torch.zeros(N)
    for seed in range(runs):
        buffer = ReplayBuffer(M, generator=torch.Generator().manual_seed(seed))
        _offer(buffer, torch.arange(N), batch=16)
        assert len(buffer) == M and buffer.num_seen == N
        assert torch.equal(buffer.x.view(-1).long(), buffer.y)  # inputs stay paired with labels
        hits[buffer.y] += 1
    freq = hits / runs
    expected = M / N
    # binomial std of one frequency: sqrt(p(1-p)/runs) = 0.015; the first-half/second-half
    # means average 100 samples each, so their std is ~0.0015
    assert abs(freq[: N // 2].mean() - expected) < 0.01
    assert abs(freq[N // 2 :].mean() - expected) < 0.01
    assert (freq - expected).abs().max() < 6 * math.sqrt(expected * (1 - expected) / runs)


def test_reservoir_batch_insertion_matches_one_by_one():
    """Vectorised batch insertion keeps the sequential semantics of algorithm R."""
    labels = torch.arange(300)
    batched = ReplayBuffer(50, generator=torch.Generator().manual_seed(3))
    _offer(batched, labels, batch=300)
    # algorithm R applied one sample at a time with the same random draws
    draws = torch.rand(300, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    memory = list(range(50))
    for i in range(50, 300):
        slot = int(draws[i] * (i + 1))
        if slot < 50:
            memory[slot] = i
    assert batched.y.tolist() == memory


def test_class_balanced_policy_balances_an_imbalanced_stream():
    labels = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(60, dtype=torch.long),
                        torch.full((40,), 2, dtype=torch.long)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    cb = ReplayBuffer(90, policy="class_balanced", generator=torch.Generator().manual_seed(1))
    _offer(cb, labels, batch=32)
    counts = cb.class_counts()
    assert counts == {0: 30, 1: 30, 2: 30}
    rs = ReplayBuffer(90, generator=torch.Generator().manual_seed(1))
    _offer(rs, labels, batch=32)
    assert rs.class_counts()[0] > 60  # plain reservoir mirrors the imbalance


def test_buffer_sampling_and_state_round_trip():
    buffer = ReplayBuffer(10, generator=torch.Generator().manual_seed(0))
    _offer(buffer, torch.arange(25), batch=5)
    batch = buffer.sample(6)
    assert batch["x"].shape == (6, 1, 1) and len(set(batch["y"].tolist())) == 6  # no replacement
    assert buffer.sample(100)["y"].shape == (10,)
    clone = ReplayBuffer(10, generator=torch.Generator().manual_seed(99))
    clone.load_state_dict(buffer.state_dict())
    assert torch.equal(clone.sample(4)["y"], buffer.sample(4)["y"])  # same memory, same RNG state
    assert buffer.nbytes() == 10 * (4 + 8 + 8)
    with pytest.raises(ConfigError, match="^policy"):
        ReplayBuffer(10, policy="fifo")


def test_loader_yields_the_budget_and_covers_every_sample_per_pass():
    data = SequenceData.with_task(torch.arange(10.0).view(10, 1, 1), torch.arange(10), 0)
    loader = ExperienceLoader(data, batch_size=4, iterations=6, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(loader) == len(batches) == 6
    assert [len(b[1]) for b in batches] == [4, 4, 2, 4, 4, 2]
    first_pass = torch.cat([b[1] for b in batches[:3]])
    assert sorted(first_pass.tolist()) == list(range(10))
    again = list(ExperienceLoader(data, 4, 6, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))


def test_iterations_for_budget():
    assert iterations_for(100, 32, epochs=2, iterations=None) == 8
    assert iterations_for(100, 32, epochs=2, iterations=5, scale=3) == 15
    with pytest.raises(ConfigError):
        iterations_for(100, 32, epochs=None, iterations=None)
