"""log_linear_scan (minGRU/minLSTM) against the float64 sequential oracle, incl. T=4096."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clplat.kernels import linear_scan_ref, log_g, log_linear_scan, mingru_log_coeffs, minlstm_log_coeffs


def test_log_helpers_match_definitions():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    g = torch.where(x >= 0, x + 0.5, torch.sigmoid(x))
    torch.testing.assert_close(log_g(x).exp(), g)
    k, ht = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    log_a, log_b = mingru_log_coeffs(k, ht)
    z = torch.sigmoid(k)
    torch.testing.assert_close(log_a.exp(), 1 - z)
    torch.testing.assert_close(log_b.exp(), z * log_g(ht).exp())
    kf, ki = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    log_f, log_i = minlstm_log_coeffs(kf, ki, ht)
    f, i = torch.sigmoid(kf), torch.sigmoid(ki)
    torch.testing.assert_close(log_f.exp(), f / (f + i))
    torch.testing.assert_close(log_i.exp(), i / (f + i) * log_g(ht).exp())


@pytest.mark.parametrize("method", ["linear", "heinsen"])
def test_log_scan_accurate_at_T4096_float32(method):
    """minGRU coefficients with strong gates: error vs the float64 loop stays <= 1e-5 relative."""
    B, T, D = 2, 4096, 8
    log_a, log_b = mingru_log_coeffs(2 * torch.randn(B, T, D), torch.randn(B, T, D))
    h0 = torch.rand(B, D)
    want = linear_scan_ref(log_a.double().exp(), log_b.double().exp(), h0.double())
    got = log_linear_scan(log_a, log_b, h0, method=method)
    assert ((got.double() - want).abs() / want.abs()).max().item() < 1e-5


@pytest.mark.parametrize("method", ["linear", "heinsen"])
def test_log_scan_gates_near_one_T4096(method):
    """The regime where unchunked Heinsen loses ~3e-4: gates in [0.8, 1]."""
    B, T, D = 1, 4096, 8
    log_a = torch.log(0.8 + 0.2 * torch.rand(B, T, D))
    log_b = torch.randn(B, T, D)
    want = linear_scan_ref(log_a.double().exp(), log_b.double().exp())
    got = log_linear_scan(log_a, log_b, method=method)
    assert ((got.double() - want).abs() / want.abs()).max().item() < 1e-5


@pytest.mark.parametrize("method", ["linear", "heinsen"])
@pytest.mark.parametrize("T", [1, 37, 130])
def test_log_scan_gradients_float64(method, T):
    B, D = 2, 3
    log_a = (-torch.rand(B, T, D, dtype=torch.float64)).requires_grad_()
    log_b = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    got, last = log_linear_scan(log_a, log_b, h0, method=method, chunk_size=16, return_final=True)
    want = linear_scan_ref(log_a.exp(), log_b.exp(), h0)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(last, want[:, -1])
    g = torch.randn_like(want)
    for x, y in zip(torch.autograd.grad((got * g).sum(), (log_a, log_b, h0)),
                    torch.autograd.grad((want * g).sum(), (log_a, log_b, h0))):
        torch.testing.assert_close(x, y)


def test_log_scan_errors():
    x = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="method='cumsum' is not valid"):
        log_linear_scan(x, x, method="cumsum")
    with pytest.raises(ValueError, match="shapes differ"):
        log_linear_scan(x, torch.zeros(1, 5, 2))


def test_linear_method_handles_log_b_minus_inf():
    log_a = torch.full((1, 5, 2), -0.1)
    log_b = torch.full((1, 5, 2), float("-inf"))
    log_b[:, 0] = 0.0
    h = log_linear_scan(log_a, log_b)
    torch.testing.assert_close(h[0, :, 0], torch.exp(-0.1 * torch.arange(5.0)))
    assert F.relu(-h).sum() == 0
