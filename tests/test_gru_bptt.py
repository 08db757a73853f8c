"""The hand-written GRU pass (clplat.backbones.gru_bptt) against ``nn.GRU``, and how GRULayer picks it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from clplat.backbones import GRUBackbone
from clplat.backbones.gru_bptt import gru_sequence
from clplat.backbones.rnn import GRULayer
from clplat.errors import ConfigError


def _weights(rnn: nn.GRU) -> list[torch.Tensor]:
    return [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]


@pytest.mark.parametrize("batch,steps,features,hidden", [(5, 9, 3, 4), (1, 1, 1, 6), (7, 2, 5, 1), (3, 17, 2, 12)])
def test_outputs_and_every_gradient_match_nn_gru(batch, steps, features, hidden):
    torch.manual_seed(batch + steps)
    rnn = nn.GRU(features, hidden, batch_first=True).double()
    with torch.no_grad():  # biases away from their small init, so every bias gradient path matters
        for p in rnn.parameters():
            p.mul_(3.0)
    x = torch.randn(batch, steps, features, dtype=torch.float64, requires_grad=True)
    expected, _ = rnn(x)
    got = gru_sequence(x, *_weights(rnn))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(expected)  # a gradient at every step, as mean pooling gives
    inputs = [x, *_weights(rnn)]
    for mine, reference in zip(torch.autograd.grad(got, inputs, grad_out),
                               torch.autograd.grad(expected, inputs, grad_out)):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    torch.manual_seed(0)
    rnn = nn.GRU(2, 3, batch_first=True).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: gru_sequence(*a), (x, *_weights(rnn)))


def test_frozen_weights_and_input_without_grad():
    torch.manual_seed(0)
    rnn = nn.GRU(2, 3, batch_first=True)
    rnn.weight_ih_l0.requires_grad_(False)
    rnn.bias_hh_l0.requires_grad_(False)
    x = torch.randn(4, 5, 2)
    gru_sequence(x, *_weights(rnn))[:, -1].sum().backward()
    assert rnn.weight_ih_l0.grad is None and rnn.bias_hh_l0.grad is None
    assert rnn.weight_hh_l0.grad is not None and rnn.bias_ih_l0.grad is not None


def test_the_backbone_trains_the_same_with_either_implementation():
    torch.manual_seed(0)
    reference = GRUBackbone(input_size=3, hidden_size=8, num_layers=2, implementation="torch").double()
    mine = GRUBackbone(input_size=3, hidden_size=8, num_layers=2, implementation="bptt").double()
    mine.load_state_dict(reference.state_dict())  # same parameter names: checkpoints carry over
    x = torch.randn(6, 11, 3, dtype=torch.float64)
    torch.testing.assert_close(mine(x), reference(x), rtol=1e-12, atol=1e-12)
    reference(x).square().sum().backward()
    mine(x).square().sum().backward()
    for (name, a), b in zip(reference.named_parameters(), mine.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_functional_call_substitutes_the_weights():
    """Hypernetworks run the backbone with generated weights through functional_call."""
    torch.manual_seed(0)
    net = GRUBackbone(input_size=2, hidden_size=4, implementation="bptt")
    generated = {name: torch.randn_like(p, requires_grad=True) for name, p in net.named_parameters()}
    x = torch.randn(3, 5, 2)
    out = functional_call(net, generated, (x,))
    expected = functional_call(GRUBackbone(input_size=2, hidden_size=4, implementation="torch"), generated, (x,))
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert all(t.grad is not None for t in generated.values())


def _ran_hand_written(layer: GRULayer, x: torch.Tensor) -> bool:
    out = layer(x)
    return out.grad_fn is not None and "GRUSequence" in type(out.grad_fn).__name__


def test_auto_takes_the_hand_written_pass_where_it_measured_faster():
    layer = GRULayer(1, 16)
    assert _ran_hand_written(layer, torch.randn(64, 5, 1))  # 64 x 16: a GRU-16 training batch
    assert not _ran_hand_written(layer, torch.randn(512, 5, 1))  # 512 x 16: nn.GRU is faster here
    assert _ran_hand_written(GRULayer(1, 16, "bptt"), torch.randn(512, 5, 1))
    assert not _ran_hand_written(GRULayer(1, 16, "torch"), torch.randn(2, 5, 1))
    assert not _ran_hand_written(GRULayer(1, 128), torch.randn(64, 5, 1))  # 64 x 128 is nn.GRU's


def test_auto_leaves_autocast_to_nn_gru():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _ran_hand_written(GRULayer(1, 16), torch.randn(8, 5, 1))


def test_auto_inference_takes_the_hand_written_pass_at_16_units_only(monkeypatch):
    calls = []
    monkeypatch.setattr("clplat.backbones.rnn.gru_sequence", lambda *a: calls.append(a) or torch.zeros(1))
    with torch.no_grad():
        GRULayer(1, 16)(torch.randn(1000, 5, 1))
        assert len(calls) == 1
        GRULayer(1, 32)(torch.randn(8, 5, 1))
        assert len(calls) == 1


def test_an_unknown_implementation_names_the_key():
    with pytest.raises(ConfigError, match="^implementation.*auto, torch, bptt"):
        GRUBackbone(input_size=1, implementation="cudnn")
