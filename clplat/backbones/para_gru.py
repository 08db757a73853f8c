"""ParaGRU backbone: a GRU with diagonal recurrence, trained time-parallel by Newton's method.

The cell is ParaRNN's (Danieli et al. 2025, arXiv:2510.21450) simplification of the GRU: the
recurrent matrices are *diagonal* (one weight per unit and gate, ``u`` ``(3, H)``),

    z_t = sigmoid(Wz x_t + uz h_{t-1}),  r_t = sigmoid(Wr x_t + ur h_{t-1})
    c_t = tanh(Wc x_t + uc (r_t h_{t-1})),  h_t = (1 - z_t) h_{t-1} + z_t c_t

(:func:`clplat.kernels.diag_gru_cell`). It is still *nonlinear* in ``h``, so it is no scan; but its
Jacobian in ``h_{t-1}`` is diagonal, so every Newton step on the whole-sequence system is one
linear scan (:func:`clplat.kernels.newton_scan`), and the backward pass is one reverse scan (implicit
differentiation at the solution). Parallel mode therefore costs ``iterations x (cell + scan)``
instead of ``T`` dependent steps; sequential mode is the plain step loop, for checking and
streaming. Each layer records the solver's :class:`clplat.kernels.NewtonInfo` of its last parallel
call in ``last_newton_info`` (iterations, convergence) so benchmarks can report it.

Layers are pre-norm residual blocks around the cell by default (``residual``; see
:class:`clplat.backbones.recurrent_layer.ResidualBlock`): with one recurrent weight per unit, units
interact only through the next layer, which is how ParaRNN uses the cell too (inside residual
blocks with normalisation).

The cell and its analytic Jacobian share their gate activations: :class:`_CellWithJacobian`
computes both in one pass when the solver asks for ``f`` and then ``J`` at the same point.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clplat.backbones.recurrent_layer import RecurrentLayer, ScanBackbone, warn_if_not_converged
from clplat.errors import check_float, check_int
from clplat.kernels import NewtonInfo, diag_gru_cell, newton_scan

__all__ = ["ParaGRUBackbone", "ParaGRULayer"]


class _CellWithJacobian:
    """``cell(h, xp)`` and ``jacobian(h, xp)`` for :func:`newton_scan`, sharing one gate evaluation.

    The solver calls ``cell`` then ``jacobian`` with the same tensors at every iteration; caching
    the Jacobian computed alongside the cell (keyed by tensor identity, so any other call order
    simply recomputes) saves a third of each iteration's elementwise work. Outside ``no_grad``
    (the final differentiable evaluation) only the plain cell runs.

    One instance serves one forward call. Its scratch buffers are reused from one Newton iteration
    to the next (the solver is done with an iteration's ``f`` and ``J`` before it asks for the
    next ones): a fresh full-size CPU allocation costs several times an in-place pass, because the
    allocator hands large blocks back to the OS and every reuse page-faults.
    """

    def __init__(self, u: Tensor):
        self.u = u
        self._key: tuple[Tensor, Tensor] | None = None
        self._jac: Tensor | None = None
        self._buffers: list[Tensor] = []

    def cell(self, h: Tensor, xp: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return self._differentiable_cell(h, xp)
        out, self._jac = self._cell_and_jacobian(h, xp)
        self._key = (h, xp)
        return out

    def jacobian(self, h: Tensor, xp: Tensor) -> Tensor:
        if self._key is not None and self._key[0] is h and self._key[1] is xp and self._jac is not None:
            jac = self._jac
        else:
            jac = self._cell_and_jacobian(h, xp)[1]
        self._key, self._jac = None, None
        return jac

    def _differentiable_cell(self, h: Tensor, xp: Tensor) -> Tensor:
        """:func:`clplat.kernels.diag_gru_cell`, reading the gates with one ``unbind``.

        The kernel's version indexes ``xp[..., g, :]`` three times; each index's backward fills a
        full ``(B, T, 3, H)`` zero tensor, which on CPU cost more than the rest of the final
        evaluation. ``unbind``'s backward writes the three gradients into one tensor instead.
        """
        u = self.u
        x_z, x_r, x_c = xp.unbind(-2)
        z = torch.sigmoid(x_z + u[0] * h)
        r = torch.sigmoid(x_r + u[1] * h)
        c = torch.tanh(x_c + u[2] * (r * h))
        return (1 - z) * h + z * c

    def _scratch(self, like: Tensor) -> list[Tensor]:
        if not self._buffers or self._buffers[0].shape != like.shape or self._buffers[0].dtype != like.dtype:
            self._buffers = [torch.empty_like(like, memory_format=torch.contiguous_format) for _ in range(6)]
        return self._buffers

    def _cell_and_jacobian(self, h: Tensor, xp: Tensor) -> tuple[Tensor, Tensor]:
        """Cell and Jacobian without autograd, in place in the scratch buffers (~28 passes, no allocation).

        Same formulas as :func:`clplat.kernels.diag_gru_cell` / ``diag_gru_jacobian``, factored as
        ``f = h + z (c - h)`` and ``J = (1 - z)(1 + z u_z (c - h)) + z u_c (1 - c^2) d(rh)/dh`` with
        ``d(rh)/dh = r + u_r r h (1 - r)``. ``tanh(x)`` is taken as ``2 sigmoid(2x) - 1``: ATen's CPU
        tanh is ~5x slower per element than its sigmoid.
        """
        u_z, u_r, u_c = self.u
        z, r, t, c, out, jac = self._scratch(h)
        torch.addcmul(xp[..., 0, :], u_z, h, out=z).sigmoid_()
        torch.addcmul(xp[..., 1, :], u_r, h, out=r).sigmoid_()
        torch.mul(r, h, out=t)
        torch.addcmul(xp[..., 2, :], u_c, t, out=c).mul_(2).sigmoid_().mul_(2).sub_(1)
        torch.sub(c, h, out=out)  # c - h for now
        t.mul_(u_r).addcmul_(t, r, value=-1).add_(r)  # u_r r h (1 - r) + r = d(rh)/dh
        torch.mul(z, u_z, out=jac).mul_(out).add_(1)  # 1 + z u_z (c - h)
        torch.addcmul(h, z, out, out=out)  # f = h + z (c - h)
        c.mul_(c).neg_().add_(1).mul_(u_c).mul_(t).mul_(z)  # z u_c (1 - c^2) d(rh)/dh
        jac.mul_(z.neg_().add_(1)).add_(c)
        return out, jac


class ParaGRULayer(RecurrentLayer):
    """One diagonal-recurrence GRU layer ``(B, T, F_in) -> (B, T, H)``, zero initial state."""

    def __init__(self, input_size: int, hidden_size: int, mode: str = "parallel",
                 newton_max_iters: int | None = None, newton_tol: float | None = None):
        super().__init__(mode)
        self.hidden_size = hidden_size
        self.newton_max_iters, self.newton_tol = newton_max_iters, newton_tol
        self.proj = nn.Linear(input_size, 3 * hidden_size)  # input parts of [z | r | candidate], with biases
        bound = 1 / math.sqrt(hidden_size)
        nn.init.uniform_(self.proj.weight, -bound, bound)
        nn.init.uniform_(self.proj.bias, -bound, bound)
        # Diagonal recurrent weights: one scalar per unit can carry more than nn.GRU's 1/sqrt(H) entries.
        self.u = nn.Parameter(torch.empty(3, hidden_size).uniform_(-1.0, 1.0))
        self.last_newton_info: NewtonInfo | None = None

    def _inputs(self, x: Tensor) -> Tensor:
        """Input projections ``(..., 3, H)`` for ``diag_gru_cell``, stored gate-major.

        The values are ``proj(x)`` viewed as ``(..., 3, H)``; the memory is laid out as
        ``(3, ..., H)`` so that each gate's slice ``xp[..., g, :]`` is contiguous. The Newton solver
        reads these slices every iteration, and strided elementwise ops are ~3x slower on CPU.
        """
        xp = self.proj(x).unflatten(-1, (3, self.hidden_size))
        return xp.movedim(-2, 0).contiguous().movedim(0, -2)

    def forward_parallel(self, x: Tensor) -> Tensor:
        xp = self._inputs(x)
        h0 = xp.new_zeros(x.shape[0], self.hidden_size)
        fn = _CellWithJacobian(self.u)
        h, info = newton_scan(fn.cell, xp, h0, jac_diag=fn.jacobian, max_iters=self.newton_max_iters,
                              tol=self.newton_tol, return_info=True)  # type: ignore[misc]
        self.last_newton_info = info
        warn_if_not_converged(self, info)
        return h

    def forward_sequential(self, x: Tensor) -> Tensor:
        """The step loop, with the input projections of all steps done by one GEMM first."""
        xp = self.proj(x).unflatten(-1, (3, self.hidden_size))
        h = xp.new_zeros(x.shape[0], self.hidden_size)
        outputs = []
        for xp_t in xp.unbind(1):
            h = diag_gru_cell(h, xp_t, self.u)
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def init_state(self, x_t: Tensor) -> Tensor:
        return x_t.new_zeros(x_t.shape[0], self.hidden_size)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        h = diag_gru_cell(state, self.proj(x_t).unflatten(-1, (3, self.hidden_size)), self.u)
        return h, h


class ParaGRUBackbone(ScanBackbone):
    """Stacked diagonal GRUs solved by Newton iterations of parallel scans (ParaRNN-style)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, pooling: str = "last",
                 dropout: float = 0.0, mode: str = "parallel", newton_max_iters: int | None = None,
                 newton_tol: float | None = None, residual: bool = True):
        """``newton_max_iters``/``newton_tol``: solver cap and tolerance (``None``: the solver's defaults)."""
        check_int("backbone.newton_max_iters", newton_max_iters, 1, allow_none=True)
        check_float("backbone.newton_tol", newton_tol, 0.0, allow_none=True)
        super().__init__(lambda f: ParaGRULayer(f, hidden_size, mode, newton_max_iters, newton_tol),
                         input_size, hidden_size, num_layers, pooling, dropout, residual)

    def newton_iterations(self) -> list[int | None]:
        """Newton iterations each layer used in its last parallel forward (``None`` if never run)."""
        return [cell.last_newton_info.iterations if cell.last_newton_info else None  # type: ignore[union-attr]
                for cell in self.cells()]
