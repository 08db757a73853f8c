"""Compiled Triton kernels on a CUDA device: half precision, long sequences, selective scan.

Skipped without CUDA. Comparisons are against the torch backend in fp32 on the *same* (already
rounded) inputs, so the tolerance only has to absorb the output rounding of half precision
(accelerated-scan's tolerances: bf16 atol 1e-1 / rtol 1.6e-2, fp16 1.2e-2 / 1e-3, relative to the
output scale here).
"""

from __future__ import annotations

import pytest
import torch

from clplat.kernels import linear_scan, selective_scan, selective_scan_ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

triton = pytest.importorskip("triton")


def _inputs(B, T, D, dtype, h0=True):
    a = (0.5 + 0.5 * torch.rand(B, T, D, device="cuda")) * torch.sign(torch.randn(B, T, D, device="cuda"))
    b = torch.randn(B, T, D, device="cuda")
    s = torch.randn(B, D, device="cuda") if h0 else None
    return [x.to(dtype).requires_grad_() if x is not None else None for x in (a, b, s)]


def _fwd_bwd(a, b, h0, reverse, backend, g, gf):
    h, final = linear_scan(a, b, h0, reverse=reverse, backend=backend, return_final=True)
    loss = (h.float() * g).sum() + (final.float() * gf).sum()
    grads = torch.autograd.grad(loss, [x for x in (a, b, h0) if x is not None])
    return [h, final, *grads]


@pytest.mark.parametrize("shape", [(2, 1, 3), (3, 1000, 100), (1, 5000, 64), (2, 65536, 64)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_triton_fp32_matches_torch(shape, reverse):
    a, b, h0 = _inputs(*shape, torch.float32)
    g = torch.randn(shape, device="cuda")
    gf = torch.randn(shape[0], shape[2], device="cuda")
    got = _fwd_bwd(a, b, h0, reverse, "triton", g, gf)
    want = _fwd_bwd(a, b, h0, reverse, "torch", g, gf)
    for x, y in zip(got, want):
        scale = y.abs().max().item() + 1.0
        torch.testing.assert_close(x, y, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("dtype, atol, rtol", [(torch.bfloat16, 1e-1, 1.6e-2), (torch.float16, 1.2e-2, 1e-3)],
                         ids=["bf16", "fp16"])
def test_triton_half_precision(dtype, atol, rtol):
    a, b, h0 = _inputs(4, 2048, 96, dtype)
    g = torch.randn(4, 2048, 96, device="cuda")
    gf = torch.randn(4, 96, device="cuda")
    got = _fwd_bwd(a, b, h0, False, "triton", g, gf)
    # Same rounded inputs, computed in fp32 by the torch path.
    a32, b32, h32 = (x.detach().float().requires_grad_() for x in (a, b, h0))
    want = _fwd_bwd(a32, b32, h32, False, "torch", g, gf)
    assert got[0].dtype == dtype and got[2].dtype == dtype
    for x, y in zip(got, want):
        scale = y.abs().max().item()
        torch.testing.assert_close(x.float(), y, atol=atol * scale / 10, rtol=rtol)


def test_triton_complex64():
    B, T, D = 2, 3000, 48
    a = (0.99 * torch.exp(1j * torch.rand(B, T, D, device="cuda"))).to(torch.complex64).requires_grad_()
    b = torch.randn(B, T, D, device="cuda", dtype=torch.complex64, requires_grad=True)
    outs = []
    for backend in ("triton", "torch"):
        h = linear_scan(a, b, backend=backend)
        outs.append([h, *torch.autograd.grad(h.abs().sum(), (a, b))])
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y, atol=1e-3, rtol=1e-4)


def test_auto_picks_triton_on_cuda(monkeypatch):
    monkeypatch.delenv("CLPLAT_SCAN_BACKEND", raising=False)
    a, b, _ = _inputs(1, 100, 8, torch.float32, h0=False)
    assert type(linear_scan(a, b).grad_fn).__name__ == "_TritonScanFnBackward"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_selective_triton_matches_torch(dtype):
    Bsz, T, Din, N = 2, 1000, 64, 16
    p = {
        "u": torch.randn(Bsz, T, Din, device="cuda"),
        "delta": torch.randn(Bsz, T, Din, device="cuda"),
        "A": -torch.rand(Din, N, device="cuda") * 4,
        "B": torch.randn(Bsz, T, N, device="cuda"),
        "C": torch.randn(Bsz, T, N, device="cuda"),
        "D": torch.randn(Din, device="cuda"),
        "z": torch.randn(Bsz, T, Din, device="cuda"),
        "delta_bias": torch.randn(Din, device="cuda"),
    }
    p = {k: v.to(dtype).requires_grad_() for k, v in p.items()}
    outs = []
    for backend in ("triton", "torch"):
        y, last = selective_scan(**p, delta_softplus=True, return_last_state=True, backend=backend)
        grads = torch.autograd.grad(y.float().square().sum() + last.sum(), list(p.values()))
        outs.append([y, last, *grads])
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    for x, y in zip(*outs):
        scale = y.float().abs().max().item() + 1.0
        torch.testing.assert_close(x.float(), y.float(), atol=tol * scale, rtol=tol)


def test_selective_triton_long_sequence_fp32():
    Bsz, T, Din, N = 1, 16384, 32, 16
    u, delta = torch.randn(Bsz, T, Din, device="cuda"), torch.rand(Bsz, T, Din, device="cuda")
    A, B, C = -torch.rand(Din, N, device="cuda"), torch.randn(Bsz, T, N, device="cuda"), torch.randn(Bsz, T, N, device="cuda")
    y = selective_scan(u, delta, A, B, C, backend="triton")
    want = selective_scan_ref(u[:, :512].double(), delta[:, :512].double(), A.double(), B[:, :512].double(),
                              C[:, :512].double())
    torch.testing.assert_close(y[:, :512].double(), want, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(y, selective_scan(u, delta, A, B, C, backend="torch"), atol=1e-3, rtol=1e-3)
