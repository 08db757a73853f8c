"""Triton kernels run by Triton's CPU interpreter; executed by ``test_scan_triton_interpret.py``.

Not collected by a normal pytest run (the file name does not match ``test_*.py``): the
interpreter is chosen when ``@triton.jit`` decorates a kernel, so ``TRITON_INTERPRET=1`` must be in
the environment before any kernel module is imported. The runner starts a fresh interpreter
process with it set, which keeps the main test process (and other tests that might use real
Triton on a GPU) unaffected.

Shapes are tiny because a custom-combine ``tl.associative_scan`` is interpreted element by
element (~0.2 ms per element): ``BT=8, BD=4`` tiles, a few hundred elements per case.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

triton = pytest.importorskip("triton")

from clplat.kernels import linear_scan, linear_scan_ref, selective_scan, selective_scan_ref
from clplat.kernels.torch_impl import linear_scan_torch
from clplat.kernels.triton_impl import linear_scan_triton
from clplat.kernels.triton_selective import selective_scan_core_triton

BT, BD = 8, 4


def _inputs(B, T, D, dtype, with_h0):
    if dtype.is_complex:
        a = 0.9 * torch.randn(B, T, D, dtype=dtype) / 1.5
    else:
        a = torch.randn(B, T, D, dtype=dtype)
        a = a / a.abs().clamp_min(1.0)
    a = torch.where(torch.rand(B, T, D) < 0.1, torch.zeros_like(a), a)  # exact zeros
    b = torch.randn(B, T, D, dtype=dtype)
    h0 = torch.randn(B, D, dtype=dtype) if with_h0 else None
    return [x.requires_grad_() if x is not None else None for x in (a, b, h0)]


def _run(fn, a, b, h0, g, gf):
    h, final = fn(a, b, h0)
    loss = (h * g.conj()).real.sum() + (final * gf.conj()).real.sum()
    ins = [x for x in (a, b, h0) if x is not None]
    grads = torch.autograd.grad(loss, ins, allow_unused=True)
    return [h, final, *[torch.zeros_like(x) if d is None else d for x, d in zip(ins, grads)]]


def _three_way(B, T, D, dtype, reverse, with_h0, spans, atol):
    """Reference (float64), torch backend and Triton agree on h, final state and all gradients."""
    a, b, h0 = _inputs(B, T, D, dtype, with_h0)
    g = torch.randn(B, T, D, dtype=dtype)
    gf = torch.randn(B, D, dtype=dtype)
    wide = torch.complex128 if dtype.is_complex else torch.float64

    def ref(a, b, h0):
        return linear_scan_ref(a.to(wide), b.to(wide), None if h0 is None else h0.to(wide), reverse, True)

    want = _run(ref, a, b, h0, g, gf)
    tor = _run(lambda a, b, h0: linear_scan_torch(a, b, h0, reverse), a, b, h0, g, gf)
    tri = _run(lambda a, b, h0: linear_scan_triton(a, b, h0, reverse, BT, BD, spans), a, b, h0, g, gf)
    for name, w, x, y in zip(["h", "final", "da", "db", "dh0"], want, tor, tri):
        torch.testing.assert_close(x.to(wide), w.to(wide), atol=atol, rtol=atol, msg=lambda m, name=name: f"torch {name}: {m}")
        torch.testing.assert_close(y.to(wide), w.to(wide), atol=atol, rtol=atol, msg=lambda m, name=name: f"triton {name}: {m}")
        assert y.dtype == x.dtype


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["noh0", "h0"])
@pytest.mark.parametrize("spans", [1, 3], ids=["single-pass", "split"])
def test_three_way_fp32_odd_shape(reverse, with_h0, spans):
    # T=19: three tiles with a partial last one; D=5: a full and a partial D-block.
    _three_way(2, 19, 5, torch.float32, reverse, with_h0, spans, atol=2e-5)


@pytest.mark.parametrize("T", [1, 8], ids=["T1", "one-full-tile"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_three_way_fp32_edge_lengths(T, reverse):
    _three_way(2, T, 3, torch.float32, reverse, True, None, atol=2e-5)


@pytest.mark.parametrize("reverse, spans", [(False, 1), (True, 2)], ids=["fwd-single", "rev-split"])
def test_three_way_complex64(reverse, spans):
    _three_way(2, 11, 3, torch.complex64, reverse, True, spans, atol=2e-5)


def test_float64_is_computed_in_float64():
    _three_way(1, 13, 3, torch.float64, False, True, 2, atol=1e-12)


def test_final_state_gradient_only():
    a, b, h0 = _inputs(1, 12, 3, torch.float32, True)
    _, final = linear_scan_triton(a, b, h0, False, BT, BD, None)
    got = torch.autograd.grad(final.sum(), (a, b, h0))
    _, final_ref = linear_scan_ref(a.double(), b.double(), h0.double(), False, True)
    want = torch.autograd.grad(final_ref.sum(), (a, b, h0))
    for x, y in zip(got, want):
        torch.testing.assert_close(x.double(), y.double(), atol=2e-5, rtol=2e-5)


def test_dispatch_runs_triton_on_cpu_when_interpreting():
    a, b, h0 = _inputs(1, 5, 3, torch.float32, True)
    h = linear_scan(a, b, h0, backend="triton")
    assert type(h.grad_fn).__name__ == "_TritonScanFnBackward"
    torch.testing.assert_close(h.double(), linear_scan_ref(a.double(), b.double(), h0.double()), atol=1e-5, rtol=1e-5)


def test_selective_triton_matches_reference():
    """Fused S6 core (N=3 padded to 4, T=13 over 4 tiles) plus the torch-side D, z, softplus."""
    Bsz, T, Din, N = 2, 13, 5, 3
    p = {
        "u": torch.randn(Bsz, T, Din),
        "delta": 0.5 * torch.rand(Bsz, T, Din),
        "A": -2 * torch.rand(Din, N),
        "B": torch.randn(Bsz, T, N),
        "C": torch.randn(Bsz, T, N),
        "D": torch.randn(Din),
        "z": torch.randn(Bsz, T, Din),
        "delta_bias": torch.randn(Din),
    }
    for v in p.values():
        v.requires_grad_()
    y, last = selective_scan(**p, delta_softplus=True, return_last_state=True, backend="triton")
    y_ref, last_ref = selective_scan_ref(**{k: v.double() for k, v in p.items()}, delta_softplus=True,
                                         return_last_state=True)
    torch.testing.assert_close(y.double(), y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last.double(), last_ref, atol=1e-5, rtol=1e-5)
    gy, gl = torch.randn_like(y_ref), torch.randn_like(last_ref)
    got = torch.autograd.grad((y * gy.float()).sum() + (last * gl.float()).sum(), list(p.values()))
    want = torch.autograd.grad((y_ref * gy).sum() + (last_ref * gl).sum(), list(p.values()))
    for name, x, w in zip(p, got, want):
        torch.testing.assert_close(x.double(), w.double(), atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"d{name}: {m}")


def test_selective_core_small_blocks_no_grad():
    Bsz, T, Din, N = 1, 9, 3, 2
    u, delta = torch.randn(Bsz, T, Din), torch.rand(Bsz, T, Din)
    A, B, C = -torch.rand(Din, N), torch.randn(Bsz, T, N), torch.randn(Bsz, T, N)
    y, last = selective_scan_core_triton(u, delta, A, B, C, block_t=4, block_d=2)
    y_ref, last_ref = selective_scan_ref(u.double(), delta.double(), A.double(), B.double(), C.double(),
                                         return_last_state=True)
    torch.testing.assert_close(y.double(), y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last.double(), last_ref, atol=1e-5, rtol=1e-5)
