"""Backbones' per-layer interface and the heads' label-space contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clplat.backbones import GRUBackbone, LSTMBackbone
from clplat.errors import ConfigError
from clplat.heads import MultiHead, SingleHead, build_head
from clplat.stream import Experience, Scenario, SequenceData, Stream


@pytest.mark.parametrize("cls", [GRUBackbone, LSTMBackbone])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_backbone_layers_and_reentry_agree(cls, pooling):
    torch.manual_seed(0)
    net = cls(input_size=3, hidden_size=8, num_layers=3, pooling=pooling).eval()
    x = torch.randn(4, 7, 3)
    layers = net.forward_layers(x)
    assert [tuple(h.shape) for h in layers] == [(4, 7, 8)] * 3
    out = net(x)
    assert out.shape == (4, net.out_dim)
    # re-entering above any layer with its stored activations reproduces the full forward pass
    for k, h in enumerate(layers):
        torch.testing.assert_close(net.forward_from(k, h), out)
    torch.testing.assert_close(net.forward_from(-1, x), out)
    expected = layers[-1][:, -1] if pooling == "last" else layers[-1].mean(1)
    torch.testing.assert_close(out, expected)


def test_backbone_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="^pooling"):
        GRUBackbone(input_size=1, pooling="max")
    with pytest.raises(ConfigError, match="^num_layers"):
        LSTMBackbone(input_size=1, num_layers=0)
    with pytest.raises(ConfigError, match="^hidden_size"):
        GRUBackbone(input_size=1, hidden_size=-4)


def test_single_head_masks_unseen_classes():
    head = SingleHead(5, 6, mask_unseen=True)
    head.observe_classes([0, 1])
    logits = head(torch.randn(3, 5))
    assert torch.isinf(logits[:, 2:]).all() and torch.isfinite(logits[:, :2]).all()
    head.observe_classes([2, 3])
    assert torch.isfinite(head(torch.randn(3, 5))[:, :4]).all()
    unmasked = SingleHead(5, 6)
    assert torch.isfinite(unmasked(torch.randn(3, 5))).all()


def test_multi_head_keeps_global_labels_and_separate_weights():
    torch.manual_seed(0)
    task_classes = [(0, 1), (2, 3, 4), (5,)]
    head = MultiHead(4, task_classes, num_classes=6)
    feats = torch.randn(5, 4)
    task = torch.tensor([0, 1, 2, 1, 0])
    logits = head(feats, task)
    assert logits.shape == (5, 6)
    for row, t in enumerate(task.tolist()):
        finite = torch.isfinite(logits[row]).nonzero().flatten().tolist()
        assert finite == list(task_classes[t])
    # each task's outputs come from that task's own slice of the weights
    w = head.linear.weight.view(3, head.width, 4)
    b = head.linear.bias.view(3, head.width)
    torch.testing.assert_close(logits[1, [2, 3, 4]], feats[1] @ w[1].T + b[1])
    # cross-entropy on global targets is finite and its gradient touches only the sample's head
    y = torch.tensor([1, 4, 5, 2, 0])
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    head.zero_grad()
    F.cross_entropy(head(feats[:1], task[:1]), y[:1]).backward()
    grad = head.linear.weight.grad.view(3, head.width, 4)
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0


def _stream(scenario: Scenario) -> Stream:
    exps = []
    for k in range(2):
        data = SequenceData.with_task(torch.randn(4, 3, 2), torch.tensor([2 * k, 2 * k + 1] * 2), k)
        exps.append(Experience(k, k, data, data, (2 * k, 2 * k + 1), f"exp{k}"))
    return Stream("toy", scenario, tuple(exps), num_classes=4, input_shape=(3, 2))


def test_build_head_chooses_by_scenario_and_refuses_multi_head_without_task_ids():
    assert isinstance(build_head("auto", False, _stream(Scenario.TASK_INCREMENTAL), 8), MultiHead)
    assert isinstance(build_head("auto", False, _stream(Scenario.CLASS_INCREMENTAL), 8), SingleHead)
    with pytest.raises(ConfigError, match="head.type='multi'.*class_incremental"):
        build_head("multi", False, _stream(Scenario.CLASS_INCREMENTAL), 8)
    with pytest.raises(ConfigError, match="head.type"):
        build_head("double", False, _stream(Scenario.CLASS_INCREMENTAL), 8)
