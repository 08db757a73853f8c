"""Public entry point :func:`linear_scan`: validation, dtype policy and backend choice.

Backends share one contract, so callers (backbones, the selective scan, the Newton solver) never
care which one runs:

- ``"reference"``: the sequential oracle (autograd through a loop; slow, any dtype).
- ``"torch"``: the chunked PyTorch scan with a reverse-scan backward (CPU, and GPU fallback).
- ``"triton"``: fused Triton kernels (CUDA; CPU only under ``TRITON_INTERPRET=1``, for tests).
- ``"auto"``: ``triton`` for CUDA tensors when Triton imports, ``torch`` otherwise. The
  environment variable ``CLPLAT_SCAN_BACKEND`` overrides ``auto`` (e.g. to force ``torch`` on a GPU
  while debugging a kernel), and only ``auto``.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from clplat.kernels.reference import linear_scan_ref
from clplat.kernels.torch_impl import linear_scan_torch

__all__ = ["BACKENDS", "linear_scan", "resolve_backend", "triton_available", "validate_scan_inputs"]

BACKENDS = ("auto", "reference", "torch", "triton")
_ENV_BACKEND = "CLPLAT_SCAN_BACKEND"
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@functools.cache
def triton_available() -> bool:
    """True when ``triton`` imports; cached because a failed import is slow to repeat."""
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 -- ImportError, or a broken install failing differently
        return False
    return True


def triton_interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``backend`` (possibly ``"auto"``) into the concrete backend for tensors on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"linear_scan: backend={backend!r} is not valid: allowed values are {', '.join(BACKENDS)}")
    if backend == "auto":
        forced = os.environ.get(_ENV_BACKEND)
        if forced:
            if forced not in BACKENDS or forced == "auto":
                raise ValueError(
                    f"{_ENV_BACKEND}={forced!r} is not valid: allowed values are reference, torch, triton"
                )
            backend = forced
        elif device.type == "cuda" and triton_available():
            return "triton"
        else:
            return "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("linear_scan: backend='triton' requested but triton is not importable")
        if device.type != "cuda" and not triton_interpreting():
            raise RuntimeError(
                f"linear_scan: backend='triton' needs CUDA tensors (got device {device}); "
                "set TRITON_INTERPRET=1 before importing triton to run it on CPU, or use backend='torch'"
            )
    return backend


def validate_scan_inputs(
    a: Tensor, b: Tensor, h0: Tensor | None, name: str = "linear_scan"
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check shapes/devices and promote ``a``, ``b``, ``h0`` to one floating or complex dtype.

    Mixed real/complex inputs (e.g. a complex LRU gate with real inputs) are promoted to the
    complex dtype here, *outside* the autograd function, so autograd's own casts take care of
    returning real gradients for the real inputs.
    """
    for label, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"{name}: {label} must have shape (B, T, D), got {tuple(x.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: a and b must have the same shape (B, T, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] == 0:
        raise ValueError(f"{name}: the time dimension is empty (T=0), shape {tuple(a.shape)}")
    if a.device != b.device:
        raise ValueError(f"{name}: a and b are on different devices ({a.device}, {b.device})")
    tensors = [a, b] if h0 is None else [a, b, h0]
    if h0 is not None:
        if not isinstance(h0, Tensor):
            raise TypeError(f"{name}: h0 must be a torch.Tensor or None, got {type(h0).__name__}")
        expected = (a.shape[0], a.shape[2])
        if tuple(h0.shape) != expected:
            raise ValueError(f"{name}: h0 must have shape (B, D) = {expected}, got {tuple(h0.shape)}")
        if h0.device != a.device:
            raise ValueError(f"{name}: h0 is on {h0.device} but a is on {a.device}")
    for label, x in zip(("a", "b", "h0"), tensors):
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{name}: {label} must be a floating point or complex tensor, got {x.dtype}")
    dtype = functools.reduce(torch.promote_types, (x.dtype for x in tensors))
    a, b = a.to(dtype), b.to(dtype)
    h0 = None if h0 is None else h0.to(dtype)
    return a, b, h0


def linear_scan(
    a: Tensor,
    b: Tensor,
    h0: Tensor | None = None,
    reverse: bool = False,
    backend: str = "auto",
    return_final: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """First-order diagonal linear recurrence over time, differentiable in ``a``, ``b`` and ``h0``.

    Forward: ``h_t = a_t * h_{t-1} + b_t`` for ``t = 0..T-1`` with ``h_{-1} = h0`` (zeros if None).
    Reverse (``reverse=True``): ``h_t = a_t * h_{t+1} + b_t`` for ``t = T-1..0`` with ``h_T = h0``.

    Args:
        a, b: ``(B, T, D)`` gates and inputs; real of any sign (zeros allowed) or complex. Different
            dtypes are promoted to a common one (real gate + complex input gives complex).
        h0: optional initial state ``(B, D)``.
        reverse: scan from the end of the sequence to the start.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``"reference"`` (see the module docs).
        return_final: also return the state after the last processed step ``(B, D)``.

    Returns:
        ``h`` ``(B, T, D)`` in the promoted input dtype, and the final state if asked.

    fp16/bf16 inputs are accumulated in fp32 (Triton converts in registers; the torch path
    upcasts) and the result is cast back, since a long product of half-precision gates loses
    all its bits.
    """
    a, b, h0 = validate_scan_inputs(a, b, h0)
    chosen = resolve_backend(backend, a.device)
    if chosen == "reference":
        h, final = linear_scan_ref(a, b, h0, reverse=reverse, return_final=True)  # type: ignore[misc]
    elif chosen == "triton":
        from clplat.kernels.triton_impl import linear_scan_triton

        h, final = linear_scan_triton(a, b, h0, reverse=reverse)
    else:
        dtype = a.dtype
        if dtype in _LOW_PRECISION:
            a, b = a.float(), b.float()
            h0 = None if h0 is None else h0.float()
        h, final = linear_scan_torch(a, b, h0, reverse=reverse)
        if dtype in _LOW_PRECISION:
            h, final = h.to(dtype), final.to(dtype)
    return (h, final) if return_final else h
