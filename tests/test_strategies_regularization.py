"""EWC / online EWC, SI, LwF and A-GEM: their core steps on tiny tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clplat.backbones import GRUBackbone
from clplat.errors import ConfigError
from clplat.heads import MultiHead
from clplat.hooks import Hooks
from clplat.module import ContinualModule
from clplat.stream import Experience, Scenario, Stream
from clplat.strategies.agem import AGEM, project
from clplat.strategies.parts.common import named_trainable, snapshot
from clplat.strategies.ewc import EWC
from clplat.strategies.parts.fisher import diagonal_fisher
from clplat.strategies.lwf import LwF, distillation
from clplat.strategies.si import SI
from tests.test_strategies import toy_stream, wire




def batch_of(exp: Experience) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return exp.train.x, exp.train.y, exp.train.task


def sgd_step(module: ContinualModule, strategy, batch, lr: float = 0.1) -> None:
    """One step the way Lightning runs it: hooks, backward, optimizer step, hooks."""
    strategy.before_training_step(batch)
    loss = strategy.training_step(batch)
    module.zero_grad()
    loss.backward()
    strategy.before_optimizer_step()
    with torch.no_grad():
        for p in module.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    strategy.after_optimizer_step(batch)


# -- Fisher ---------------------------------------------------------------------------------------


def test_fisher_is_the_confidence_weighted_mean_of_per_sample_squared_gradients():
    torch.manual_seed(0)
    stream = toy_stream(per_exp=6)
    ewc = EWC()
    module = wire(ewc, stream)
    data = stream[0].train
    fisher = diagonal_fisher(module, data, None, torch.Generator().manual_seed(0))
    expected = {n: torch.zeros_like(p) for n, p in named_trainable(module)}
    for i in range(len(data)):
        module.zero_grad()
        ll = torch.log_softmax(module(data.x[i : i + 1], data.task[i : i + 1]), 1)[0, data.y[i]]
        ll.backward()
        for n, p in named_trainable(module):
            expected[n] += ll.exp().detach() * p.grad.pow(2)
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n] / len(data))
    sub = diagonal_fisher(module, data, 2, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v).all() for v in sub.values())


# -- EWC ------------------------------------------------------------------------------------------


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it():
    torch.manual_seed(0)
    stream = toy_stream()
    ewc = EWC(ewc_lambda=3.0, fisher_samples=None)
    module = wire(ewc, stream)
    ewc.before_experience(stream[0])
    assert float(ewc.penalty().detach()) == 0.0  # no anchor yet
    ewc.after_experience(stream[0])
    assert len(ewc.fishers) == 1 and float(ewc.penalty().detach()) == 0.0  # at the anchor
    with torch.no_grad():
        for p in module.parameters():
            p += 0.1
    expected = 3.0 * sum((f * 0.1**2).sum() for f in ewc.fishers[0].values())
    torch.testing.assert_close(ewc.penalty(), expected)
    with torch.no_grad():
        for p in module.parameters():
            p += 0.1  # twice the distance: four times the penalty
    torch.testing.assert_close(ewc.penalty(), 4 * expected)
    batch = batch_of(stream[1])
    torch.testing.assert_close(ewc.training_step(batch), F.cross_entropy(module(*batch[::2]), batch[1]) + ewc.penalty())


def test_ewc_separate_keeps_one_term_per_task_online_keeps_a_decayed_sum():
    torch.manual_seed(0)
    stream = toy_stream(n_exp=3)
    separate, online = EWC(mode="separate", fisher_samples=None), EWC(mode="online", gamma=0.5, fisher_samples=None)
    assert (separate.name, online.name) == ("ewc", "ewc_online")
    m1, m2 = wire(separate, stream), wire(online, stream)
    m2.load_state_dict(m1.state_dict())
    for strategy, module in ((separate, m1), (online, m2)):
        strategy.after_experience(stream[0])
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(0.9)
        strategy.after_experience(stream[1])
        strategy.after_experience(stream[2])  # the last task: nothing to protect afterwards
    assert len(separate.fishers) == 2 and len(online.fishers) == 1
    for n in online.fishers[0]:
        torch.testing.assert_close(online.fishers[0][n], 0.5 * separate.fishers[0][n] + separate.fishers[1][n])
        torch.testing.assert_close(online.anchors[0][n], separate.anchors[1][n])


def test_ewc_bad_arguments_name_their_key():
    with pytest.raises(ConfigError, match=r"^mode"):
        EWC(mode="offline")
    with pytest.raises(ConfigError, match=r"^ewc_lambda"):
        EWC(ewc_lambda=-1)
    with pytest.raises(ConfigError, match=r"^gamma"):
        EWC(gamma=2.0)


# -- SI -------------------------------------------------------------------------------------------


def test_si_path_integral_is_minus_gradient_times_update_and_becomes_importance():
    torch.manual_seed(0)
    stream = toy_stream()
    si = SI(c=0.5, xi=0.1, clip_value=None)
    module = wire(si, stream)
    start = snapshot(module)
    assert float(si.penalty().detach()) == 0.0
    batch = batch_of(stream[0])
    si.before_experience(stream[0])
    loss = si.training_step(batch)
    module.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in named_trainable(module)}
    si.before_optimizer_step()
    with torch.no_grad():
        for p in module.parameters():
            p -= 0.1 * p.grad
    si.after_optimizer_step(batch)
    for n in grads:  # plain SGD: -g * delta = lr * g^2 (mammoth's form)
        torch.testing.assert_close(si.omega[n], 0.1 * grads[n].pow(2))
    si.after_experience(stream[0])
    for n, p in named_trainable(module):
        delta = p.detach() - start[n]
        torch.testing.assert_close(si.importance[n], 0.1 * grads[n].pow(2) / (delta.pow(2) + 0.1))
        torch.testing.assert_close(si.anchor[n], p.detach())
        assert float(si.omega[n].abs().sum()) == 0.0
    assert float(si.penalty().detach()) == 0.0  # at the new anchor
    with torch.no_grad():
        for p in module.parameters():
            p += 0.2
    expected = 0.5 * sum((o * 0.04).sum() for o in si.importance.values())
    torch.testing.assert_close(si.penalty(), expected)


def test_si_clips_gradient_values():
    stream = toy_stream()
    si = SI(clip_value=1e-4)
    module = wire(si, stream)
    sgd_step(module, si, batch_of(stream[0]))
    assert max(float(g.abs().max()) for g in si.omega.values()) > 0
    with pytest.raises(ConfigError, match=r"^xi"):
        SI(xi=0.0)


# -- LwF ------------------------------------------------------------------------------------------


def test_lwf_distillation_is_the_temperature_softened_cross_entropy():
    old, new = torch.randn(4, 3), torch.randn(4, 3)
    expected = -(F.softmax(old / 2, 1) * F.log_softmax(new / 2, 1)).sum(1).mean()
    torch.testing.assert_close(distillation(old, new, 2.0), expected)
    # minimised (as a function of new) at new = old: the gradient vanishes there
    new = old.clone().requires_grad_(True)
    distillation(old, new, 2.0).backward()
    assert float(new.grad.abs().max()) < 1e-6


def test_lwf_warm_up_moves_only_new_class_rows_and_distils_old_classes():
    torch.manual_seed(0)
    stream = toy_stream()
    lwf = LwF(alpha=1.0, warmup_epochs=2, warmup_batch_size=4)
    module = wire(lwf, stream)
    lwf.before_experience(stream[0])
    assert lwf.teacher is None
    before = snapshot(module)
    module.head.observe_classes(stream[1].classes)
    lwf.before_experience(stream[1])
    after = snapshot(module)
    changed_rows = (after["head.linear.weight"] - before["head.linear.weight"]).abs().sum(1) > 0
    assert changed_rows.tolist() == [False, False, True, True, False, False]  # classes 2, 3 only
    assert all(torch.equal(after[n], before[n]) for n in after if n.startswith("backbone"))
    assert lwf.warmup_steps == 4 and [c.tolist() for _, c in lwf.groups] == [[0, 1]]
    batch = batch_of(stream[1])
    x, y, task = batch
    with torch.no_grad():  # the teacher is the pre-warm-up network
        teacher_old = lwf.teacher["head"](lwf.teacher["backbone"](x))[:, :2]
    module.load_state_dict({**module.state_dict(), **{k: v for k, v in before.items()}}, strict=False)
    logits = module(x, task)
    torch.testing.assert_close(teacher_old, logits[:, :2].detach())
    expected = F.cross_entropy(logits, y) + distillation(teacher_old, logits[:, :2], 2.0)
    torch.testing.assert_close(lwf.training_step(batch), expected)


def test_lwf_multi_head_distils_every_old_head():
    torch.manual_seed(0)
    base = toy_stream()
    stream = Stream("til", Scenario.TASK_INCREMENTAL, base.experiences, base.num_classes, base.input_shape)
    lwf = LwF(warmup_epochs=0)
    hooks = Hooks(lwf)
    module = ContinualModule(GRUBackbone(2, 8), MultiHead(8, stream.task_classes, 6), hooks,
                             lambda p: torch.optim.SGD(p, lr=0.1))
    hooks.setup(module, stream)
    lwf.before_experience(stream[2])
    assert [(t, c.tolist()) for t, c in lwf.groups] == [(0, [0, 1]), (1, [2, 3])]
    loss = lwf.training_step(batch_of(stream[2]))
    assert torch.isfinite(loss)


# -- A-GEM ----------------------------------------------------------------------------------------


def test_agem_projection_removes_the_conflicting_component_only():
    ref = torch.tensor([1.0, 0.0])
    assert torch.equal(project(torch.tensor([0.5, 2.0]), ref), torch.tensor([0.5, 2.0]))  # no conflict
    projected = project(torch.tensor([-1.0, 2.0]), ref)
    torch.testing.assert_close(projected, torch.tensor([0.0, 2.0]))
    g, r = torch.randn(50), torch.randn(50)
    assert float(torch.dot(project(g, r), r)) >= -1e-5


def test_agem_step_projects_the_stream_gradient_against_the_memory_gradient():
    torch.manual_seed(0)
    stream = toy_stream()
    agem = AGEM(buffer_size=6)
    module = wire(agem, stream)
    agem.after_experience(stream[0])
    assert len(agem.buffer) == 2 and set(agem.buffer.y.tolist()) <= {0, 1}  # 6 // 3 per task
    batch = batch_of(stream[1])
    loss = agem.training_step(batch)
    reference = agem._reference.clone()
    module.zero_grad()
    loss.backward()
    agem.before_optimizer_step()
    grad = torch.cat([p.grad.flatten() for _, p in named_trainable(module)])
    assert float(torch.dot(grad, reference)) >= -1e-4
    with pytest.raises(ConfigError, match=r"^strategy\.buffer_size"):
        wire(AGEM(buffer_size=2), stream)
