"""DER / DER++, power-law rehearsal and the power-law environment: their core steps on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clplat.buffers import ReplayBuffer
from clplat.errors import ConfigError
from clplat.experiment import build_hooks
from clplat.stream import Scenario
from clplat.strategies.parts.common import finite_mse, snapshot
from clplat.strategies.der import DER
from clplat.strategies.power_law import PowerLawRehearsal, draw_from_pool
from clplat.rehearsal_schedule import RecencyClock, plan_rehearsal, revisit_probabilities, sample_counts
from clplat.streams.power_law_env import power_law_permuted_stream
from clplat.streams.sources.base import SourceData
from tests.conftest import compose_config
from tests.test_strategies import toy_stream, wire




def batch_of(exp):
    return exp.train.x, exp.train.y, exp.train.task


# -- reservoir + DER ------------------------------------------------------------------------------


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
    """After n offers, each of them is in memory with probability capacity / n (Vitter's R)."""
    n, capacity, trials = 40, 10, 800
    hits = torch.zeros(n)
    for t in range(trials):
        buffer = ReplayBuffer(capacity, "reservoir", torch.Generator().manual_seed(t))
        for start in range(0, n, 8):  # batched offers, as in training
            ids = torch.arange(start, start + 8)
            buffer.add(ids.float().view(-1, 1, 1), ids, ids)
        hits[buffer.y] += 1
    freq = hits / trials
    expected = capacity / n
    sd = math.sqrt(expected * (1 - expected) / trials)
    assert float((freq - expected).abs().max()) < 5 * sd
    # early and late samples are equally likely to survive
    assert abs(float(freq[:20].mean() - freq[20:].mean())) < 3 * sd


def test_finite_mse_ignores_masked_logits():
    pred = torch.tensor([[1.0, float("-inf")], [2.0, 3.0]])
    target = torch.tensor([[0.0, float("-inf")], [2.0, 1.0]])
    torch.testing.assert_close(finite_mse(pred, target), torch.tensor((1.0 + 0.0 + 4.0) / 3))
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(finite_mse(a, b), F.mse_loss(a, b))


def test_der_stores_the_steps_logits_and_regresses_them():
    torch.manual_seed(0)
    stream = toy_stream()
    der = DER(buffer_size=8, alpha=0.7)
    module = wire(der, stream)
    batch = batch_of(stream[0])
    loss = der.training_step(batch)
    logits = module(batch[0], batch[2]).detach()
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch[1]))  # empty buffer: CE only
    der.after_optimizer_step(batch)
    assert len(der.buffer) == 8
    torch.testing.assert_close(der.buffer.extras["logits"], logits)
    with torch.no_grad():  # the network moves: the stored logits now pull it back
        for p in module.parameters():
            p.add_(0.05)
    batch1 = batch_of(stream[1])
    state = der.buffer.generator.get_state()
    loss = der.training_step(batch1)
    der.buffer.generator.set_state(state)
    memory = der.buffer.sample(8)
    expected = F.cross_entropy(module(batch1[0]), batch1[1]) + 0.7 * F.mse_loss(module(memory["x"]), memory["logits"])
    torch.testing.assert_close(loss, expected)


def test_derpp_adds_ce_on_an_independent_draw():
    torch.manual_seed(0)
    stream = toy_stream()
    derpp = DER(buffer_size=8, alpha=0.0, beta=2.0, replay_batch_size=3)
    assert derpp.name == "derpp" and DER().name == "der"
    module = wire(derpp, stream)
    derpp.training_step(batch_of(stream[0]))
    derpp.after_optimizer_step(batch_of(stream[0]))
    seen = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    derpp.training_step(batch_of(stream[1]))
    assert seen == [8, 3]  # stream batch, then one buffer draw (alpha = 0: no logit draw)
    with pytest.raises(ConfigError, match=r"^alpha"):
        DER(alpha=-1)


# -- the power-law schedule -----------------------------------------------------------------------


@pytest.mark.parametrize("schedule, law", [
    ("power_law", lambda dt: dt ** -1.5),
    ("exponential", lambda dt: math.exp(-0.7 * dt)),
    ("uniform", lambda dt: 1.0),
])
def test_empirical_revisit_frequencies_follow_the_law(schedule, law):
    ages = torch.arange(1, 9, dtype=torch.float64)
    probs = revisit_probabilities(ages, schedule, exponent=1.5, decay=0.7)
    weights = torch.tensor([law(float(a)) for a in ages], dtype=torch.float64)
    torch.testing.assert_close(probs, weights / weights.sum())
    total = 200_000
    counts = sample_counts(probs, total, torch.Generator().manual_seed(0))
    assert int(counts.sum()) == total
    freq = counts.double() / total
    sd = (probs * (1 - probs) / total).sqrt()
    assert bool(((freq - probs).abs() < 5 * sd + 1e-12).all())
    if schedule == "power_law":  # a straight line of slope -exponent in log-log
        slope = torch.linalg.lstsq(torch.stack([ages.log(), torch.ones(8, dtype=torch.float64)], 1),
                                   freq.log().unsqueeze(1)).solution[0, 0]
        assert abs(float(slope) + 1.5) < 0.05


def test_recency_clock_ages_and_plans():
    clock = RecencyClock()
    for t in range(4):
        clock.see(t, t)
    assert clock.ages([0, 1, 2, 3], 4).tolist() == [4, 3, 2, 1]
    plan = plan_rehearsal(clock, [0, 1, 2, 3], 4, 1000, "power_law", 1.0, 1.0, torch.Generator().manual_seed(0))
    assert sum(plan.values()) == 1000 and plan[3] > plan[2] > plan[0]  # recent tasks come back more
    with pytest.raises(ValueError, match="ages"):
        revisit_probabilities(torch.tensor([0.0, 1.0]), "power_law")


def test_draw_from_pool_uses_every_sample_as_evenly_as_possible():
    stream = toy_stream(per_exp=4)
    pool = stream[0].train
    drawn = draw_from_pool(pool, 10, torch.Generator().manual_seed(0))
    assert len(drawn) == 10
    _, counts = torch.unique(drawn.x.reshape(10, -1), dim=0, return_counts=True)
    assert sorted(counts.tolist()) == [2, 2, 3, 3]


# -- the power-law strategy -----------------------------------------------------------------------


def test_power_law_after_task_rehearses_past_pools_by_the_schedule():
    torch.manual_seed(0)
    stream = toy_stream(n_exp=4)
    strategy = PowerLawRehearsal(rehearsal_fraction=50, buffer_size=12, when="after_task", batch_size=50, seed=0)
    module = wire(strategy, stream)
    strategy.after_experience(stream[0])  # nothing to rehearse yet: the pool is stored
    assert strategy.revisits == [] and len(strategy.pools[0]) == 8 and strategy.rehearsal_steps == 0
    for k in (1, 2, 3):
        before = snapshot(module)
        strategy.after_experience(stream[k])
        assert any(not torch.equal(before[n], p) for n, p in snapshot(module).items())  # it trained
    assert [r["time"] for r in strategy.revisits] == [1, 2, 3]
    last = strategy.revisits[-1]["counts"]
    assert set(last) <= {"0", "1", "2"} and sum(last.values()) == 400  # 50 x the task's 8 samples
    assert last["2"] > last["0"]  # age 1 vs age 3: 1/1 vs 1/3 of the weight
    assert strategy.rehearsal_steps == 3 * 8
    assert strategy.summary()["rehearsal_samples"] == 1200
    assert [len(p) for p in strategy.pools.values()] == [3, 3, 3, 3]  # 12 samples shared by 4 tasks


def shipped(*overrides: str) -> PowerLawRehearsal:
    """The strategy as conf/strategy/power_law.yaml builds it (the defaults under test)."""
    strategy = build_hooks(compose_config(["strategy=power_law", *overrides])).base
    assert isinstance(strategy, PowerLawRehearsal)
    return strategy


def test_power_law_defaults_mix_rehearsal_into_every_experience_and_train_nothing_else():
    """The shipped default trains each experience on its own data *plus* older tasks' rehearsed
    samples, and never takes a step on older tasks alone (the old ``after_task`` default did, with
    a fresh optimizer, and erased the task just learned in class-IL)."""
    torch.manual_seed(0)
    stream = toy_stream(n_exp=4, per_exp=40)
    strategy = shipped()
    module = wire(strategy, stream)
    for k in range(4):
        data = strategy.train_data(stream[k])
        n = len(stream[k].train)
        assert torch.equal(data.x[:n], stream[k].train.x)  # all of its own data
        if k:
            rehearsed = data.task[n:]
            assert len(rehearsed) == n  # rehearsal_fraction 1: as many rehearsed samples as its own
            assert set(rehearsed.tolist()) <= set(range(k)) and 0 in rehearsed.tolist()  # older tasks only
        before = snapshot(module)
        strategy.after_experience(stream[k])
        assert all(torch.equal(before[name], p) for name, p in snapshot(module).items())  # no extra steps
    assert strategy.rehearsal_steps == 0


def test_power_law_default_memory_is_replays():
    """At the shipped defaults the pools together hold replay's buffer_size, shared by the tasks
    seen, so at most as many bytes as replay's buffer; with memory_budget_bytes, replay's count."""
    stream = toy_stream(n_exp=5, per_exp=200)
    strategy = shipped()
    replay = build_hooks(compose_config(["strategy=replay"])).base
    wire(strategy, stream)
    wire(replay, stream)
    for exp in stream:
        strategy.after_experience(exp)
        replay.after_optimizer_step((exp.train.x, exp.train.y, exp.train.task))
        pools = strategy.memory_parts()["pools"]
        assert pools <= sum(replay.memory_parts().values())
    assert [len(p) for p in strategy.pools.values()] == [100] * 5 and len(replay.buffer) == 500
    assert pools == sum(replay.memory_parts().values())
    per_sample = 5 * 2 * 4 + 8 + 8
    budget = 77 * per_sample + 3
    strategy, replay = shipped(f"memory_budget_bytes={budget}"), build_hooks(
        compose_config(["strategy=replay", f"memory_budget_bytes={budget}"])).base
    wire(strategy, stream)
    wire(replay, stream)
    assert strategy.buffer_size == replay.buffer_size == 77
    for exp in stream:
        strategy.after_experience(exp)
        assert strategy.memory_parts()["pools"] <= budget
    assert [len(p) for p in strategy.pools.values()] == [15] * 5  # 77 // 5
    with pytest.raises(ConfigError, match=r"^strategy\.buffer_size"):
        wire(PowerLawRehearsal(buffer_size=4), stream)  # fewer samples than tasks


@pytest.mark.parametrize("control", ["uniform", "exponential"])
def test_the_schedule_changes_which_old_samples_are_rehearsed(control):
    """Power law vs a control differs in one key; same pools, same amount, different tasks revisited."""
    torch.manual_seed(0)
    stream = toy_stream(n_exp=6, per_exp=400)
    drawn = {}
    for schedule in ("power_law", control):
        strategy = shipped(f"strategy.schedule={schedule}")
        wire(strategy, stream)
        for k in range(5):
            strategy.train_data(stream[k])
            strategy.after_experience(stream[k])
        data = strategy.train_data(stream[5])
        drawn[schedule] = torch.bincount(data.task[400:], minlength=5)
        assert int(drawn[schedule].sum()) == 400  # the same rehearsal amount
    power, other = drawn["power_law"], drawn[control]
    # ages 5..1: power law weights 1/5..1 -> p(age 1) = 0.438, p(age 5) = 0.088
    assert abs(int(power[4]) - 0.438 * 400) < 40 and abs(int(power[0]) - 0.088 * 400) < 25
    if control == "uniform":
        assert all(abs(int(c) - 80) < 30 for c in other)  # 1/5 each
        assert power[4] > other[4] + 60 and power[0] < other[0] - 20
    else:  # exp(-age): far steeper than age^-1; the oldest task is almost never revisited
        assert other[4] > power[4] + 60 and other[0] < power[0]


def test_power_law_interleaved_mixes_rehearsal_into_the_next_task():
    torch.manual_seed(0)
    stream = toy_stream(n_exp=3)
    strategy = PowerLawRehearsal(schedule="uniform", rehearsal_fraction=1.25, buffer_size=24)
    assert strategy.name == "power_law_uniform"
    wire(strategy, stream)
    assert strategy.train_data(stream[0]) is stream[0].train
    strategy.after_experience(stream[0])
    data = strategy.train_data(stream[1])
    assert len(data) == 8 + 10 and (data.task[8:] == 0).all() and set(data.y[8:].tolist()) <= {0, 1}
    assert strategy.train_data(stream[1]) is data  # drawn once per experience
    strategy.after_experience(stream[1])
    data = strategy.train_data(stream[2])
    assert set(data.task[8:].tolist()) <= {0, 1} and len(data) == 18


def test_power_law_reset_recency_restarts_the_age_of_rehearsed_tasks():
    stream = toy_stream(n_exp=4)
    strategy = PowerLawRehearsal(rehearsal_fraction=6, buffer_size=8, reset_recency=True, when="after_task",
                                 batch_size=50)
    wire(strategy, stream)
    for k in range(3):
        strategy.after_experience(stream[k])
    assert strategy.clock.last_seen == {0: 2, 1: 2, 2: 2}
    with pytest.raises(ConfigError, match=r"^schedule"):
        PowerLawRehearsal(schedule="zipf")
    with pytest.raises(ConfigError, match=r"^when"):
        PowerLawRehearsal(when="sometimes")
    with pytest.raises(ConfigError, match=r"^rehearsal_fraction"):
        PowerLawRehearsal(rehearsal_fraction=-0.5)


# -- the environment ------------------------------------------------------------------------------


def tiny_source() -> SourceData:
    g = torch.Generator().manual_seed(0)
    return SourceData(name="toy", train_x=torch.randn(30, 4, 2, generator=g), train_y=torch.arange(30) % 10,
                      test_x=torch.randn(10, 4, 2, generator=g), test_y=torch.arange(10), num_classes=10)


def test_power_law_environment_brings_past_permutations_back_without_a_buffer():
    stream = power_law_permuted_stream(tiny_source(), n_experiences=4, rehearsal_size=50, exponent=2.0)
    assert stream.scenario is Scenario.DOMAIN_INCREMENTAL and stream.name == "power_law_permuted_toy"
    assert len(stream[0].train) == 30 and [len(e.train) for e in stream][1:] == [80, 80, 80]
    revisits = stream.metadata["revisits"]
    assert revisits[0] == {} and revisits[1] == {"0": 50}
    for k, exp in enumerate(stream):
        assert (exp.train.task[:30] == k).all() and (exp.train.task[30:] < k).all()
        assert len(exp.test) == 10 and (exp.test.task == k).all()
    # rehearsed samples are exact copies of earlier tasks' training samples
    rehearsed = stream[1].train.x[30:]
    assert all(any(torch.equal(r, s) for s in stream[0].train.x) for r in rehearsed)
    again = power_law_permuted_stream(tiny_source(), n_experiences=4, rehearsal_size=50, exponent=2.0)
    assert all(torch.equal(a.train.x, b.train.x) for a, b in zip(stream, again))
    with pytest.raises(ConfigError, match=r"^schedule"):
        power_law_permuted_stream(tiny_source(), schedule="nope")
