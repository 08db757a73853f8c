"""One GRU layer with its forward and backward pass written out, for training on the CPU.

Why: ``nn.GRU`` on the CPU runs its cell as about a dozen ATen ops per time step and autograd
records every one of them, so a backward pass walks some twelve graph nodes per step. At the
hidden sizes of most stability-gap studies (16-64 units) that bookkeeping, not arithmetic, is the
training step (``benchmarks/gru_bptt.py`` measures where). Here the forward pass is five ops per
step writing into preallocated buffers, and the backward pass two ops per step: one GEMM carries
the hidden-state gradient back, one broadcast multiply turns it into every gate's gradient. All
weight gradients are then one GEMM each over all time steps at once.

The equations are ``nn.GRU``'s (gate order ``[r | z | n]``, its parameter names and shapes are
used as they are, so checkpoints, SHARP's masks and ``functional_call`` see no difference)::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

The tests hold outputs and every gradient to ``nn.GRU`` in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _GRUSequence(torch.autograd.Function):
    """``(x, W_ih, W_hh, b_ih, b_hh) -> outputs (B, T, H)`` from a zero initial state."""

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        hidden = w_hh.shape[1]
        x_steps = x.transpose(0, 1)  # time-major buffers: every per-step slice is contiguous
        # gates[t] starts as [W_i{r,z} x_t + b_i{r,z} + b_h{r,z} | b_hn]; one GEMM per step adds
        # W_hh h, then the r|z half becomes the gate values in place and the last third keeps
        # W_hn h + b_hn, which n (forward) and the backward pass need.
        rz_input = torch.matmul(x_steps, w_ih[: 2 * hidden].t()).add_(b_ih[: 2 * hidden] + b_hh[: 2 * hidden])
        gates = torch.cat([rz_input, b_hh[2 * hidden :].expand(steps, batch, hidden)], dim=2)
        n_input = torch.matmul(x_steps, w_ih[2 * hidden :].t()).add_(b_ih[2 * hidden :])
        states = x.new_empty(steps + 1, batch, hidden)  # states[t + 1] = h_t; states[0] = 0
        states[0].zero_()
        candidates = torch.empty_like(n_input)

        w_hh_t = w_hh.t()
        h, g = states.unbind(0), gates.unbind(0)
        rz, r, z = gates[..., : 2 * hidden].unbind(0), gates[..., :hidden].unbind(0), gates[..., hidden : 2 * hidden].unbind(0)
        hn, n, n_in = gates[..., 2 * hidden :].unbind(0), candidates.unbind(0), n_input.unbind(0)
        addmm, addcmul, lerp = torch.addmm, torch.addcmul, torch.lerp
        for t in range(steps):
            addmm(g[t], h[t], w_hh_t, out=g[t])
            rz[t].sigmoid_()
            addcmul(n_in[t], r[t], hn[t], out=n[t]).tanh_()
            lerp(n[t], h[t], z[t], out=h[t + 1])

        ctx.save_for_backward(x, w_ih, w_hh, states, gates, candidates)
        return states[1:].transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        """Backpropagation through time with the per-step work cut to two ops.

        With ``dh`` the gradient reaching ``h_t``, every pre-activation gradient of step ``t`` is
        ``dh`` times a coefficient that depends on the forward values only::

            d(n pre-activation)  = dh * (1 - z) * (1 - n^2)            =: dh * c_n
            d(z pre-activation)  = dh * (h_{t-1} - n) * z * (1 - z)
            d(r pre-activation)  = dh * c_n * (W_hn h + b_hn) * r * (1 - r)
            d(W_hn h + b_hn)     = dh * c_n * r
            d(h_{t-1}), direct   = dh * z

        so the coefficients are computed for all steps at once before the loop, and the loop
        only multiplies ``dh`` into them and carries ``[dr | dz | dhn | dh z] @ [W_hh; I]`` back.
        """
        x, w_ih, w_hh, states, gates, candidates = ctx.saved_tensors
        steps, batch, hidden = candidates.shape
        r, z, hn = gates[..., :hidden], gates[..., hidden : 2 * hidden], gates[..., 2 * hidden :]
        previous = states[:-1]
        c_n = (1 - candidates * candidates).mul_(1 - z)
        coefficients = x.new_empty(steps, batch, 4, hidden)
        torch.mul(c_n, hn, out=coefficients[:, :, 0]).mul_(r).mul_(1 - r)
        torch.sub(previous, candidates, out=coefficients[:, :, 1]).mul_(z).mul_(1 - z)
        torch.mul(c_n, r, out=coefficients[:, :, 2])
        coefficients[:, :, 3] = z
        carry = torch.cat([w_hh, torch.eye(hidden, dtype=w_hh.dtype, device=w_hh.device)])  # (4H, H)

        grads = x.new_empty(steps, batch, 4, hidden)  # [dr | dz | dhn | dh z] per step
        dh_all = x.new_empty(steps, batch, 1, hidden)
        grad_steps = grad_output.transpose(0, 1).unbind(0)
        g, g_flat = grads.unbind(0), grads.view(steps, batch, 4 * hidden).unbind(0)
        c, dh, dh_flat = coefficients.unbind(0), dh_all.unbind(0), dh_all.view(steps, batch, hidden).unbind(0)
        addmm, mul = torch.addmm, torch.mul
        dh_flat[-1].copy_(grad_steps[-1])
        mul(c[-1], dh[-1], out=g[-1])
        for t in range(steps - 2, -1, -1):
            addmm(grad_steps[t], g_flat[t + 1], carry, out=dh_flat[t])
            mul(c[t], dh[t], out=g[t])

        d_hidden = grads[:, :, :3].reshape(steps * batch, 3 * hidden)
        d_input = torch.cat([grads[:, :, :2].reshape(steps, batch, 2 * hidden),
                             dh_all.view(steps, batch, hidden) * c_n], dim=2).reshape(steps * batch, 3 * hidden)
        needs = ctx.needs_input_grad
        dx = (d_input @ w_ih).view(steps, batch, -1).transpose(0, 1) if needs[0] else None
        d_w_ih = d_input.t() @ x.transpose(0, 1).reshape(steps * batch, -1) if needs[1] else None
        d_w_hh = d_hidden.t() @ previous.reshape(steps * batch, hidden) if needs[2] else None
        d_b_ih = d_input.sum(0) if needs[3] else None
        d_b_hh = d_hidden.sum(0) if needs[4] else None
        return dx, d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_sequence(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """Output sequence ``(B, T, H)`` of one GRU layer on batch-first input ``(B, T, F)``, from a
    zero initial state, with ``nn.GRU``'s parameters (``weight_ih_l0`` etc.).

    The result is a batch-first view of a time-major buffer: a next GRU layer reads it without a
    copy, and pooling the last step is a view too.
    """
    if x.dim() != 3:
        raise ValueError(f"gru_sequence expects a batch-first (B, T, F) input, got shape {tuple(x.shape)}")
    return _GRUSequence.apply(x, w_ih, w_hh, b_ih, b_hh)


__all__ = ["gru_sequence"]
