"""Fused CPU selective scan: a small C++ kernel compiled at first use, called through ctypes.

The kernel (``selective_cpu.cpp`` next to this file) runs the Mamba-1 recurrence sequentially in
time with each block of 16 channels' ``(16, N)`` state held in L1 cache and vectorised across the
channels, contracts the state with ``C_t`` at every step, and never writes ``(B, T, Din, N)``:
only ``y``, the final state and, when gradients are needed, the state every ``K`` steps
(``T / K`` of the full tensor). Its backward pass recomputes each chunk's states from those
checkpoints and runs the adjoint recurrence in reverse. Sequences are split across
``torch.get_num_threads()`` threads.

Build: plain ``g++`` (``$CXX`` if set) on one file with no PyTorch headers, about 2 s, once per
machine: the shared library is cached under ``$CLPLAT_KERNEL_CACHE`` (default
``~/.cache/clplat/kernels``), named by a hash of the source, the flags and the CPU's feature
flags, and written atomically (parallel test workers may race to build it). If no compiler is
found or the build fails, :func:`cpu_kernel_available` returns False, a warning says why once,
and ``selective_scan(backend="auto")`` falls back to the PyTorch backends.
``CLPLAT_DISABLE_CPU_KERNEL=1`` turns the kernel off (to test the fallback).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = [
    "causal_conv1d_silu_cpu",
    "mamba_inner_cpu",
    "cpu_kernel_available",
    "cpu_kernel_error",
    "exp_pass_cpu",
    "selective_scan_core_cpu",
]

_SOURCE = Path(__file__).with_name("selective_cpu.cpp")
_ABI_VERSION = 8
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno"],
    ["-O3", "-fopenmp-simd", "-fno-math-errno"],  # compilers that reject -march=native
)
_COMMON = ["-std=c++17", "-fPIC", "-shared", "-pthread", "-Wno-psabi"]
# Steps between saved states: the backward's scratch (2 K N 16 floats; 128 KiB at N = 16) stays in L2.
CHECKPOINT_STEPS = 64
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_error: str | None = None


def _cache_dir() -> Path:
    root = os.environ.get("CLPLAT_KERNEL_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clplat" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(compiler: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, *_COMMON, str(_SOURCE), "-o", tmp], check=True, capture_output=True,
                       text=True, timeout=300)
        os.replace(tmp, target)  # atomic: a concurrent builder either sees nothing or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> None:
    P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {
        "selective_fwd": [P, I64, P, I64, P, P, I64, P, I64, P, P, I64, P, INT, P, I64, P, P, P] + [I64] * 5 + [INT],
        "selective_bwd": [P, I64, P, I64, P, P, I64, P, I64, P, P, I64, P, INT, P, I64] + [P] * 6 + [I64]
        + [P] * 6 + [I64] * 5 + [INT],
        "conv_silu_fwd": [P, I64, P, P, P] + [I64] * 4 + [INT],
        "conv_silu_bwd": [P, I64] + [P] * 4 + [I64] + [P] * 2 + [I64] * 4 + [INT],
        "selective_exp_pass": [P, P] + [I64] * 4,
    }
    for sfx in _DTYPES.values():
        for name, argtypes in signatures.items():
            fn = getattr(lib, f"clplat_{name}_{sfx}")
            fn.argtypes = argtypes
            fn.restype = ctypes.c_double if name == "selective_exp_pass" else None


@functools.cache
def _library() -> ctypes.CDLL | None:
    """Build (once per machine) and load the kernel; None, with the reason kept, if that fails."""
    global _error
    if os.environ.get("CLPLAT_DISABLE_CPU_KERNEL", "0") not in ("", "0"):
        _error = "disabled by CLPLAT_DISABLE_CPU_KERNEL"
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        _error = "no C++ compiler found (set CXX, or install g++)"
    else:
        source = _SOURCE.read_bytes()
        failures = []
        for flags in _FLAG_SETS:
            key = hashlib.sha256(b"\0".join([source, " ".join([compiler, *flags, *_COMMON]).encode(),
                                             _cpu_flags().encode()])).hexdigest()[:16]
            target = _cache_dir() / f"selective_cpu-{key}.so"
            try:
                if not target.exists():
                    _compile(compiler, flags, target)
                lib = ctypes.CDLL(str(target))
                if lib.clplat_selective_abi_version() != _ABI_VERSION:
                    raise RuntimeError("stale library (ABI version mismatch)")
                _declare(lib)
                return lib
            except subprocess.CalledProcessError as exc:
                failures.append(f"{' '.join(flags)}: {exc.stderr.strip()[-500:]}")
            except Exception as exc:  # noqa: BLE001 -- timeouts, unwritable cache, a broken .so: all mean fallback
                failures.append(f"{' '.join(flags)}: {type(exc).__name__}: {exc}")
        _error = "compiling the CPU selective-scan kernel failed: " + " | ".join(failures)
    warnings.warn(f"clplat: {_error}; selective_scan falls back to the PyTorch backends", RuntimeWarning,
                  stacklevel=3)
    return None


def cpu_kernel_available() -> bool:
    """True when the fused CPU kernel is built (or cached) and loads; builds it on first call."""
    return _library() is not None


def cpu_kernel_error() -> str | None:
    """Why the kernel is unavailable (None when it is available or not tried yet)."""
    return _error


def _ptr(x: Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


def _rows(x: Tensor | None) -> tuple[Tensor | None, int]:
    """``x`` as (tensor, row stride) for the kernel: rows ``(b, t)`` equally spaced, last dim contiguous.

    Slices such as the ``z`` half of a projection qualify as they are; anything else is copied.
    """
    if x is None:
        return None, 0
    Bsz, L, width = x.shape
    if x.stride(2) != 1 or x.stride(0) != L * x.stride(1):
        x = x.contiguous()
    return x, x.stride(1)


def _fn(name: str, dtype: torch.dtype):
    lib = _library()
    if lib is None:
        raise RuntimeError(f"clplat: the CPU kernel is unavailable: {_error}")
    if dtype not in _DTYPES:
        raise TypeError(f"clplat: the CPU kernels compute in float32 or float64, got {dtype}")
    return getattr(lib, f"clplat_{name}_{_DTYPES[dtype]}")


def _threads() -> int:
    return torch.get_num_threads()


class _SelectiveCpuFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                z: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool, delta_proj: Tensor | None,
                checkpoint_steps: int) -> tuple[Tensor, Tensor]:
        (u, su), (delta, sdt), (B, sB), (C, sC), (z, sz) = (_rows(x) for x in (u, delta, B, C, z))
        At = A.t().contiguous()
        WdtT = None if delta_proj is None else delta_proj.t().contiguous()  # (R, Din)
        R = 0 if WdtT is None else WdtT.shape[0]
        D = None if D is None else D.contiguous()
        bias = None if delta_bias is None else delta_bias.contiguous()
        Bsz, L, Din = u.shape
        N = A.shape[1]
        K = max(1, min(checkpoint_steps, L))
        y = u.new_empty(Bsz, L, Din)
        last = u.new_empty(Bsz, Din, N)
        needs_grad = any(ctx.needs_input_grad[:8]) or ctx.needs_input_grad[9]
        ckpt = u.new_empty(Bsz, -(-L // K), N, Din) if needs_grad else None
        _fn("selective_fwd", u.dtype)(u.data_ptr(), su, delta.data_ptr(), sdt, At.data_ptr(), B.data_ptr(), sB,
                                      C.data_ptr(), sC, _ptr(D), _ptr(z), sz, _ptr(bias), int(delta_softplus),
                                      _ptr(WdtT), R, y.data_ptr(), last.data_ptr(), _ptr(ckpt), Bsz, L, Din, N, K,
                                      _threads())
        if needs_grad:
            ctx.save_for_backward(u, delta, At, B, C, D, z, bias, WdtT, ckpt)
            ctx.strides = (su, sdt, sB, sC, sz)
        ctx.K, ctx.softplus = K, delta_softplus
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dy: Tensor | None, dlast: Tensor | None):
        u, delta, At, B, C, D, z, bias, WdtT, ckpt = ctx.saved_tensors
        su, sdt, sB, sC, sz = ctx.strides
        Bsz, L, Din = u.shape
        N = At.shape[0]
        dy = u.new_zeros(Bsz, L, Din) if dy is None else dy.contiguous()
        dlast = None if dlast is None else dlast.contiguous()
        du = u.new_empty(Bsz, L, Din)
        R = 0 if WdtT is None else WdtT.shape[0]
        ddelta = u.new_empty(Bsz, L, Din) if WdtT is None else u.new_zeros(Bsz, L, R)
        dW_per_seq = None if WdtT is None else u.new_empty(Bsz, R, Din)
        dz = None if z is None else u.new_empty(Bsz, L, Din)
        dA_per_seq = u.new_empty(Bsz, N, Din)
        dD_per_seq = None if D is None else u.new_empty(Bsz, Din)
        dbias_per_seq = None if bias is None else u.new_empty(Bsz, Din)
        dB, dC = u.new_zeros(Bsz, L, N), u.new_zeros(Bsz, L, N)
        _fn("selective_bwd", u.dtype)(u.data_ptr(), su, delta.data_ptr(), sdt, At.data_ptr(), B.data_ptr(), sB,
                                      C.data_ptr(), sC, _ptr(D), _ptr(z), sz, _ptr(bias), int(ctx.softplus),
                                      _ptr(WdtT), R, ckpt.data_ptr(), dy.data_ptr(), _ptr(dlast), du.data_ptr(),
                                      ddelta.data_ptr(), _ptr(dz), Din, dA_per_seq.data_ptr(), _ptr(dD_per_seq),
                                      _ptr(dbias_per_seq), _ptr(dW_per_seq), dB.data_ptr(), dC.data_ptr(), Bsz, L,
                                      Din, N, ctx.K, _threads())
        dD = None if D is None else dD_per_seq.sum(0)
        dbias = None if bias is None else dbias_per_seq.sum(0)
        dW = None if WdtT is None else dW_per_seq.sum(0).t()
        return du, ddelta, dA_per_seq.sum(0).t(), dB, dC, dD, dz, dbias, None, dW, None


def selective_scan_core_cpu(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                            z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                            delta_proj_weight: Tensor | None = None,
                            checkpoint_steps: int = CHECKPOINT_STEPS) -> tuple[Tensor, Tensor]:
    """``(y, last_state)`` of the selective scan on CPU tensors of one dtype (float32/64).

    Everything is fused in the kernel: ``delta <- softplus(delta @ delta_proj_weight.T +
    delta_bias)`` (each step optional; with the projection ``delta`` is ``(B, T, R)``), the
    recurrence, and ``y = (core + D u) * silu(z)`` (``D``, ``z`` optional). See
    :mod:`clplat.kernels.selective` for the shapes.
    """
    if u.device.type != "cpu":
        raise RuntimeError(f"selective_scan: backend='cpp' needs CPU tensors, got {u.device}")
    return _SelectiveCpuFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, delta_proj_weight,
                                 checkpoint_steps)


class _ConvSiluCpuFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        x, sx = _rows(x)
        wT = weight.reshape(weight.shape[0], -1).t().contiguous()  # (Kc, Din)
        bias = None if bias is None else bias.contiguous()
        Bsz, L, Din = x.shape
        out = x.new_empty(Bsz, L, Din)
        _fn("conv_silu_fwd", x.dtype)(x.data_ptr(), sx, wT.data_ptr(), _ptr(bias), out.data_ptr(), Bsz, L, Din,
                                      wT.shape[0], _threads())
        ctx.save_for_backward(x, wT, bias)
        ctx.sx, ctx.weight_shape = sx, weight.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dout: Tensor):
        x, wT, bias = ctx.saved_tensors
        Bsz, L, Din = x.shape
        Kc = wT.shape[0]
        dout = dout.contiguous()
        dx = x.new_empty(Bsz, L, Din)
        dw_per_seq = x.new_empty(Bsz, Kc, Din)
        db_per_seq = None if bias is None else x.new_empty(Bsz, Din)
        _fn("conv_silu_bwd", x.dtype)(x.data_ptr(), ctx.sx, wT.data_ptr(), _ptr(bias), dout.data_ptr(),
                                      dx.data_ptr(), Din, dw_per_seq.data_ptr(), _ptr(db_per_seq), Bsz, L, Din,
                                      Kc, _threads())
        dw = dw_per_seq.sum(0).t().reshape(ctx.weight_shape)
        return dx, dw, None if bias is None else db_per_seq.sum(0)


def causal_conv1d_silu_cpu(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``silu(causal depthwise conv1d(x))`` on ``(B, T, Din)`` CPU tensors of one dtype (float32/64).

    ``weight``: ``nn.Conv1d(Din, Din, Kc, groups=Din)``'s ``(Din, 1, Kc)``; ``bias``: ``(Din,)`` or
    None. Output ``t`` sees inputs ``t - Kc + 1 .. t`` (zeros before the start), like the
    left-padded convolution truncated to ``T`` steps.
    """
    return _ConvSiluCpuFn.apply(x, weight, bias)


class _MambaInnerCpuFn(torch.autograd.Function):
    """Mamba's mixer between ``in_proj`` and ``out_proj`` as one node: conv + SiLU, ``x_proj``, the
    selective scan. Its backward writes both halves of ``d(in_proj output)`` into one buffer and adds
    ``x_proj``'s input gradient into the scan's in place, so the large gradients are allocated once
    (autograd through the separate ops would allocate each, add two and concatenate the halves)."""

    @staticmethod
    def forward(ctx: FunctionCtx, xz: Tensor, conv_w: Tensor, conv_b: Tensor | None, xproj_w: Tensor,
                dtproj_w: Tensor, dtproj_b: Tensor | None, A: Tensor, D: Tensor | None, d_state: int,
                checkpoint_steps: int) -> Tensor:
        Bsz, L, two_di = xz.shape
        Din = two_di // 2
        R = dtproj_w.shape[1]
        N = d_state
        xs, z = xz[..., :Din], xz[..., Din:]
        (xs, sx), (z, sz) = _rows(xs), _rows(z)
        wT = conv_w.reshape(Din, -1).t().contiguous()
        conv_b = None if conv_b is None else conv_b.contiguous()
        xc = xz.new_empty(Bsz, L, Din)
        _fn("conv_silu_fwd", xz.dtype)(xs.data_ptr(), sx, wT.data_ptr(), _ptr(conv_b), xc.data_ptr(), Bsz, L, Din,
                                       wT.shape[0], _threads())
        dbc = torch.nn.functional.linear(xc, xproj_w)  # (B, L, R + 2N): dt_r | B | C
        sdbc = dbc.stride(1)
        At = A.t().contiguous()
        WdtT = dtproj_w.t().contiguous()
        D = None if D is None else D.contiguous()
        bias = None if dtproj_b is None else dtproj_b.contiguous()
        K = max(1, min(checkpoint_steps, L))
        y = xz.new_empty(Bsz, L, Din)
        ckpt = xz.new_empty(Bsz, -(-L // K), N, Din) if any(ctx.needs_input_grad[:8]) else None
        p_dt, p_B, p_C = dbc.data_ptr(), dbc[..., R:].data_ptr(), dbc[..., R + N:].data_ptr()
        last = xz.new_empty(Bsz, Din, N)
        _fn("selective_fwd", xz.dtype)(xc.data_ptr(), Din, p_dt, sdbc, At.data_ptr(), p_B, sdbc, p_C, sdbc, _ptr(D),
                                       z.data_ptr(), sz, _ptr(bias), 1, WdtT.data_ptr(), R, y.data_ptr(),
                                       last.data_ptr(), _ptr(ckpt), Bsz, L, Din, N, K, _threads())
        ctx.save_for_backward(xs, z, wT, conv_b, xproj_w, xc, dbc, At, WdtT, D, bias, ckpt)
        ctx.meta = (sx, sz, R, N, K)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dy: Tensor):
        xs, z, wT, conv_b, xproj_w, xc, dbc, At, WdtT, D, bias, ckpt = ctx.saved_tensors
        sx, sz, R, N, K = ctx.meta
        Bsz, L, Din = xc.shape
        dy = dy.contiguous()
        sdbc = dbc.stride(1)
        p_dt, p_B, p_C = dbc.data_ptr(), dbc[..., R:].data_ptr(), dbc[..., R + N:].data_ptr()
        dxz = xc.new_empty(Bsz, L, 2 * Din)
        dxc = xc.new_empty(Bsz, L, Din)
        ddt = xc.new_zeros(Bsz, L, R)
        dB, dC = xc.new_zeros(Bsz, L, N), xc.new_zeros(Bsz, L, N)
        dA_per_seq = xc.new_empty(Bsz, N, Din)
        dD_per_seq = None if D is None else xc.new_empty(Bsz, Din)
        dbias_per_seq = None if bias is None else xc.new_empty(Bsz, Din)
        dW_per_seq = xc.new_empty(Bsz, R, Din)
        _fn("selective_bwd", xc.dtype)(xc.data_ptr(), Din, p_dt, sdbc, At.data_ptr(), p_B, sdbc, p_C, sdbc, _ptr(D),
                                       z.data_ptr(), sz, _ptr(bias), 1, WdtT.data_ptr(), R, ckpt.data_ptr(),
                                       dy.data_ptr(), None, dxc.data_ptr(), ddt.data_ptr(), dxz[..., Din:].data_ptr(),
                                       2 * Din, dA_per_seq.data_ptr(), _ptr(dD_per_seq), _ptr(dbias_per_seq),
                                       dW_per_seq.data_ptr(), dB.data_ptr(), dC.data_ptr(), Bsz, L, Din, N, K,
                                       _threads())
        ddbc = torch.cat([ddt, dB, dC], dim=-1).view(Bsz * L, R + 2 * N)
        dxc.view(Bsz * L, Din).addmm_(ddbc, xproj_w)  # x_proj's input gradient, added in place
        dxproj_w = ddbc.t() @ xc.view(Bsz * L, Din)
        Kc = wT.shape[0]
        dw_per_seq = xc.new_empty(Bsz, Kc, Din)
        db_per_seq = None if conv_b is None else xc.new_empty(Bsz, Din)
        _fn("conv_silu_bwd", xc.dtype)(xs.data_ptr(), sx, wT.data_ptr(), _ptr(conv_b), dxc.data_ptr(),
                                       dxz.data_ptr(), 2 * Din, dw_per_seq.data_ptr(), _ptr(db_per_seq), Bsz, L,
                                       Din, Kc, _threads())
        dconv_w = dw_per_seq.sum(0).t().reshape(Din, 1, Kc)
        return (dxz, dconv_w, None if conv_b is None else db_per_seq.sum(0), dxproj_w, dW_per_seq.sum(0).t(),
                None if bias is None else dbias_per_seq.sum(0), dA_per_seq.sum(0).t(),
                None if D is None else dD_per_seq.sum(0), None, None)


def mamba_inner_cpu(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, x_proj_weight: Tensor,
                    dt_proj_weight: Tensor, dt_proj_bias: Tensor | None, A: Tensor, D: Tensor | None,
                    checkpoint_steps: int = CHECKPOINT_STEPS) -> Tensor:
    """Mamba-1 mixer core on CPU: ``xz`` (in_proj output ``(B, T, 2 Din)``) -> ``y`` (``(B, T, Din)``,
    before ``out_proj``), as ``MambaLayer.forward_parallel`` computes it: ``x, z = xz.chunk(2)``,
    ``xc = silu(causal depthwise conv(x))``, ``dt_r, B, C = x_proj(xc)``, ``y = selective_scan(xc,
    dt_r, A, B, C, D, z, dt_proj.bias, softplus, delta_proj_weight=dt_proj.weight)``.

    float32/64 CPU tensors of one dtype; ``A`` is ``(Din, N)`` (already ``-exp(A_log)``).
    """
    if xz.device.type != "cpu":
        raise RuntimeError(f"mamba_inner_cpu needs CPU tensors, got {xz.device}")
    R = dt_proj_weight.shape[1]
    N = A.shape[1]
    if x_proj_weight.shape[0] != R + 2 * N:
        raise ValueError(f"mamba_inner_cpu: x_proj_weight must have R + 2N = {R + 2 * N} rows, "
                         f"got {tuple(x_proj_weight.shape)}")
    return _MambaInnerCpuFn.apply(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, N,
                                  checkpoint_steps)


def exp_pass_cpu(delta: Tensor, A: Tensor) -> float:
    """Benchmark floor: one vectorised pass of ``exp(delta A)`` over ``(B, T, Din, N)``, nothing stored.

    The forward kernel does this much exponentiation plus a few multiply-adds per element.
    """
    delta = delta.contiguous()
    At = A.t().contiguous()
    Bsz, L, Din = delta.shape
    return _fn("selective_exp_pass", delta.dtype)(delta.data_ptr(), At.data_ptr(), Bsz, L, Din, A.shape[1])
