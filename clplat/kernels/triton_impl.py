"""Triton kernels for the linear scan ``h_t = a_t * h_{t-1} + b_t`` on ``(B, T, D)`` tensors.

Design (accelerated-scan's single-pass scan, in the platform's ``(B, T, D)`` layout, plus an
optional FLA-style split over time when there are too few channels to fill the GPU):

- One kernel, ``_scan_kernel``, scans a *span* of time for one ``(batch, D-block)``: it walks the
  span in ``[BT, BD]`` tiles (coalesced along D), upcasts to fp32 (fp64 stays fp64) right after
  ``tl.load``, runs ``tl.associative_scan`` over the tile with the affine-map combine, adds the
  carry, and keeps the tile's last row as the next carry. Loads do not depend on the carry, so
  the compiler can pipeline them.
- **Single pass** (enough ``B * D / BD`` programs): one launch over the whole sequence; bytes
  moved are the minimum (read a, b; write h).
- **Split** (few channels, long T): the sequence is cut into ``NC`` spans. Pass 1 writes only each
  span's summary (total gate, end state with zero carry); the ``NC``-long scan over summaries is
  this same routine, recursively; pass 2 rescans each span from its carry-in and writes ``h``.
- **Backward** uses the same kernel in the opposite direction with *shifted gate loads*
  (``a[t+1]`` for a forward scan; out-of-range reads give gate 1, which applies the final-state
  gradient as the carry) and fuses the gate gradient ``da_t = d_t * conj(h_{t-1})``.
- **Complex** gates/inputs are handled as real/imag planes of ``torch.view_as_real`` with a
  4-tuple combine (Triton has no complex dtype); backward conjugates the gate in registers.

Interpreter (``TRITON_INTERPRET=1``) rules honoured: no autotune, no inter-program waiting, no
half-precision arithmetic (converted after load), block sizes are arguments so tests can shrink
them. ``tl.associative_scan`` with a custom combine runs element by element in the interpreter
(~0.2 ms/element): keep interpreted shapes tiny.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["DEFAULT_BLOCK_D", "DEFAULT_BLOCK_T", "linear_scan_triton"]

DEFAULT_BLOCK_T = 64
DEFAULT_BLOCK_D = 32
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@triton.jit
def _combine_real(a1, b1, a2, b2):
    """Compose affine maps: apply (a1, b1) then (a2, b2)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    """Same composition with complex a and b given as (real, imag) planes."""
    ar = ar1 * ar2 - ai1 * ai2
    ai = ar1 * ai2 + ai1 * ar2
    br = ar2 * br1 - ai2 * bi1 + br2
    bi = ar2 * bi1 + ai2 * br1 + bi2
    return ar, ai, br, bi


@triton.jit
def _scan_kernel(
    A,  # gates (B, T, D) [x2 planes if complex]
    X,  # inputs (B, T, D) (the upstream gradient in backward)
    CARRY,  # carry-in per span (B, NC, D), read when HAS_CARRY
    OUT,  # states (B, T, D), written when WRITE_OUT
    SUM_A,  # span total gate (B, NC, D), written when WRITE_SUM
    SUM_X,  # span end state with zero carry-in (B, NC, D), written when WRITE_SUM
    H,  # forward states, read when COMPUTE_DA
    H0,  # forward initial state (B, D), read when COMPUTE_DA and HAS_H0
    DA,  # gate gradient (B, T, D), written when COMPUTE_DA
    T,
    D,
    CL,  # span length in steps (a multiple of BT)
    NC,  # number of spans
    REVERSE: tl.constexpr,
    SHIFT: tl.constexpr,
    IS_COMPLEX: tl.constexpr,
    IS_FP64: tl.constexpr,
    HAS_CARRY: tl.constexpr,
    WRITE_OUT: tl.constexpr,
    WRITE_SUM: tl.constexpr,
    COMPUTE_DA: tl.constexpr,
    HAS_H0: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    F: tl.constexpr = 2 if IS_COMPLEX else 1  # storage elements per value
    STEP: tl.constexpr = -1 if REVERSE else 1  # time direction of the scan
    LAST: tl.constexpr = 0 if REVERSE else BT - 1  # tile row holding the newest state

    offs_d = pid_d * BD + tl.arange(0, BD)
    mask_d = offs_d < D
    rows = tl.arange(0, BT)
    t_begin = pid_c * CL
    t_end = tl.minimum(t_begin + CL, T)
    n_tiles = tl.cdiv(t_end - t_begin, BT)
    seq_base = pid_b * T * D
    span_off = ((pid_b * NC + pid_c) * D + offs_d) * F

    if IS_FP64:
        cdt = tl.float64
    else:
        cdt = tl.float32

    cr = tl.zeros([BD], dtype=cdt)
    ci = tl.zeros([BD], dtype=cdt)
    if HAS_CARRY:
        cr = tl.load(CARRY + span_off, mask=mask_d, other=0.0).to(cdt)
        if IS_COMPLEX:
            ci = tl.load(CARRY + span_off + 1, mask=mask_d, other=0.0).to(cdt)
    gr = tl.full([BD], 1.0, dtype=cdt)
    gi = tl.zeros([BD], dtype=cdt)
    if COMPUTE_DA and HAS_H0:
        h0_off = (pid_b * D + offs_d) * F
        h0r = tl.load(H0 + h0_off, mask=mask_d, other=0.0).to(cdt)
        h0i = tl.zeros([BD], dtype=cdt)
        if IS_COMPLEX:
            h0i = tl.load(H0 + h0_off + 1, mask=mask_d, other=0.0).to(cdt)

    for k in range(n_tiles):
        if REVERSE:
            kk = n_tiles - 1 - k
        else:
            kk = k
        t = (t_begin + kk * BT + rows).to(tl.int64)
        valid = t < t_end
        m = valid[:, None] & mask_d[None, :]
        off = ((seq_base + t * D)[:, None] + offs_d[None, :]) * F
        if SHIFT:
            # Backward: the gate multiplying the carried adjoint is the *next* forward step's.
            ts = t - STEP
            ms = m & ((ts >= 0) & (ts < T))[:, None]
            a_off = ((seq_base + ts * D)[:, None] + offs_d[None, :]) * F
        else:
            ms = m
            a_off = off
        ar = tl.load(A + a_off, mask=ms, other=1.0).to(cdt)
        xr = tl.load(X + off, mask=m, other=0.0).to(cdt)
        if IS_COMPLEX:
            ai = tl.load(A + a_off + 1, mask=ms, other=0.0).to(cdt)
            if SHIFT:
                ai = -ai  # conj(a): PyTorch's complex VJP convention
            xi = tl.load(X + off + 1, mask=m, other=0.0).to(cdt)
            sar, sai, sxr, sxi = tl.associative_scan(
                (ar, ai, xr, xi), axis=0, combine_fn=_combine_complex, reverse=REVERSE
            )
            hr = sxr + sar * cr[None, :] - sai * ci[None, :]
            hi = sxi + sar * ci[None, :] + sai * cr[None, :]
        else:
            sar, sxr = tl.associative_scan((ar, xr), axis=0, combine_fn=_combine_real, reverse=REVERSE)
            hr = sxr + sar * cr[None, :]
            sai = tl.zeros([BT, BD], dtype=cdt)
            hi = tl.zeros([BT, BD], dtype=cdt)
        if WRITE_OUT:
            tl.store(OUT + off, hr.to(OUT.dtype.element_ty), mask=m)
            if IS_COMPLEX:
                tl.store(OUT + off + 1, hi.to(OUT.dtype.element_ty), mask=m)
        if COMPUTE_DA:
            # da_t = d_t * conj(h_prev), h_prev = forward state one forward step earlier.
            tp = t + STEP
            inside = (tp >= 0) & (tp < T)
            mp = m & inside[:, None]
            p_off = ((seq_base + tp * D)[:, None] + offs_d[None, :]) * F
            pr = tl.load(H + p_off, mask=mp, other=0.0).to(cdt)
            pi = tl.zeros([BT, BD], dtype=cdt)
            if IS_COMPLEX:
                pi = tl.load(H + p_off + 1, mask=mp, other=0.0).to(cdt)
            if HAS_H0:
                edge = (~inside)[:, None] & m
                pr = tl.where(edge, h0r[None, :], pr)
                if IS_COMPLEX:
                    pi = tl.where(edge, h0i[None, :], pi)
            tl.store(DA + off, (hr * pr + hi * pi).to(DA.dtype.element_ty), mask=m)
            if IS_COMPLEX:
                tl.store(DA + off + 1, (hi * pr - hr * pi).to(DA.dtype.element_ty), mask=m)
        sel = (rows == LAST)[:, None]
        cr = tl.sum(tl.where(sel, hr, 0.0), axis=0)
        if IS_COMPLEX:
            ci = tl.sum(tl.where(sel, hi, 0.0), axis=0)
        if WRITE_SUM:
            tar = tl.sum(tl.where(sel, sar, 0.0), axis=0)
            if IS_COMPLEX:
                tai = tl.sum(tl.where(sel, sai, 0.0), axis=0)
                gr, gi = tar * gr - tai * gi, tar * gi + tai * gr
            else:
                gr = gr * tar
    if WRITE_SUM:
        tl.store(SUM_A + span_off, gr.to(SUM_A.dtype.element_ty), mask=mask_d)
        tl.store(SUM_X + span_off, cr.to(SUM_X.dtype.element_ty), mask=mask_d)
        if IS_COMPLEX:
            tl.store(SUM_A + span_off + 1, gi.to(SUM_A.dtype.element_ty), mask=mask_d)
            tl.store(SUM_X + span_off + 1, ci.to(SUM_X.dtype.element_ty), mask=mask_d)


def _planes(x: Tensor) -> Tensor:
    """Contiguous storage view the kernel indexes: complex tensors as (..., 2) real planes."""
    x = x.contiguous()
    return torch.view_as_real(x) if x.is_complex() else x


def _pick_spans(batch: int, d_blocks: int, T: int, block_t: int, device: torch.device) -> int:
    """Number of time spans so that ``batch * d_blocks * spans`` programs can fill the GPU.

    Splitting costs one extra read of ``a`` and ``b``, so it is used only when the single pass
    would leave most SMs idle and each span still covers several tiles.
    """
    programs = batch * d_blocks
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # interpreter: splitting only costs time
        return 1
    if programs >= target:
        return 1
    return max(1, min(math.ceil(target / programs), T // (4 * block_t)))


def _scan_launch(
    a: Tensor,
    x: Tensor,
    init: Tensor | None,
    reverse: bool,
    out: Tensor | None,
    *,
    shift: bool = False,
    h: Tensor | None = None,
    h0: Tensor | None = None,
    da: Tensor | None = None,
    block_t: int = DEFAULT_BLOCK_T,
    block_d: int = DEFAULT_BLOCK_D,
    spans: int | None = None,
) -> None:
    """Scan ``(a, x)`` (contiguous ``(B, T, D)``) from ``init`` into ``out`` (and ``da``).

    ``shift``/``h``/``h0``/``da`` select the backward mode (see the module docstring). ``spans``
    forces the number of time spans (tests use it to exercise the split path on CPU).
    """
    Bsz, T, D = x.shape
    is_complex = x.is_complex()
    is_fp64 = x.dtype in (torch.float64, torch.complex128)
    work_dtype = {True: torch.float64, False: torch.float32}[is_fp64]
    d_blocks = triton.cdiv(D, block_d)
    nc = spans if spans is not None else _pick_spans(Bsz, d_blocks, T, block_t, x.device)
    nc = max(1, min(nc, triton.cdiv(T, block_t)))
    cl = triton.cdiv(triton.cdiv(T, nc), block_t) * block_t
    nc = triton.cdiv(T, cl)

    A, X = _planes(a), _planes(x)
    OUT = _planes(out) if out is not None else X
    H = _planes(h) if h is not None else X
    H0 = _planes(h0) if h0 is not None else X
    DA = _planes(da) if da is not None else X
    flags = {
        "REVERSE": reverse,
        "SHIFT": shift,
        "IS_COMPLEX": is_complex,
        "IS_FP64": is_fp64,
        "COMPUTE_DA": da is not None,
        "HAS_H0": h0 is not None,
        "BT": block_t,
        "BD": block_d,
    }
    grid = (d_blocks, nc, Bsz)
    if nc == 1:
        carry = _planes(init) if init is not None else X
        _scan_kernel[grid](
            A, X, carry, OUT, X, X, H, H0, DA, T, D, cl, 1,
            HAS_CARRY=init is not None, WRITE_OUT=out is not None, WRITE_SUM=False, **flags,
        )
        return

    # Split path: summaries, scan of summaries (recursively), then the real pass.
    sum_dtype = torch.complex128 if (is_complex and is_fp64) else torch.complex64 if is_complex else work_dtype
    sum_a = torch.empty(Bsz, nc, D, device=x.device, dtype=sum_dtype)
    sum_x = torch.empty_like(sum_a)
    _scan_kernel[grid](
        A, X, X, X, _planes(sum_a), _planes(sum_x), X, X, X, T, D, cl, nc,
        HAS_CARRY=False, WRITE_OUT=False, WRITE_SUM=True,
        **{**flags, "COMPUTE_DA": False},
    )
    ends = torch.empty_like(sum_x)
    seed = init.to(sum_dtype) if init is not None else None
    _scan_launch(sum_a, sum_x, seed, reverse, ends, block_t=block_t, block_d=block_d, spans=spans)
    start = torch.zeros_like(sum_x[:, :1]) if seed is None else seed[:, None]
    if reverse:
        carry_in = torch.cat([ends[:, 1:], start], dim=1)
    else:
        carry_in = torch.cat([start, ends[:, :-1]], dim=1)
    _scan_kernel[grid](
        A, X, _planes(carry_in), OUT, X, X, H, H0, DA, T, D, cl, nc,
        HAS_CARRY=True, WRITE_OUT=out is not None, WRITE_SUM=False, **flags,
    )


class _TritonScanFn(torch.autograd.Function):
    """Triton forward scan; backward = one shifted reverse-scan launch with the fused gate grad."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        a: Tensor,
        b: Tensor,
        h0: Tensor | None,
        reverse: bool,
        block_t: int,
        block_d: int,
        spans: int | None,
    ) -> tuple[Tensor, Tensor]:
        a, b = a.contiguous(), b.contiguous()
        h0 = h0.contiguous() if h0 is not None else None
        out = torch.empty_like(b)
        _scan_launch(a, b, h0, reverse, out, block_t=block_t, block_d=block_d, spans=spans)
        final = (out[:, 0] if reverse else out[:, -1]).clone()
        ctx.save_for_backward(a, out, h0)
        ctx.cfg = (reverse, block_t, block_d, spans)
        ctx.set_materialize_grads(False)
        return out, final

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor | None, grad_final: Tensor | None):
        a, h, h0 = ctx.saved_tensors
        reverse, block_t, block_d, spans = ctx.cfg
        if grad_h is None and grad_final is None:
            return (None,) * 7
        T = h.shape[1]
        grad_h = torch.zeros_like(h) if grad_h is None else grad_h.contiguous()
        init = grad_final.contiguous() if grad_final is not None else None
        d = torch.empty_like(h)
        da = torch.empty_like(a) if ctx.needs_input_grad[0] else None
        _scan_launch(
            a, grad_h, init, not reverse, d,
            shift=True, h=h, h0=h0, da=da, block_t=block_t, block_d=block_d, spans=spans,
        )
        grad_h0 = None
        if h0 is not None and ctx.needs_input_grad[2]:
            edge = T - 1 if reverse else 0
            a_edge = a[:, edge].conj() if a.is_complex() else a[:, edge]
            grad_h0 = (a_edge * d[:, edge]).to(h0.dtype)
        return da, d, grad_h0, None, None, None, None


def linear_scan_triton(
    a: Tensor,
    b: Tensor,
    h0: Tensor | None = None,
    reverse: bool = False,
    block_t: int = DEFAULT_BLOCK_T,
    block_d: int = DEFAULT_BLOCK_D,
    spans: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton scan with a Triton backward; returns ``(h, final_state)`` in the input dtype.

    fp16/bf16 are read and written in their own dtype and accumulated in fp32 inside the kernel;
    float64/complex128 are computed in fp64. ``block_t``/``block_d`` must be powers of two;
    ``spans`` forces the time split (for tests; ``None`` picks from the GPU's SM count).
    """
    for name, v in (("block_t", block_t), ("block_d", block_d)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"linear_scan_triton: {name}={v} must be a power of two")
    return _TritonScanFn.apply(a, b, h0, reverse, block_t, block_d, spans)
