"""Chunked linear scan in plain PyTorch: the CPU path and the GPU fallback.

Recurrence ``h_t = a_t * h_{t-1} + b_t`` over dim 1 of ``(B, T, D)`` tensors.

Why this formulation (measured on a 2-core CPU, see ``benchmarks/scan.py``): on CPU the scan
is bound by memory traffic and by the per-call overhead of PyTorch ops (~3-5 us), not by
arithmetic. Hillis-Steele doubles (log T full passes) and log-space cumsums (exp/log, unsafe for
negative or zero gates) both move far more bytes than needed. Instead, time is split into ``n``
chunks of ``C`` steps, viewed (without copying) as ``(B, n, C, D)``, and every chunk is advanced
*together*, one in-chunk position at a time, so each PyTorch op works on a ``(B, n, D)`` slice:

1. **Summaries** -- a local scan with zero carry-in that keeps only a ``(B, n, D)`` running state
   (written in place, so it stays in cache) gives each chunk's end value; ``prod`` over the chunk
   gives its total gate. Reads ``a`` and ``b`` once, writes nothing full-size.
2. **Carries** -- the chunk summaries form a scan of length ``n``; it is solved by the same
   routine recursively, so very long sequences cost a few small levels, never ``T`` Python steps.
3. **Apply** -- the real scan, again all chunks at once, each started from its carry-in, written
   straight into the output (``torch.addcmul(..., out=...)``).

That is ~5 full-tensor passes (read a, b twice; write h once) and ``~2C + small`` Python-level
ops, with no exp/log and no division, so any gate sign, exact zeros and complex gates are safe.
The chunk size is chosen so that a ``(B, n, D)`` slice is ~128K elements: big enough to amortise
op overhead, small enough that the running state stays in L2.

The backward pass is the reverse scan of the same form with the gates shifted by one step
(``g_t = conj(a_{t+1}) g_{t+1} + dL/dh_t``), run by the same routine on *views* of ``a``
offset by one step -- no shifted copy is made -- followed by one multiply for the gate gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["chunk_size_for", "linear_scan_torch", "scan_into"]

# Sizes that keep a (B, n, D) slice around this many elements; see the module docstring.
_TARGET_SLICE_ELEMENTS = 131072
_CHUNK_CANDIDATES = (8, 16, 32, 64, 128, 256)


def chunk_size_for(T: int, width: int) -> int:
    """Chunk length for a scan of ``T`` steps over ``width = B * D`` independent channels.

    Returns 0 when the sequence is too short for chunking to pay (then a plain loop over time is
    used). Otherwise the smallest candidate whose per-position slice ``(T // C) * width`` fits the
    target size: smaller chunks mean fewer Python-level ops, while the slice bound keeps the
    running state in cache.
    """
    if T < 2 * _CHUNK_CANDIDATES[0]:
        return 0
    for c in _CHUNK_CANDIDATES:
        if 2 * c > T:
            break
        if (T // c) * width <= _TARGET_SLICE_ELEMENTS:
            return c
    best = 0
    for c in _CHUNK_CANDIDATES:
        if 2 * c <= T:
            best = c
    return best


def _sequential_into(a: Tensor, b: Tensor, h0: Tensor | None, reverse: bool, out: Tensor) -> None:
    """Plain loop over time, vectorised over ``(B, D)``; used for short spans and tails."""
    steps_a, steps_b, steps_o = a.unbind(1), b.unbind(1), out.unbind(1)
    n = len(steps_a)
    order = range(n - 1, -1, -1) if reverse else range(n)
    state = h0
    for t in order:
        if state is None:
            steps_o[t].copy_(steps_b[t])
        else:
            torch.addcmul(steps_b[t], steps_a[t], state, out=steps_o[t])
        state = steps_o[t]


def scan_into(a: Tensor, b: Tensor, h0: Tensor | None, reverse: bool, out: Tensor, chunk: int | None = None) -> None:
    """Write the scan of ``(a, b)`` into ``out`` (all ``(B, T, D)``, any strides, no autograd).

    ``h0`` (``(B, D)`` or ``None`` for zeros) is the state before the first processed step: before
    ``t = 0`` forward, after ``t = T - 1`` when ``reverse``. ``out`` must not overlap ``a``/``b``.
    Inputs may be strided views (including stride-0 expansions): the chunking only ever *splits*
    the time dimension, which is a valid view for any stride.
    """
    Bsz, T, D = a.shape
    C = chunk if chunk is not None else chunk_size_for(T, Bsz * D)
    if C == 0 or T < 2 * C:
        _sequential_into(a, b, h0, reverse, out)
        return
    n = T // C
    rem = T - n * C
    # Forward: the remainder is a tail at the end; reverse: a head at the start. Either way it
    # is processed last, sequentially, from the state the chunked part ends in.
    lo = rem if reverse else 0
    span = slice(lo, lo + n * C)
    av = a[:, span].unflatten(1, (n, C))
    bv = b[:, span].unflatten(1, (n, C))
    ov = out[:, span].unflatten(1, (n, C))
    a_j, b_j, o_j = av.unbind(2), bv.unbind(2), ov.unbind(2)
    order = list(range(C - 1, -1, -1) if reverse else range(C))

    # 1. Chunk summaries: end value of a zero-carry local scan, and the total gate.
    local = b_j[order[0]].clone()
    for j in order[1:]:
        torch.addcmul(b_j[j], a_j[j], local, out=local)
    total_gate = av.prod(dim=2)

    # 2. Carry-in of every chunk, by a (recursive) scan over the n summaries. The buffer holds
    # h0 in its first (forward) or last (reverse) slot so that carry-ins are a plain view.
    carries = a.new_empty(Bsz, n + 1, D)
    seed = carries[:, n] if reverse else carries[:, 0]
    if h0 is None:
        seed.zero_()
    else:
        seed.copy_(h0)
    if reverse:
        scan_into(total_gate, local, seed, True, carries[:, :n])
        carry_in = carries[:, 1:]
    else:
        scan_into(total_gate, local, seed, False, carries[:, 1:])
        carry_in = carries[:, :n]

    # 3. The scan proper, all chunks advancing together from their carry-ins.
    state = carry_in
    for j in order:
        torch.addcmul(b_j[j], a_j[j], state, out=o_j[j])
        state = o_j[j]

    if rem:
        if reverse:
            _sequential_into(a[:, :rem], b[:, :rem], out[:, rem], True, out[:, :rem])
        else:
            _sequential_into(a[:, n * C :], b[:, n * C :], out[:, n * C - 1], False, out[:, n * C :])


class _TorchScanFn(torch.autograd.Function):
    """Chunked scan whose backward is the chunked reverse scan (never autograd through time)."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, b: Tensor, h0: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        out = torch.empty_like(b, memory_format=torch.contiguous_format)
        scan_into(a, b, h0, reverse, out)
        final = (out[:, 0] if reverse else out[:, -1]).clone()
        ctx.save_for_backward(a, out, h0)
        ctx.reverse = reverse
        ctx.set_materialize_grads(False)
        return out, final

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor | None, grad_final: Tensor | None):
        a, h, h0 = ctx.saved_tensors
        reverse: bool = ctx.reverse
        if grad_h is None and grad_final is None:
            return None, None, None, None
        Bsz, T, D = h.shape
        if grad_h is None:
            # Stride-0 zeros: nothing is allocated and the scan reads it like any view.
            grad_h = h.new_zeros(()).expand(Bsz, T, D)
        if a.is_complex():
            # PyTorch's convention: the VJP of y = a * x w.r.t. x is conj(a) * g.
            a = a.conj().resolve_conj()
        d = torch.empty_like(h)
        # `first` is the position where the backward recurrence starts (the forward's last step).
        first = 0 if reverse else T - 1
        d_first = d[:, first]
        d_first.copy_(grad_h[:, first])
        if grad_final is not None:
            d_first.add_(grad_final)
        if T > 1:
            if reverse:
                # d_t = g_t + a_{t-1} d_{t-1}: a forward scan on views shifted by one.
                scan_into(a[:, :-1], grad_h[:, 1:], d_first, False, d[:, 1:])
            else:
                # d_t = g_t + a_{t+1} d_{t+1}: a reverse scan on views shifted by one.
                scan_into(a[:, 1:], grad_h[:, :-1], d_first, True, d[:, :-1])

        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.empty_like(d)
            hc = h.conj() if h.is_complex() else h
            edge = T - 1 if reverse else 0  # where h_prev is h0
            if T > 1:
                if reverse:
                    torch.mul(d[:, :-1], hc[:, 1:], out=grad_a[:, :-1])
                else:
                    torch.mul(d[:, 1:], hc[:, :-1], out=grad_a[:, 1:])
            if h0 is None:
                grad_a[:, edge].zero_()
            else:
                torch.mul(d[:, edge], h0.conj() if h0.is_complex() else h0, out=grad_a[:, edge])
        if h0 is not None and ctx.needs_input_grad[2]:
            edge = T - 1 if reverse else 0
            grad_h0 = a[:, edge] * d[:, edge]
        return grad_a, d, grad_h0, None


def linear_scan_torch(
    a: Tensor, b: Tensor, h0: Tensor | None = None, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Chunked scan with a custom backward; returns ``(h, final_state)``.

    Expects validated inputs of one dtype (see :func:`clplat.kernels.dispatch.linear_scan`,
    which also upcasts fp16/bf16 to fp32 before calling this).
    """
    return _TorchScanFn.apply(a, b, h0, reverse)
