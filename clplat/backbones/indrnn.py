"""IndRNN backbone (Li et al. 2018, "Independently Recurrent Neural Network", arXiv:1803.04831).

    h_t = act(W x_t + u * h_{t-1} + b)        (u: one recurrent weight per unit -- diagonal)

Units interact only through the next layer, so the recurrence is elementwise in ``H`` but
*nonlinear* (ReLU in the paper): not a scan. Two exact ways to run it:

- ``"sequential"``: the step loop (``W x + b`` for all steps in one GEMM first). ``T`` dependent
  steps of two elementwise ops each; autograd through the loop.
- ``"parallel"``: :func:`clplat.kernels.newton_scan` on the whole-sequence system. The Jacobian
  ``act'(pre_t) u`` is diagonal, so each Newton step is one linear scan, and the backward pass one
  reverse scan (implicit differentiation, not through the iterations). For ReLU the cell is
  piecewise linear: once the guess has the right sign pattern, the linearised system *is* the
  system, so the next step lands on the exact solution (up to rounding) -- Newton is exact here,
  not an approximation, and stops as soon as the activation pattern stops changing.

Which is faster depends on the machine: the loop costs ``T`` tiny ops, Newton a few full-size
passes per iteration. On the 2-core CPU the loop won at every length (``docs/performance.md``), so
it is the default. The number of Newton iterations is the length of the longest chain of
activation-pattern changes, which grows with ``T``: 12 at T = 64-1024 for a fresh layer, but it
hit the default cap of 64 at T = 4096 -- a solve that stops at the cap is not exact, and the
layer warns.

Layers are pre-norm residual blocks around the cell by default (``residual``; Li et al. 2018 also
propose a residual IndRNN for deep stacks, with batch norm; here LayerNorm, see
:class:`clplat.backbones.recurrent_layer.ResidualBlock`), since units interact only through the
next layer.

Recurrent-weight constraint (the paper keeps ``|u| <= bound``, e.g. ``2^(1/T)`` for long memory, by
clipping after each update): ``recurrent_bound`` clamps ``u`` in the forward pass. The clamp's
gradient is masked like a projected gradient -- a weight beyond the bound receives gradient only
when the update would move it back inside -- so it behaves like clipping after every step instead
of freezing at the boundary, without needing a hook into the optimizer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from clplat.backbones.recurrent_layer import RecurrentLayer, ScanBackbone, warn_if_not_converged
from clplat.errors import check_choice, check_float, check_int
from clplat.kernels import NewtonInfo, newton_scan

__all__ = ["ACTIVATIONS", "IndRNNBackbone", "IndRNNLayer", "bounded"]

ACTIVATIONS = ("relu", "tanh")


class _Bounded(torch.autograd.Function):
    """``w.clamp(-bound, bound)`` whose gradient only lets out-of-bounds weights move back in."""

    @staticmethod
    def forward(ctx: FunctionCtx, w: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(w)
        ctx.bound = bound
        return w.clamp(-bound, bound)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (w,) = ctx.saved_tensors
        bound = ctx.bound
        # Gradient descent moves w by -grad: above the bound only grad > 0 moves it back, and vice versa.
        keep = (w.abs() <= bound) | ((w > bound) & (grad > 0)) | ((w < -bound) & (grad < 0))
        return grad * keep, None


def bounded(w: Tensor, bound: float | None) -> Tensor:
    """``w`` clamped to ``[-bound, bound]`` (projected-gradient semantics); ``w`` itself if no bound."""
    return w if bound is None else _Bounded.apply(w, bound)


class IndRNNLayer(RecurrentLayer):
    """One IndRNN layer ``(B, T, F_in) -> (B, T, H)``, zero initial state."""

    def __init__(self, input_size: int, hidden_size: int, mode: str = "sequential", activation: str = "relu",
                 recurrent_bound: float | None = 1.0, newton_max_iters: int | None = None):
        super().__init__(mode)
        self.hidden_size, self.activation, self.recurrent_bound = hidden_size, activation, recurrent_bound
        self.newton_max_iters = newton_max_iters
        self.proj = nn.Linear(input_size, hidden_size)
        # The paper's initialisation for ReLU IndRNNs: u ~ U(0, 1) (all units start as leaky memories).
        self.u = nn.Parameter(torch.rand(hidden_size))
        self.last_newton_info: NewtonInfo | None = None

    def recurrent_weight(self) -> Tensor:
        return bounded(self.u, self.recurrent_bound)

    def _act(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) if self.activation == "relu" else torch.tanh(pre)

    def forward_parallel(self, x: Tensor) -> Tensor:
        a = self.proj(x)
        u = self.recurrent_weight()

        def cell(h: Tensor, a_t: Tensor) -> Tensor:
            return self._act(torch.addcmul(a_t, u, h))

        def jacobian(h: Tensor, a_t: Tensor) -> Tensor:
            pre = torch.addcmul(a_t, u, h)
            slope = (pre > 0).to(pre.dtype) if self.activation == "relu" else 1 - torch.tanh(pre) ** 2
            return slope * u

        h0 = a.new_zeros(a.shape[0], self.hidden_size)
        h, info = newton_scan(cell, a, h0, jac_diag=jacobian, max_iters=self.newton_max_iters,
                              return_info=True)  # type: ignore[misc]
        self.last_newton_info = info
        warn_if_not_converged(self, info)
        return h

    def forward_sequential(self, x: Tensor) -> Tensor:
        a = self.proj(x)  # one GEMM for every step's input term
        u = self.recurrent_weight()
        h = a.new_zeros(a.shape[0], self.hidden_size)
        outputs = []
        for a_t in a.unbind(1):
            h = self._act(torch.addcmul(a_t, u, h))
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def init_state(self, x_t: Tensor) -> Tensor:
        return x_t.new_zeros(x_t.shape[0], self.hidden_size)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        h = self._act(torch.addcmul(self.proj(x_t), self.recurrent_weight(), state))
        return h, h


class IndRNNBackbone(ScanBackbone):
    """Stacked IndRNN layers (diagonal nonlinear recurrence)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, pooling: str = "last",
                 dropout: float = 0.0, mode: str = "sequential", activation: str = "relu",
                 recurrent_bound: float | None = 1.0, residual: bool = True, newton_max_iters: int | None = None):
        """``recurrent_bound``: keep ``|u| <= bound`` (``None``: unconstrained); ``newton_max_iters``:
        parallel mode's iteration cap (``None``: the solver's ``min(T, 64)``); see the module docs."""
        check_choice(".activation", activation, ACTIVATIONS)
        check_float(".recurrent_bound", recurrent_bound, 0.0, allow_none=True)
        check_int(".newton_max_iters", newton_max_iters, 1, allow_none=True)
        super().__init__(lambda f: IndRNNLayer(f, hidden_size, mode, activation, recurrent_bound, newton_max_iters),
                         input_size, hidden_size, num_layers, pooling, dropout, residual)
