"""strategy=separate: one network per task, kept intact, each task predicted by its own network."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from clplat.backbones import GRUBackbone
from clplat.errors import ConfigError
from clplat.heads import SingleHead
from clplat.hooks import Hooks
from clplat.module import ContinualModule
from clplat.stream import Scenario
from clplat.strategies.separate import SeparateNetworks
from tests.helpers import assert_resume_matches_uninterrupted, full_batch_steps
from tests.test_strategies import toy_stream, wire


def task_il(n_exp: int = 3):
    return dataclasses.replace(toy_stream(n_exp=n_exp, per_exp=16), scenario=Scenario.TASK_INCREMENTAL)


def train(strategy: SeparateNetworks, module: ContinualModule, experience, steps: int = 5) -> None:
    full_batch_steps(strategy, module, experience, steps)
    strategy.after_experience(experience)


def weights(module: ContinualModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("init", ["fresh", "previous"])
def test_each_task_starts_from_its_init_and_its_network_is_kept_unchanged(init):
    stream = task_il()
    strategy = SeparateNetworks(init=init)
    module = wire(strategy, stream)
    initial = weights(module)
    train(strategy, module, stream.experiences[0])
    after_task0 = weights(module)
    assert not same(after_task0, initial)  # task 0 was trained

    strategy.before_experience(stream.experiences[1])
    assert same(weights(module), initial if init == "fresh" else after_task0)
    assert same(strategy.networks[0], after_task0)
    train(strategy, module, stream.experiences[1])
    train(strategy, module, stream.experiences[2])
    assert same(strategy.networks[0], after_task0)  # never touched by later tasks

    x0 = stream.experiences[0].test.x
    task0 = stream.experiences[0].test.task
    reference = ContinualModule(GRUBackbone(2, 8), SingleHead(8, stream.num_classes), Hooks(SeparateNetworks()),
                                lambda p: torch.optim.SGD(p, lr=0.5))
    reference.load_state_dict(after_task0)
    with torch.no_grad():
        expected = reference(x0, task0)[:, [0, 1]]
        got = strategy.predict(x0, task0)
    assert torch.allclose(got[:, [0, 1]], expected, atol=1e-6)
    assert torch.isinf(got[:, 2:]).all()  # masked to the task's classes


def test_a_batch_of_mixed_tasks_uses_each_samples_network_and_the_live_one_for_the_current_task():
    stream = task_il()
    strategy = SeparateNetworks()
    module = wire(strategy, stream)
    for exp in stream.experiences[:2]:
        train(strategy, module, exp)
    x = torch.cat([stream.experiences[0].test.x[:4], stream.experiences[1].test.x[:4]])
    task = torch.cat([stream.experiences[0].test.task[:4], stream.experiences[1].test.task[:4]])
    with torch.no_grad():
        mixed = strategy.predict(x, task)
        alone0 = strategy.predict(x[:4], task[:4])
        live1 = module(x[4:], task[4:])[:, [2, 3]]
    assert torch.allclose(mixed[:4], alone0)
    assert torch.allclose(mixed[4:, [2, 3]], live1, atol=1e-6)


def test_memory_counts_every_stored_network_and_the_initial_weights():
    stream = task_il(n_exp=3)
    strategy = SeparateNetworks()
    module = wire(strategy, stream)
    network_bytes = sum(v.numel() * v.element_size() for v in module.state_dict().values())
    for exp in stream.experiences:
        train(strategy, module, exp, steps=1)
    assert strategy.memory_parts() == {"networks": 2 * network_bytes, "initial_weights": network_bytes}
    assert strategy.summary()["separate_networks"] == 3


def test_without_task_ids_the_most_confident_network_answers():
    stream = toy_stream(n_exp=2, per_exp=16)  # class-IL
    strategy = SeparateNetworks()
    module = wire(strategy, stream)
    assert strategy.task_inference == "entropy"
    for exp in stream.experiences:
        train(strategy, module, exp, steps=30)
    x = torch.cat([exp.test.x for exp in stream.experiences])
    no_ids = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        got = strategy.predict(x, no_ids)
        per_task = []  # each network's log-probabilities over its own task's classes, by hand
        for t, net in ((0, strategy.networks[0]), (1, None)):
            logits = module(x, no_ids) if net is None else torch.func.functional_call(module, net, (x, no_ids))
            per_task.append(torch.log_softmax(logits[:, [2 * t, 2 * t + 1]], dim=1))
    entropy = torch.stack([-(lp.exp() * lp).sum(1) for lp in per_task])
    choice = entropy.argmin(0)
    assert 0 < int(choice.sum()) < len(x)  # both networks answer some samples
    for i, t in enumerate(choice.tolist()):
        classes = [2 * t, 2 * t + 1]
        assert torch.allclose(got[i, classes], per_task[t][i], atol=1e-5)
        assert (got[i, [c for c in range(4) if c not in classes]] < -13).all()


def test_given_task_ids_are_refused_on_a_stream_without_them():
    strategy = SeparateNetworks(task_inference="given")
    with pytest.raises(ConfigError, match="task_inference"):
        wire(strategy, toy_stream(n_exp=2))


def test_a_task_il_run_forgets_nothing_and_resumes_equal_to_an_uninterrupted_run(make_cfg, monkeypatch):
    run_dir = assert_resume_matches_uninterrupted(make_cfg, monkeypatch,
                                                  ["strategy=separate", "stream=split_mnist1d_til"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["forgetting"] == pytest.approx(0.0, abs=1e-9)
    assert summary["resources"]["memory_bytes_by_part"]["networks"] > 0
