"""Mamba-1 selective scan (S6) on top of the core linear scan.

Layout follows the rest of the platform, ``(batch, time, channels)`` -- *not* mamba-ssm's
``(batch, channels, time)``:

=============  =====================  ==============================================
argument       shape                  meaning
=============  =====================  ==============================================
``u``          ``(B, T, Din)``        input
``delta``      ``(B, T, Din)``        step size (before optional bias/softplus)
``A``          ``(Din, N)``           diagonal state matrix (real; negative for decay)
``B``, ``C``   ``(B, T, N)``          input-dependent input/output projections
``D``          ``(Din,)``             skip connection
``z``          ``(B, T, Din)``        gate: ``y *= silu(z)``
=============  =====================  ==============================================

Per channel ``d`` and state ``n`` the recurrence is the linear scan with
``a_t = exp(delta_t[d] A[d, n])`` and ``b_t = delta_t[d] B_t[n] u_t[d]``; the output is
``y_t[d] = sum_n C_t[n] h_t[d, n] + D[d] u_t[d]``.

Backends (:data:`SELECTIVE_BACKENDS`):

- ``cpp`` (CPU): the fused C++ kernel of :mod:`clplat.kernels.selective_cpu`, compiled with
  ``g++`` at first use and cached. Sequential in time with each block of 16 channels' state in L1
  cache, vectorised across channels, ``y_t`` contracted from the state at every step; it never
  writes ``(B, T, Din, N)`` (only the state every 64 steps, for the backward pass, which recomputes
  each 64-step chunk and runs the adjoint recurrence in reverse).
- ``torch`` (CPU, GPU fallback): builds ``(a, b)`` for a block of channels, flattens ``(Din, N)``
  into the scan's channel axis and calls :func:`clplat.kernels.dispatch.linear_scan`. Channel
  blocks bound the ``(B, T, block, N)`` working set; with several blocks each one is wrapped in
  activation checkpointing so the backward pass also holds one block at a time (the price is
  recomputing each block's forward once).
- ``triton`` (CUDA; CPU under ``TRITON_INTERPRET=1``): fused kernels in
  :mod:`clplat.kernels.triton_selective` that keep the ``(BD, N)`` state in registers and never
  write ``(B, T, Din, N)`` to memory (only tile-boundary states, ``T / BT`` of it, for backward).
  Bias/softplus on ``delta``, ``D`` and ``z`` are cheap elementwise ops done by PyTorch around the
  fused core (for every backend).
- ``reference``: the sequential oracle of :mod:`clplat.kernels.reference` (autograd through a
  Python loop over time).

``auto`` (:func:`resolve_selective_backend`) is a rule measured with
``benchmarks/selective_scan_cpu.py`` (training step = forward + backward, one thread):

- CUDA tensors: ``triton`` when Triton imports, else ``torch``.
- CPU tensors: ``cpp`` whenever the kernel builds: it was the fastest backend at every point of
  the benchmark's grid (B 1-32, T 16-1024, Din 16-256, N 16), 3-29x faster than the better of the
  other two. Without a compiler: ``reference`` when its Python loop's per-step overhead is
  amortised over wide steps (``B * Din * N >= 2**14``) or the chunked ``torch`` path's memory
  traffic dominates (``Din * N >= 2**10`` and ``B * T * Din * N >= 2**23``), else ``torch``; the
  faster of the two near the boundary changes from run to run (within ~1.2x of each other there).
- ``CLPLAT_SCAN_BACKEND`` overrides ``auto`` as for :func:`clplat.kernels.linear_scan`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from clplat.kernels.dispatch import _ENV_BACKEND, linear_scan, resolve_backend, triton_available
from clplat.kernels.reference import selective_scan_ref
from clplat.kernels.selective_cpu import cpu_kernel_available, selective_scan_core_cpu

__all__ = ["SELECTIVE_BACKENDS", "resolve_selective_backend", "selective_scan", "selective_scan_ref"]

SELECTIVE_BACKENDS = ("auto", "reference", "torch", "triton", "cpp")
# Without the C++ kernel on CPU, the reference loop beats the chunked torch path from this per-step
# width B * Din * N on, or from this volume B * T * Din * N when Din * N >= _REFERENCE_MIN_CHANNELS
# (benchmarks/selective_scan_cpu.py, grid section).
_REFERENCE_MIN_WIDTH = 1 << 14
_REFERENCE_MIN_CHANNELS = 1 << 10
_REFERENCE_MIN_VOLUME = 1 << 23

# Elements of one (B, T, block, N) tensor per channel block on the torch path (~64 MiB fp32).
_TORCH_BLOCK_ELEMENTS = 1 << 24


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
           delta_bias: Tensor | None, delta_proj_weight: Tensor | None = None) -> None:
    """Shape checks with messages that name the offending argument and the expected shape."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must have shape (B, T, Din), got {tuple(u.shape)}")
    Bsz, T, Din = u.shape
    if A.dim() != 2 or A.shape[0] != Din:
        raise ValueError(f"selective_scan: A must have shape (Din, N) = ({Din}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    if delta_proj_weight is not None and (delta_proj_weight.dim() != 2 or delta_proj_weight.shape[0] != Din):
        raise ValueError(f"selective_scan: delta_proj_weight must have shape (Din, R) = ({Din}, R), "
                         f"got {tuple(delta_proj_weight.shape)}")
    R = None if delta_proj_weight is None else delta_proj_weight.shape[1]
    expected = {
        "delta": (delta, (Bsz, T, Din if R is None else R)),
        "B": (B, (Bsz, T, N)),
        "C": (C, (Bsz, T, N)),
        "D": (D, (Din,)),
        "z": (z, (Bsz, T, Din)),
        "delta_bias": (delta_bias, (Din,)),
    }
    for name, (x, shape) in expected.items():
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(x.shape)}")
    for name, x in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not x.is_floating_point():
            raise TypeError(f"selective_scan: {name} must be a real floating point tensor, got {x.dtype}")
        if x.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {x.device}, u is on {u.device}")


def _torch_block(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Core for one channel block via the generic scan; returns ``(y, last_state)``."""
    Bsz, T, Din = u.shape
    N = A.shape[1]
    gate = torch.exp(delta[..., None] * A)  # (B, T, Din, N)
    inp = (delta * u)[..., None] * B[:, :, None, :]
    h, last = linear_scan(gate.reshape(Bsz, T, Din * N), inp.reshape(Bsz, T, Din * N), backend="torch", return_final=True)
    y = torch.einsum("btdn,btn->btd", h.view(Bsz, T, Din, N), C)
    return y, last.view(Bsz, Din, N)


def _torch_core(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, block: int | None) -> tuple[Tensor, Tensor]:
    Bsz, T, Din = u.shape
    N = A.shape[1]
    if block is None:
        block = max(1, min(Din, _TORCH_BLOCK_ELEMENTS // max(1, Bsz * T * N)))
    if block >= Din:
        return _torch_block(u, delta, A, B, C)
    use_ckpt = torch.is_grad_enabled() and any(x.requires_grad for x in (u, delta, A, B, C))
    ys, lasts = [], []
    for lo in range(0, Din, block):
        sl = slice(lo, lo + block)
        args = (u[..., sl], delta[..., sl], A[sl], B, C)
        if use_ckpt:
            y, last = checkpoint(_torch_block, *args, use_reentrant=False)
        else:
            y, last = _torch_block(*args)
        ys.append(y)
        lasts.append(last)
    return torch.cat(ys, dim=-1), torch.cat(lasts, dim=1)


def resolve_selective_backend(backend: str, device: torch.device, batch: int, length: int, channels: int,
                              d_state: int, kernel_available: bool | None = None) -> str:
    """The concrete backend ``selective_scan`` runs for ``backend`` on ``device`` and this shape.

    ``auto`` follows the measured rule in the module docstring; ``kernel_available`` (default:
    whether the C++ kernel builds) is a parameter so the rule itself can be tested.
    """
    if backend not in SELECTIVE_BACKENDS:
        raise ValueError(
            f"selective_scan: backend={backend!r} is not valid: allowed values are {', '.join(SELECTIVE_BACKENDS)}"
        )
    if backend == "auto":
        forced = os.environ.get(_ENV_BACKEND)
        if forced:
            if forced not in SELECTIVE_BACKENDS or forced == "auto":
                raise ValueError(f"{_ENV_BACKEND}={forced!r} is not valid: allowed values are "
                                 f"{', '.join(b for b in SELECTIVE_BACKENDS if b != 'auto')}")
            backend = forced
        elif device.type == "cuda":
            return "triton" if triton_available() else "torch"
        elif device.type == "cpu":
            if kernel_available is None:
                kernel_available = cpu_kernel_available()
            if kernel_available:
                return "cpp"
            width = batch * channels * d_state
            wide = width >= _REFERENCE_MIN_WIDTH
            large = channels * d_state >= _REFERENCE_MIN_CHANNELS and width * length >= _REFERENCE_MIN_VOLUME
            return "reference" if wide or large else "torch"
        else:
            return "torch"
    if backend == "cpp":
        if device.type != "cpu":
            raise RuntimeError(f"selective_scan: backend='cpp' needs CPU tensors (got device {device})")
        return backend
    return resolve_backend(backend, device)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
    channel_block: int | None = None,
    delta_proj_weight: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan; see the module docstring for shapes and semantics.

    Args:
        delta_bias, delta_softplus: ``delta <- softplus(delta + delta_bias)`` as in mamba-ssm.
        return_last_state: also return the final state ``(B, Din, N)`` (fp32 for half inputs).
        backend: ``auto`` (see :func:`resolve_selective_backend`), ``cpp`` (CPU), ``triton``, ``torch``
            or ``reference``.
        channel_block: torch path only: channels per block (default bounds memory to ~64 MiB).
        delta_proj_weight: optional ``(Din, R)``: ``delta`` is then ``(B, T, R)`` and the step size
            is ``delta @ delta_proj_weight.T`` before bias/softplus (Mamba's low-rank ``dt_proj``);
            fused into the ``cpp`` kernel, an ``F.linear`` first on the other backends.

    Returns ``y (B, T, Din)`` in ``u``'s dtype (and the last state). Computation is in fp32 for
    fp16/bf16 inputs, like mamba-ssm's reference.
    """
    _check(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)
    chosen = resolve_selective_backend(backend, u.device, u.shape[0], u.shape[1], u.shape[2], A.shape[1])
    if delta_proj_weight is not None and chosen != "cpp":
        delta = F.linear(delta, delta_proj_weight)
        delta_proj_weight = None
    if chosen == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    out_dtype = u.dtype
    compute = torch.promote_types(out_dtype, torch.float32)
    if chosen == "cpp":  # bias, softplus, D and the z gate are fused into the kernel
        cast = [None if x is None else x.to(compute)
                for x in (u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)]
        y, last = selective_scan_core_cpu(*cast[:8], delta_softplus=delta_softplus, delta_proj_weight=cast[8])
        y = y.to(out_dtype)
        return (y, last) if return_last_state else y
    uc, dc = u.to(compute), delta.to(compute)
    if delta_bias is not None:
        dc = dc + delta_bias.to(compute)
    if delta_softplus:
        dc = F.softplus(dc)
    Ac, Bc, Cc = A.to(compute), B.to(compute), C.to(compute)
    if chosen == "triton":
        from clplat.kernels.triton_selective import selective_scan_core_triton

        y, last = selective_scan_core_triton(uc, dc, Ac, Bc, Cc)
    else:
        y, last = _torch_core(uc, dc, Ac, Bc, Cc, channel_block)
    if D is not None:
        y = y + uc * D.to(compute)
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(out_dtype)
    return (y, last) if return_last_state else y
