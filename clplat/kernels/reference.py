"""Sequential reference implementations: the oracles every fast path is tested against.

These are deliberately the most literal translation of the recurrences (a Python loop over
time), so that a reader can check them by eye. They are differentiable through ordinary
autograd and work in any dtype, so tests run them in float64 to get a ground truth that is
independent of the summation order of the parallel algorithms.

The time loop iterates over ``Tensor.unbind`` views and stacks once at the end: slicing
``x[:, t]`` inside the loop would make autograd O(T^2) (every slice's backward allocates a
full-size zero tensor), which turns a T=4096 reference into a multi-second call.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_scan_ref", "log_linear_scan_ref", "selective_scan_ref", "sequential_rnn_ref"]


def linear_scan_ref(
    a: Tensor,
    b: Tensor,
    h0: Tensor | None = None,
    reverse: bool = False,
    return_final: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential ``h_t = a_t * h_{t-1} + b_t`` over dim 1 of ``(B, T, D)`` tensors.

    ``reverse=True`` runs ``h_t = a_t * h_{t+1} + b_t`` from the last step to the first, with
    ``h0`` the state "after" the end. Returns ``h`` of shape ``(B, T, D)`` and, if
    ``return_final``, the state after the last processed step (``h[:, -1]`` forward,
    ``h[:, 0]`` reverse). No validation beyond what the arithmetic needs: it is an oracle.
    """
    steps_a = a.unbind(1)
    steps_b = b.unbind(1)
    order = range(len(steps_a) - 1, -1, -1) if reverse else range(len(steps_a))
    state = h0
    out: list[Tensor] = [None] * len(steps_a)  # type: ignore[list-item]
    for t in order:
        state = steps_b[t] if state is None else steps_a[t] * state + steps_b[t]
        out[t] = state
    h = torch.stack(out, dim=1)
    if return_final:
        return h, (h[:, 0] if reverse else h[:, -1])
    return h


def log_linear_scan_ref(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> Tensor:
    """Oracle for :func:`clplat.kernels.logspace.log_linear_scan`: the linear-space loop.

    ``h_t = exp(log_a_t) * h_{t-1} + exp(log_b_t)``; run it in float64 for ground truth.
    """
    return linear_scan_ref(log_a.exp(), log_b.exp(), h0)  # type: ignore[return-value]


def selective_scan_ref(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan (S6), one time step at a time, in the platform's (B, T, D) layout.

    Shapes: ``u, delta, z: (B, T, Din)``; ``A: (Din, N)``; ``B, C: (B, T, N)``; ``D,
    delta_bias: (Din,)``. Per channel d and state n:
    ``x_t[d, n] = exp(delta_t[d] A[d, n]) x_{t-1}[d, n] + delta_t[d] B_t[n] u_t[d]`` and
    ``y_t[d] = sum_n C_t[n] x_t[d, n] + D[d] u_t[d]``, then ``y *= silu(z)``.
    Returns ``y (B, T, Din)`` and, if asked, the last state ``(B, Din, N)``.
    """
    if delta_bias is not None:
        delta = delta + delta_bias
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    x = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys: list[Tensor] = []
    for u_t, d_t, b_t, c_t in zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        x = torch.exp(d_t[:, :, None] * A) * x + (d_t * u_t)[:, :, None] * b_t[:, None, :]
        ys.append((x * c_t[:, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    if return_last_state:
        return y, x
    return y


def sequential_rnn_ref(cell, x: Tensor, h0: Tensor) -> Tensor:
    """Run ``h_t = cell(h_{t-1}, x_t)`` step by step; oracle for the Newton solver.

    ``cell`` takes ``(B, D)`` states and ``(B, ...)`` inputs for one step.
    """
    state = h0
    out: list[Tensor] = []
    for x_t in x.unbind(1):
        state = cell(state, x_t)
        out.append(state)
    return torch.stack(out, dim=1)
