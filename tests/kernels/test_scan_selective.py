"""selective_scan (Mamba-1 S6) on the torch path against the sequential reference."""

from __future__ import annotations

import pytest
import torch

from clplat.kernels import selective_scan, selective_scan_ref


def _problem(Bsz=2, T=23, Din=5, N=3, dtype=torch.float64):
    g = {"dtype": dtype, "requires_grad": True}
    return {
        "u": torch.randn(Bsz, T, Din, **g),
        "delta": (0.5 * torch.rand(Bsz, T, Din, dtype=dtype)).requires_grad_(),
        "A": (-2 * torch.rand(Din, N, dtype=dtype)).requires_grad_(),
        "B": torch.randn(Bsz, T, N, **g),
        "C": torch.randn(Bsz, T, N, **g),
        "D": torch.randn(Din, **g),
        "z": torch.randn(Bsz, T, Din, **g),
        "delta_bias": torch.randn(Din, **g),
    }


@pytest.mark.parametrize("channel_block", [None, 2], ids=["one-block", "blocks+checkpoint"])
@pytest.mark.parametrize("full", [False, True], ids=["core", "D-z-bias-softplus"])
def test_selective_torch_matches_reference(channel_block, full):
    p = _problem()
    if not full:
        p = {k: p[k] for k in ("u", "delta", "A", "B", "C")}
    kw = {"delta_softplus": full, "return_last_state": True}
    y, last = selective_scan(**p, **kw, backend="torch", channel_block=channel_block)
    y_ref, last_ref = selective_scan_ref(**p, **kw)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(last, last_ref)
    gy, gl = torch.randn_like(y), torch.randn_like(last)
    names = list(p)
    got = torch.autograd.grad((y * gy).sum() + (last * gl).sum(), list(p.values()))
    want = torch.autograd.grad((y_ref * gy).sum() + (last_ref * gl).sum(), list(p.values()))
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"d{name}: {m}")


def test_selective_float32_inputs_and_reference_backend():
    p = _problem(T=200, dtype=torch.float32)
    y = selective_scan(**p, delta_softplus=True)
    assert y.dtype == torch.float32
    want = selective_scan_ref(**{k: v.double() for k, v in p.items()}, delta_softplus=True)
    torch.testing.assert_close(y.double(), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(selective_scan(**p, delta_softplus=True, backend="reference"), y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "key, bad, match",
    [("A", torch.zeros(4, 3), r"A must have shape \(Din, N\)"), ("B", torch.zeros(2, 9, 4), "B must have shape"),
     ("z", torch.zeros(2, 9, 3), "z must have shape")],
)
def test_selective_shape_errors(key, bad, match):
    p = {k: v.detach() for k, v in _problem(T=9).items()}
    p[key] = bad
    with pytest.raises(ValueError, match=match):
        selective_scan(**p)
