"""linear_scan: the sequential oracle, the chunked torch backend, dispatch and validation."""

from __future__ import annotations

import pytest
import torch

from clplat.kernels import linear_scan, linear_scan_ref
from clplat.kernels.torch_impl import chunk_size_for, linear_scan_torch, scan_into


def _outputs_and_grads(a, b, h0, reverse, backend, g, g_final):
    """Forward, final state and the gradients of a loss that uses both (complex-safe)."""
    h, final = linear_scan(a, b, h0, reverse=reverse, backend=backend, return_final=True)
    loss = (h * g.conj()).real.sum() + (final * g_final.conj()).real.sum()
    inputs = [x for x in (a, b, h0) if x is not None]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(inputs, grads)]
    return [h, final, *grads]


def _assert_agree(got, want, atol, rtol=0.0):
    names = ["h", "final", "da", "db", "dh0"]
    for name, x, y in zip(names, got, want):
        torch.testing.assert_close(x.to(y.dtype), y, atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")


# ---------------------------------------------------------------- oracle identities


def test_reference_identities():
    b = torch.randn(2, 9, 3, dtype=torch.float64)
    ones, zeros = torch.ones_like(b), torch.zeros_like(b)
    torch.testing.assert_close(linear_scan_ref(ones, b), b.cumsum(1))
    torch.testing.assert_close(linear_scan_ref(zeros, b), b)
    torch.testing.assert_close(linear_scan_ref(ones, b, reverse=True), b.flip(1).cumsum(1).flip(1))


def test_reference_h0_folds_into_first_input():
    a = torch.rand(2, 9, 3, dtype=torch.float64)
    b = torch.randn(2, 9, 3, dtype=torch.float64)
    h0 = torch.randn(2, 3, dtype=torch.float64)
    folded = b.clone()
    folded[:, 0] += a[:, 0] * h0
    torch.testing.assert_close(linear_scan_ref(a, b, h0), linear_scan_ref(a, folded))


def test_reference_reverse_is_flip_scan_flip():
    a = torch.randn(2, 11, 3, dtype=torch.float64)
    b = torch.randn(2, 11, 3, dtype=torch.float64)
    h0 = torch.randn(2, 3, dtype=torch.float64)
    rev, final = linear_scan_ref(a, b, h0, reverse=True, return_final=True)
    torch.testing.assert_close(rev, linear_scan_ref(a.flip(1), b.flip(1), h0).flip(1))
    torch.testing.assert_close(final, rev[:, 0])


# ---------------------------------------------------------------- torch backend vs oracle

SHAPES = [(2, 1, 3), (2, 7, 5), (1, 63, 4), (3, 100, 2), (2, 257, 3), (1, 1000, 6)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["noh0", "h0"])
def test_torch_matches_reference_float64(scan_inputs, shape, reverse, with_h0):
    a, b, h0 = scan_inputs(*shape, h0=with_h0)
    g = torch.randn(shape, dtype=torch.float64)
    gf = torch.randn(shape[0], shape[2], dtype=torch.float64)
    got = _outputs_and_grads(a, b, h0, reverse, "torch", g, gf)
    want = _outputs_and_grads(a, b, h0, reverse, "reference", g, gf)
    _assert_agree(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("shape", [(2, 1, 3), (2, 45, 3), (1, 700, 2)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_torch_matches_reference_complex(shape, reverse):
    B, T, D = shape
    a = (0.95 * torch.randn(B, T, D, dtype=torch.complex128) / 1.5).requires_grad_()
    b = torch.randn(B, T, D, dtype=torch.complex128, requires_grad=True)
    h0 = torch.randn(B, D, dtype=torch.complex128, requires_grad=True)
    g = torch.randn(B, T, D, dtype=torch.complex128)
    gf = torch.randn(B, D, dtype=torch.complex128)
    got = _outputs_and_grads(a, b, h0, reverse, "torch", g, gf)
    want = _outputs_and_grads(a, b, h0, reverse, "reference", g, gf)
    _assert_agree(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_torch_float32_long_sequence_close_to_float64_oracle(scan_inputs, reverse):
    a, b, h0 = scan_inputs(2, 4096, 8, h0=True, requires_grad=False)
    want = linear_scan_ref(a, b, h0, reverse=reverse)
    got = linear_scan(a.float(), b.float(), h0.float(), reverse=reverse, backend="torch")
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [2, 3, 8, 64])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_scan_into_any_chunk_size(scan_inputs, chunk, reverse):
    """Explicit chunk sizes cover remainders, several recursion levels and one-chunk spans."""
    a, b, h0 = scan_inputs(2, 301, 3, h0=True, requires_grad=False)
    out = torch.empty_like(b)
    scan_into(a, b, h0, reverse, out, chunk=chunk)
    torch.testing.assert_close(out, linear_scan_ref(a, b, h0, reverse=reverse), atol=1e-12, rtol=1e-12)


def test_chunk_size_heuristic():
    assert chunk_size_for(10, 1) == 0  # short: plain loop
    assert chunk_size_for(16, 1) == 8
    for T, width in [(4096, 2048), (16384, 64), (1 << 20, 1), (100, 10**6)]:
        c = chunk_size_for(T, width)
        assert 8 <= c <= 256 and 2 * c <= T


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_torch_gradcheck_real(scan_inputs, reverse):
    a, b, h0 = scan_inputs(2, 43, 3, h0=True)  # 43 = 5 chunks of 8 + a remainder of 3
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan_torch(a, b, h0, reverse), (a, b, h0))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_torch_gradcheck_complex(reverse):
    a = (0.5 * torch.randn(2, 37, 2, dtype=torch.complex128)).requires_grad_()
    b = torch.randn(2, 37, 2, dtype=torch.complex128, requires_grad=True)
    h0 = torch.randn(2, 2, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan_torch(a, b, h0, reverse), (a, b, h0))


def test_torch_gradcheck_without_h0_and_final_only(scan_inputs):
    a, b, _ = scan_inputs(1, 20, 2)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan_torch(a, b, None, False)[1], (a, b))


def test_torch_backward_is_one_node_not_a_time_loop(scan_inputs):
    a, b, _ = scan_inputs(2, 500, 3)
    h = linear_scan(a, b, backend="torch")
    assert type(h.grad_fn).__name__ == "_TorchScanFnBackward"
    assert {type(n[0]).__name__ for n in h.grad_fn.next_functions if n[0] is not None} == {"AccumulateGrad"}


def test_strided_and_expanded_inputs(scan_inputs):
    """Non-contiguous inputs and a constant gate broadcast over time (LRU-style) work as is."""
    B, T, D = 2, 50, 4
    lam = (0.9 * torch.rand(B, 1, D, dtype=torch.float64)).requires_grad_()
    x = torch.randn(B, D, T, dtype=torch.float64, requires_grad=True)
    got = linear_scan(lam.expand(B, T, D), x.transpose(1, 2), backend="torch")
    want = linear_scan_ref(lam.expand(B, T, D), x.transpose(1, 2))
    torch.testing.assert_close(got, want)
    g = torch.randn(B, T, D, dtype=torch.float64)
    got_g = torch.autograd.grad((got * g).sum(), (lam, x))
    want_g = torch.autograd.grad((want * g).sum(), (lam, x))
    for x_, y_ in zip(got_g, want_g):
        torch.testing.assert_close(x_, y_)


def test_real_gate_complex_input_promotes():
    a = torch.rand(1, 30, 2, dtype=torch.float32, requires_grad=True)
    b = torch.randn(1, 30, 2, dtype=torch.complex64)
    h = linear_scan(a, b, backend="torch")
    assert h.dtype == torch.complex64
    h.abs().sum().backward()
    assert a.grad is not None and a.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    a = (0.5 + 0.5 * torch.rand(2, 300, 4)).to(dtype).requires_grad_()
    b = torch.randn(2, 300, 4).to(dtype).requires_grad_()
    h = linear_scan(a, b, backend="torch")
    assert h.dtype == dtype
    want = linear_scan_ref(a.double(), b.double())
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(h.double(), want, atol=tol * want.abs().max().item(), rtol=tol)
    h.float().sum().backward()
    assert a.grad.dtype == dtype and torch.isfinite(a.grad.float()).all()


# ---------------------------------------------------------------- dispatch and validation


def test_auto_on_cpu_is_torch(scan_inputs, monkeypatch):
    monkeypatch.delenv("CLPLAT_SCAN_BACKEND", raising=False)
    a, b, _ = scan_inputs(1, 40, 2)
    h = linear_scan(a, b)
    assert type(h.grad_fn).__name__ == "_TorchScanFnBackward"


def test_env_override_for_auto(scan_inputs, monkeypatch):
    a, b, _ = scan_inputs(1, 40, 2)
    monkeypatch.setenv("CLPLAT_SCAN_BACKEND", "reference")
    assert type(linear_scan(a, b).grad_fn).__name__ != "_TorchScanFnBackward"
    monkeypatch.setenv("CLPLAT_SCAN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="CLPLAT_SCAN_BACKEND"):
        linear_scan(a, b)


@pytest.mark.parametrize(
    "a_shape, b_shape, h0_shape, match",
    [
        ((2, 5), (2, 5), None, r"\(B, T, D\)"),
        ((2, 5, 3), (2, 5, 4), None, "same shape"),
        ((2, 0, 3), (2, 0, 3), None, "T=0"),
        ((2, 5, 3), (2, 5, 3), (3, 2), r"h0 must have shape \(B, D\)"),
    ],
)
def test_shape_errors(a_shape, b_shape, h0_shape, match):
    h0 = None if h0_shape is None else torch.zeros(h0_shape)
    with pytest.raises(ValueError, match=match):
        linear_scan(torch.zeros(a_shape), torch.zeros(b_shape), h0)


def test_dtype_and_backend_errors(monkeypatch):
    x = torch.zeros(1, 4, 2)
    with pytest.raises(TypeError, match="floating point or complex"):
        linear_scan(x.long(), x)
    with pytest.raises(ValueError, match="backend='cuda' is not valid"):
        linear_scan(x, x, backend="cuda")
    with pytest.raises(TypeError, match="torch.Tensor"):
        linear_scan([1.0], x)  # type: ignore[arg-type]
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    from clplat.kernels.dispatch import triton_available

    if triton_available():
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            linear_scan(x, x, backend="triton")
