"""ContinualEvaluator: fixed subsets, one batched pass, exact per-task counts, cadence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clplat.errors import ConfigError
from clplat.evaluation.evaluator import ContinualEvaluator
from clplat.strategies.naive import Naive
from tests.test_strategies import toy_stream, wire


def make(stream, **kwargs):
    module = wire(Naive(), stream)
    return module, ContinualEvaluator(stream, **kwargs)


def test_subsets_are_fixed_seeded_and_capped():
    stream = toy_stream(n_exp=3, per_exp=8)
    _, a = make(stream, subset_size=5, subset_seed=1)
    _, b = make(stream, subset_size=5, subset_seed=1)
    _, c = make(stream, subset_size=5, subset_seed=2)
    assert a.subset_indices == b.subset_indices != c.subset_indices
    assert a.counts == [5, 5, 5] and a.offsets == [0, 5, 10, 15]
    _, big = make(stream, subset_size=100)
    assert big.counts == [8, 8, 8]


def test_evaluation_counts_match_a_per_task_reference():
    torch.manual_seed(0)
    stream = toy_stream(n_exp=3, per_exp=8)
    module, ev = make(stream, subset_size=6, batch_size=4, tasks="all")  # batches straddle tasks
    trainer = SimpleNamespace(global_step=7, loggers=[])
    ev.begin_experience(1)
    result = ev._score(trainer, module)
    module.eval()
    for k, exp in enumerate(stream):
        idx = torch.tensor(ev.subset_indices[k])
        with torch.no_grad():
            logits = module(exp.test.x[idx], exp.test.task[idx])
        assert result.correct[k] == int((logits.argmax(1) == exp.test.y[idx]).sum())
        assert result.loss[k] == pytest.approx(F.cross_entropy(logits, exp.test.y[idx]).item(), rel=1e-5)
    assert result.global_iter == 7 and result.experience == 1 and result.n == [6, 6, 6]
    assert module.training is False  # restored to the mode it had


def test_seen_tasks_are_a_prefix_and_training_mode_is_restored():
    stream = toy_stream(n_exp=3)
    module, ev = make(stream, subset_size=4)
    module.train()
    ev.begin_experience(1)
    result = ev._score(SimpleNamespace(global_step=3, loggers=[]), module)
    assert len(result.correct) == 2 and module.training


def test_cadence_initial_and_boundary_dedup():
    stream = toy_stream(n_exp=2)
    module, ev = make(stream, every_n_iters=3, subset_size=4)
    trainer = SimpleNamespace(global_step=0, loggers=[])
    module.to = lambda *a, **k: module
    ev.on_train_start(trainer, module)
    for step in range(1, 7):
        trainer.global_step = step
        ev.on_train_batch_end(trainer, module, None, None, step - 1)
    ev.evaluate_boundary(trainer, module)  # step 6 was just evaluated, same model: that row is the boundary
    ev.begin_experience(1)
    ev.evaluate_boundary(trainer, module)  # same step, next experience (no training): a new one
    table = ev.results.to_frame()
    assert sorted(set(table.global_iter)) == [0, 3, 6]
    assert table[table.initial].global_iter.tolist() == [0]
    boundary = table[table.boundary]
    assert boundary.experience.tolist() == [0, 1, 1] and boundary.eval_task.tolist() == [0, 0, 1]
    assert len(ev.results) == 4


def test_boundary_after_end_of_experience_work_is_a_row_of_its_own():
    """A strategy that changes the model after the last step (fine-tuning, rehearsal) gets a
    boundary row of the changed model; the periodic row of the same step stays, before it."""
    stream = toy_stream(n_exp=2)
    module, ev = make(stream, every_n_iters=2, subset_size=8)
    trainer = SimpleNamespace(global_step=2, loggers=[])
    ev.on_train_batch_end(trainer, module, None, None, 1)
    before = ev.results.last
    with torch.no_grad():  # the "after_experience" work: a head that now predicts class 0 only
        module.head.linear.weight.zero_()
        module.head.linear.bias.copy_(-torch.arange(float(stream.num_classes)))
    boundary = ev.evaluate_boundary(trainer, module)
    assert boundary is not before and boundary.boundary and not before.boundary
    assert [e.global_iter for e in ev.results.evaluations] == [2, 2]
    exp = stream[0]
    idx = torch.tensor(ev.subset_indices[0])
    assert boundary.correct == [int((exp.test.y[idx] == 0).sum())]


def test_chance_is_the_mean_inverse_number_of_predictable_classes():
    stream = toy_stream(n_exp=3)  # 6 classes, single unmasked head: chance 1/6 everywhere
    module, ev = make(stream, subset_size=4, tasks="all")
    assert ev._score(SimpleNamespace(global_step=0, loggers=[]), module).chance == pytest.approx([1 / 6] * 3)
    module.head.mask_unseen = True
    module.head.observe_classes([0, 1, 2, 3])  # 4 classes predictable
    assert ev._score(SimpleNamespace(global_step=0, loggers=[]), module).chance == pytest.approx([1 / 4] * 3)


def test_subsets_do_not_depend_on_the_run_seed(tmp_path):
    from clplat.experiment import run_experiment
    from tests.conftest import TINY, compose_config

    def subsets(seed: int) -> list[list[int]]:
        cfg = compose_config([*TINY, "strategy=naive", f"seed={seed}", "plots=false", "trainer.iterations=1"],
                             tmp_path / f"seed{seed}")
        run_experiment(cfg)
        ckpt = torch.load(tmp_path / f"seed{seed}" / "checkpoints" / "exp_4.ckpt", weights_only=False)
        return next(v for k, v in ckpt["callbacks"].items() if "ContinualEvaluator" in k)["subset_indices"]

    assert subsets(0) == subsets(1)


def test_bad_evaluator_arguments():
    stream = toy_stream()
    with pytest.raises(ConfigError, match="eval.every_n_iters"):
        ContinualEvaluator(stream, every_n_iters=0)
    with pytest.raises(ConfigError, match="eval.tasks"):
        ContinualEvaluator(stream, tasks="future")
    with pytest.raises(ConfigError, match="eval.subset_seed"):
        ContinualEvaluator(stream, subset_seed=-1)
