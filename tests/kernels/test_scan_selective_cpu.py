"""The fused CPU selective scan (``backend="cpp"``), its convolution, and ``auto``'s backend rule.

The kernel is compiled at first use (about 2 s, cached per machine); without a compiler the kernel
tests skip and the fallback tests still run. Shapes are tiny; the file takes a few seconds.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from clplat.backbones import MambaBackbone
from clplat.kernels import resolve_selective_backend, selective_scan, selective_scan_ref, triton_available
from clplat.kernels import selective_cpu
from clplat.kernels.selective_cpu import (
    causal_conv1d_silu_cpu,
    cpu_kernel_available,
    mamba_inner_cpu,
    selective_scan_core_cpu,
)

needs_kernel = pytest.mark.skipif(not cpu_kernel_available(), reason="the CPU kernel did not build here")
ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _problem(Bsz=2, T=23, Din=5, N=3, dtype=torch.float64) -> dict[str, torch.Tensor]:
    g = {"dtype": dtype}
    p = {
        "u": torch.randn(Bsz, T, Din, **g),
        "delta": torch.randn(Bsz, T, Din, **g),
        "A": -2 * torch.rand(Din, N, **g),
        "B": torch.randn(Bsz, T, N, **g),
        "C": torch.randn(Bsz, T, N, **g),
        "D": torch.randn(Din, **g),
        "z": torch.randn(Bsz, T, Din, **g),
        "delta_bias": torch.randn(Din, **g),
    }
    return {k: v.requires_grad_() for k, v in p.items()}


def _compare(p, kw, atol=None, rtol=None, **cpp_kw):
    """cpp against the float64 reference: outputs, final state and every gradient."""
    if cpp_kw:
        y, last = selective_scan_core_cpu(**p, **cpp_kw, **kw)
    else:
        y, last = selective_scan(**p, **kw, return_last_state=True, backend="cpp")
    ref_p = {k: v.double() for k, v in p.items()}
    y_ref, last_ref = selective_scan_ref(**ref_p, **kw, return_last_state=True)
    tol = {} if atol is None else {"atol": atol, "rtol": rtol}
    torch.testing.assert_close(y.double(), y_ref, **tol)
    torch.testing.assert_close(last.double(), last_ref, **tol)
    gy, gl = torch.randn_like(y_ref), torch.randn_like(last_ref)
    got = torch.autograd.grad((y.double() * gy).sum() + (last.double() * gl).sum(), list(p.values()))
    want = torch.autograd.grad((y_ref * gy).sum() + (last_ref * gl).sum(), list(ref_p.values()))
    for name, a, b in zip(p, got, want):
        torch.testing.assert_close(a.double(), b, **tol, msg=lambda m, name=name: f"d{name}: {m}")


@needs_kernel
@pytest.mark.parametrize("shape", [(2, 23, 5, 3), (2, 40, 21, 16), (1, 70, 37, 20), (1, 1, 1, 1)],
                         ids=["tiny", "N16", "N20-tail", "T1"])
@pytest.mark.parametrize("full", [False, True], ids=["core", "D-z-bias-softplus"])
def test_cpp_matches_reference_float64(shape, full):
    """All outputs and gradients, lanes past Din (tails), N = 16 (vector reductions) and N % 16 != 0."""
    p = _problem(*shape)
    if not full:
        p = {k: p[k] for k in ("u", "delta", "A", "B", "C")}
        p["delta"] = (0.5 * torch.rand_like(p["delta"])).requires_grad_()
    kw = {"delta_softplus": full}
    _compare(p, kw)


@needs_kernel
@pytest.mark.parametrize("steps", [1, 4, 7])
def test_cpp_checkpoint_chunks(steps):
    """The backward's chunk recomputation: chunk lengths that divide T and that do not."""
    p = _problem(2, 29, 18, 4)
    _compare(p, {"delta_softplus": True}, checkpoint_steps=steps)


@needs_kernel
def test_cpp_float32_against_float64_reference():
    p = _problem(2, 300, 20, 16, dtype=torch.float32)
    _compare(p, {"delta_softplus": True}, atol=1e-4, rtol=1e-4)


@needs_kernel
def test_cpp_float32_softplus_and_sigmoid_precision():
    """The kernel's own softplus (step size) and its derivative: ~1 ulp relative error in float32,
    from -40 to 40 and for tiny outputs (T = 1, N = 1, A = 0, B = C = u = 1 gives y = softplus(x))."""
    x = torch.cat([torch.linspace(-40, 40, 20001), -torch.logspace(-8, 1.6, 500), torch.logspace(-8, 1.6, 500)])
    n = x.numel()
    ones = torch.ones(1, 1, 1)
    dl = x.view(1, 1, n).clone().requires_grad_()
    y, _ = selective_scan_core_cpu(torch.ones(1, 1, n), dl, torch.zeros(n, 1), ones, ones, delta_softplus=True)
    (g,) = torch.autograd.grad(y.sum(), dl)
    want, dwant = F.softplus(x.double()), torch.sigmoid(x.double())
    assert ((y.view(-1).double() - want).abs() / want).max() < 1e-6
    assert ((g.view(-1).double() - dwant).abs() / dwant).max() < 1e-6


@needs_kernel
def test_cpp_gradcheck():
    p = _problem(2, 9, 18, 3)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan(*a, delta_softplus=True, return_last_state=True, backend="cpp"),
        [p[k] for k in ARGS],
    )


@needs_kernel
def test_cpp_reads_strided_slices():
    """z, B, C as slices of wider projections (rows strided, no copies) give the same result."""
    p = _problem(2, 30, 8, 4)
    xz = torch.randn(2, 30, 16, dtype=torch.float64, requires_grad=True)
    proj = torch.randn(2, 30, 10, dtype=torch.float64, requires_grad=True)
    xs, z = xz.chunk(2, -1)
    _, Bv, Cv = proj.split([2, 4, 4], -1)
    leaves = [xz, proj, p["A"], p["D"], p["delta_bias"]]
    outs = []
    for backend in ("cpp", "reference"):
        y = selective_scan(xs, p["delta"], p["A"], Bv, Cv, p["D"], z, p["delta_bias"], True, backend=backend)
        outs.append([y, *torch.autograd.grad(y.square().sum(), leaves)])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


@needs_kernel
@pytest.mark.parametrize("rank", [1, 8, 19])
def test_cpp_low_rank_delta_projection(rank):
    """``delta_proj_weight``: a strided (B, T, R) slice projected in the kernel == F.linear first."""
    p = _problem(2, 31, 21, 16)
    proj = torch.randn(2, 31, rank + 5, dtype=torch.float64, requires_grad=True)
    W = (0.3 * torch.randn(21, rank, dtype=torch.float64)).requires_grad_()
    dt_r = proj[..., 2:2 + rank]
    args = {k: p[k] for k in ("u", "A", "B", "C", "D", "z", "delta_bias")}
    leaves = [proj, W, *args.values()]
    y = selective_scan(delta=dt_r, **args, delta_softplus=True, delta_proj_weight=W, backend="cpp")
    want = selective_scan_ref(delta=torch.nn.functional.linear(dt_r, W), **args, delta_softplus=True)
    torch.testing.assert_close(y, want)
    gy = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((y * gy).sum(), leaves), torch.autograd.grad((want * gy).sum(), leaves)):
        torch.testing.assert_close(a, b)
    # the other backends accept the argument too (an F.linear first)
    torch.testing.assert_close(
        selective_scan(delta=dt_r, **args, delta_softplus=True, delta_proj_weight=W, backend="reference"), want)


@needs_kernel
def test_cpp_low_rank_gradcheck():
    p = _problem(2, 7, 17, 3)
    p["delta"] = torch.randn(2, 7, 2, dtype=torch.float64, requires_grad=True)
    W = torch.randn(17, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan(*a[:8], delta_softplus=True, delta_proj_weight=a[8], backend="cpp"),
        [*(p[k] for k in ARGS), W],
    )


@needs_kernel
def test_cpp_without_grad_and_half_inputs():
    p = {k: v.detach() for k, v in _problem(2, 20, 17, 16).items()}
    with torch.no_grad():
        y = selective_scan(**p, delta_softplus=True, backend="cpp")
    torch.testing.assert_close(y, selective_scan_ref(**p, delta_softplus=True))
    h = {k: v.to(torch.bfloat16) for k, v in p.items()}
    y16 = selective_scan(**h, delta_softplus=True, backend="cpp")
    assert y16.dtype == torch.bfloat16
    want = selective_scan_ref(**{k: v.double() for k, v in h.items()}, delta_softplus=True)
    torch.testing.assert_close(y16.double(), want, atol=0.1, rtol=0.05)


@needs_kernel
def test_cpp_threads_give_identical_results():
    """Sequences split over threads; per-sequence partial sums make the result independent of the split."""
    p = _problem(5, 40, 20, 16, dtype=torch.float32)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            y = selective_scan(**p, delta_softplus=True, backend="cpp")
            results.append([y, *torch.autograd.grad(y.square().sum(), list(p.values()))])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_kernel
@pytest.mark.parametrize("width", [4, 3, 1])
def test_conv_silu_matches_conv1d(width):
    conv = torch.nn.Conv1d(20, 20, width, groups=20, padding=width - 1).double()
    x = torch.randn(3, 50, 40, dtype=torch.float64, requires_grad=True)
    xv = x[..., :20]  # strided rows, as the x half of Mamba's in_proj
    want = F.silu(conv(xv.transpose(1, 2))[..., :50].transpose(1, 2))
    got = causal_conv1d_silu_cpu(xv, conv.weight, conv.bias)
    torch.testing.assert_close(got, want)
    go = torch.randn_like(want)
    leaves = [x, conv.weight, conv.bias]
    for a, b in zip(torch.autograd.grad((got * go).sum(), leaves), torch.autograd.grad((want * go).sum(), leaves)):
        torch.testing.assert_close(a, b)
    small = [torch.randn(2, 7, 18, dtype=torch.float64, requires_grad=True),
             torch.randn(18, 1, width, dtype=torch.float64, requires_grad=True),
             torch.randn(18, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(causal_conv1d_silu_cpu, small)


@needs_kernel
def test_mamba_inner_gradcheck_and_no_grad():
    torch.manual_seed(0)
    layer = MambaBackbone(3, 8, d_state=3, d_conv=3).double().layers[0]
    xz = torch.randn(2, 6, 32, dtype=torch.float64, requires_grad=True)
    A = -torch.exp(layer.A_log)
    args = [layer.conv.weight, layer.conv.bias, layer.x_proj.weight, layer.dt_proj.weight, layer.dt_proj.bias, A,
            layer.D]
    assert torch.autograd.gradcheck(lambda *a: mamba_inner_cpu(*a), [xz, *args])
    with torch.no_grad():
        torch.testing.assert_close(mamba_inner_cpu(xz, *args), mamba_inner_cpu(xz, *args).detach())


@needs_kernel
def test_mamba_backbone_cpp_equals_reference_backend():
    torch.manual_seed(0)
    nets = {b: MambaBackbone(3, 24, num_layers=2, d_state=16, scan_backend=b).double() for b in ("auto", "reference")}
    nets["reference"].load_state_dict(nets["auto"].state_dict())
    x = torch.randn(2, 33, 3, dtype=torch.float64)
    results = []
    for net in nets.values():
        out = net(x)
        results.append([out, *torch.autograd.grad(out.square().sum(), list(net.parameters()))])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


# ---- auto's rule (outputs of the rule, never timings) ----

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "shape, fallback",
    [
        # (B, T, Din, N) -> faster of reference / torch without the kernel (benchmarks/selective_scan_cpu.py)
        ((1, 1024, 256, 16), "torch"),
        ((8, 256, 16, 16), "torch"),
        ((32, 1024, 16, 16), "torch"),
        ((8, 256, 64, 16), "torch"),
        ((8, 1024, 64, 16), "reference"),
        ((8, 16, 256, 16), "reference"),
        ((32, 64, 64, 16), "reference"),
        ((32, 1024, 256, 16), "reference"),
    ],
)
def test_auto_rule_on_cpu(shape, fallback, monkeypatch):
    monkeypatch.delenv("CLPLAT_SCAN_BACKEND", raising=False)
    assert resolve_selective_backend("auto", CPU, *shape, kernel_available=True) == "cpp"
    assert resolve_selective_backend("auto", CPU, *shape, kernel_available=False) == fallback


def test_auto_rule_on_cuda_and_overrides(monkeypatch):
    monkeypatch.delenv("CLPLAT_SCAN_BACKEND", raising=False)
    cuda = torch.device("cuda")
    assert resolve_selective_backend("auto", cuda, 32, 1024, 256, 16) == ("triton" if triton_available() else "torch")
    assert resolve_selective_backend("torch", CPU, 32, 1024, 256, 16, kernel_available=True) == "torch"
    monkeypatch.setenv("CLPLAT_SCAN_BACKEND", "reference")
    assert resolve_selective_backend("auto", CPU, 32, 1024, 256, 16, kernel_available=True) == "reference"
    monkeypatch.setenv("CLPLAT_SCAN_BACKEND", "fast")
    with pytest.raises(ValueError, match="CLPLAT_SCAN_BACKEND"):
        resolve_selective_backend("auto", CPU, 1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="needs CPU tensors"):
        resolve_selective_backend("cpp", cuda, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="not valid"):
        resolve_selective_backend("cuda", CPU, 1, 1, 1, 1)


def test_build_failure_falls_back(monkeypatch, tmp_path):
    """No usable compiler: a warning, ``auto`` runs a PyTorch backend, ``cpp`` raises clearly."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("CLPLAT_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLPLAT_SCAN_BACKEND", raising=False)
    selective_cpu._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="falls back"):
            assert not cpu_kernel_available()
        assert "no-such-compiler" in (selective_cpu.cpu_kernel_error() or "")
        p = {k: v.detach() for k, v in _problem(2, 12, 5, 3).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = selective_scan(**p, delta_softplus=True)
        torch.testing.assert_close(y, selective_scan_ref(**p, delta_softplus=True))
        with pytest.raises(RuntimeError, match="unavailable"):
            selective_scan(**p, backend="cpp")
    finally:
        selective_cpu._library.cache_clear()
        monkeypatch.undo()


@needs_kernel
def test_cpp_float32_state_gate_precision():
    """The state gate exp(delta A) in float32 (base 2 on A scaled by log2 e): relative error within
    the rounding of the product delta A itself (|delta A| * 2^-23) plus 2 ulp, from A = -87 to 40.
    T = 2, N = 1: h_0 = 1 (u = B = delta = 1), h_1 = exp(A) (u_1 = 0), y_1 = h_1."""
    x = torch.cat([torch.linspace(-87, 40, 20001), -torch.logspace(-8, 1.9, 500)])
    n = x.numel()
    u = torch.zeros(1, 2, n)
    u[:, 0] = 1.0
    y, _ = selective_scan_core_cpu(u, torch.ones(1, 2, n), x.view(n, 1), torch.ones(1, 2, 1), torch.ones(1, 2, 1))
    want = torch.exp(x.double())
    rel = (y[0, 1].double() - want).abs() / want
    assert (rel <= 2.4e-7 + 1.2e-7 * x.double().abs()).all(), float((rel / (2.4e-7 + 1.2e-7 * x.abs())).max())


@needs_kernel
def test_cpp_flushes_denormals_only_while_it_runs():
    """Inside the kernel a denormal input reads as zero; afterwards PyTorch's arithmetic on the
    calling thread keeps denormals again (the thread's floating-point mode is restored)."""
    tiny = torch.full((1, 1, 16), 1e-39)
    assert float((tiny * 1.0).min()) > 0  # this thread keeps denormals
    ones = torch.ones(1, 1, 1)
    y, _ = selective_scan_core_cpu(tiny, torch.ones(1, 1, 16), torch.zeros(16, 1), ones, ones)
    assert float(y.abs().max()) == 0.0
    assert float((tiny * 1.0).min()) > 0
