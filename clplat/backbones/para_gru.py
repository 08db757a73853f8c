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

On CPU the parallel mode's cost is memory traffic, not arithmetic: :class:`_FusedDiagGRU` computes
the cell, its Jacobian and its VJP by hand in cache-sized blocks, into buffers reused across Newton
iterations, and :class:`_NewtonDiagGRU` differentiates the solution without autograd.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from clplat.backbones.recurrent_layer import (
    RecurrentLayer,
    ScanBackbone,
    warn_if_not_converged,
)
from clplat.errors import check_float, check_int
from clplat.kernels import NewtonInfo, diag_gru_cell
from clplat.kernels.newton import implicit_adjoint, newton_solve, solver_settings

__all__ = ["ParaGRUBackbone", "ParaGRULayer"]


# Elements per block of the fused elementwise passes: their ~6-10 working arrays (~1.5-2.5 MB)
# stay in a CPU core's L2 cache through a block's ~25 passes instead of streaming from memory.
_BLOCK_ELEMENTS = 65536


class _FusedDiagGRU:
    """The diagonal GRU's elementwise work for one forward call: cell, Jacobian and VJP, in blocks.

    ``cell(h, xp)`` and ``jacobian(h, xp)`` serve :func:`clplat.kernels.newton.newton_solve`. The
    solver calls ``cell`` then ``jacobian`` with the same tensors at every iteration; both come out
    of one gate evaluation (cached by tensor identity, so any other call order simply recomputes),
    which saves a third of each iteration's work. ``vjp`` is :class:`_NewtonDiagGRU`'s backward.

    Two CPU costs decide the speed here, not the arithmetic. (1) A fresh full-size tensor
    (16 MB at (32, 1024, 128)) is a new memory mapping that page-faults on first touch, costing
    several times an in-place pass: so ``f`` and ``J`` are written into two full-size buffers
    reused from one Newton iteration to the next (the solver is done with them before it asks for
    the next ones), and nothing else full-size is allocated. (2) A pass over a full-size tensor
    streams it from memory: so every formula runs over blocks of ``_BLOCK_ELEMENTS`` in small
    scratch arrays that stay in cache, 2.3x faster than full-size passes at (32, 1024, 128) on this
    machine's EPYC cores (single-threaded, 72 ms -> 32 ms per cell-and-Jacobian evaluation).

    Gate inputs ``xp`` are ``(B, T, 3, H)`` views of the input projection as it comes out of the
    ``Linear`` (gates interleaved per step): in cache-sized blocks the strided gate slices cost the
    same as contiguous ones, and no gate-major copy (and no copy of its gradient) is needed.
    """

    def __init__(self, u: Tensor):
        self.u = u
        self._key: tuple[Tensor, Tensor] | None = None
        self._jac: Tensor | None = None
        self._outputs: tuple[Tensor, Tensor] | None = None
        self._scratch: list[Tensor] = []

    def cell(self, h: Tensor, xp: Tensor) -> Tensor:
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

    def vjp(self, h: Tensor, xp: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
        """Cotangent ``lam`` pulled back through the cell at ``(h, xp)``: gradients for ``xp`` and ``u``.

        ``(s = r (1 - r) h)``: ``df/dx_z = z (1 - z) (c - h)``, ``df/dx_c = z (1 - c^2)``,
        ``df/dx_r = df/dx_c u_c s``; ``df/du_z = df/dx_z h``, ``df/du_r = df/dx_r h``,
        ``df/du_c = df/dx_c r h``. The ``u`` gradients accumulate per block row and are summed once.
        """
        D = h.shape[-1]
        grad_xp = torch.empty((*h.shape[:-1], 3, D), dtype=h.dtype, device=h.device)
        acc = [torch.zeros(min(self._rows(D), h.numel() // D), D, dtype=h.dtype, device=h.device)
               for _ in range(3)]
        u_c = self.u[2]
        for n, (h_b, xp_b, lam_b, g_b), (z, r, rh, c) in self._blocks(h, xp, lam, grad_xp):
            self._gates(h_b, xp_b, z, r, rh, c)
            g_z, g_r, g_c = g_b.unbind(1)
            torch.sub(c, h_b, out=g_z).mul_(z).mul_(lam_b)
            g_z.addcmul_(g_z, z, value=-1)  # lam z (1 - z) (c - h)
            torch.mul(c, c, out=g_c).neg_().add_(1).mul_(z).mul_(lam_b)  # lam z (1 - c^2)
            torch.addcmul(rh, rh, r, value=-1, out=g_r).mul_(g_c).mul_(u_c)  # lam z (1 - c^2) u_c s
            acc[0][:n].addcmul_(g_z, h_b)
            acc[1][:n].addcmul_(g_r, h_b)
            acc[2][:n].addcmul_(g_c, rh)
        return grad_xp, torch.stack([a.sum(0) for a in acc])

    @staticmethod
    def _rows(D: int) -> int:
        return max(1, _BLOCK_ELEMENTS // D)

    def _blocks(self, h: Tensor, xp: Tensor, *full: Tensor):
        """Yield ``(rows, (h, xp, *full) row blocks, scratch)`` over the flattened ``(B*T)`` rows.

        ``full`` are further ``(B, T, ...)`` tensors (inputs or outputs) split the same way.
        """
        D = h.shape[-1]
        rows = self._rows(D)
        if not self._scratch or self._scratch[0].shape[0] != rows or self._scratch[0].dtype != h.dtype:
            self._scratch = [h.new_empty(rows, D) for _ in range(4)]
        flat = [h.reshape(-1, D), xp.reshape(-1, 3, D), *(t.reshape(-1, *t.shape[2:]) for t in full)]
        total = flat[0].shape[0]
        for start in range(0, total, rows):
            n = min(rows, total - start)
            yield n, [t[start:start + n] for t in flat], [buf[:n] for buf in self._scratch]

    def _gates(self, h: Tensor, xp: Tensor, z: Tensor, r: Tensor, rh: Tensor, c: Tensor) -> None:
        """``z``, ``r``, ``r h`` and ``c`` of one block, in place.

        ``tanh(x)`` is taken as ``2 sigmoid(2x) - 1``: ATen's CPU tanh is ~5x slower per element
        than its sigmoid.
        """
        u_z, u_r, u_c = self.u
        torch.addcmul(xp[:, 0], u_z, h, out=z).sigmoid_()
        torch.addcmul(xp[:, 1], u_r, h, out=r).sigmoid_()
        torch.mul(r, h, out=rh)
        torch.addcmul(xp[:, 2], u_c, rh, out=c).mul_(2).sigmoid_().mul_(2).sub_(1)

    def _cell_and_jacobian(self, h: Tensor, xp: Tensor) -> tuple[Tensor, Tensor]:
        """Cell and Jacobian of every step, block by block into the two reused output buffers.

        Same formulas as :func:`clplat.kernels.diag_gru_cell` / ``diag_gru_jacobian``, factored as
        ``f = h + z (c - h)`` and ``J = (1 - z)(1 + z u_z (c - h)) + z u_c (1 - c^2) d(rh)/dh`` with
        ``d(rh)/dh = r + u_r r h (1 - r)``.
        """
        if self._outputs is None or self._outputs[0].shape != h.shape or self._outputs[0].dtype != h.dtype:
            self._outputs = (torch.empty_like(h, memory_format=torch.contiguous_format),
                             torch.empty_like(h, memory_format=torch.contiguous_format))
        u_z, u_r, u_c = self.u
        for _, (h_b, xp_b, out, jac), (z, r, t, c) in self._blocks(h, xp, *self._outputs):
            self._gates(h_b, xp_b, z, r, t, c)
            torch.sub(c, h_b, out=out)  # c - h for now
            t.mul_(u_r).addcmul_(t, r, value=-1).add_(r)  # u_r r h (1 - r) + r = d(rh)/dh
            torch.mul(z, u_z, out=jac).mul_(out).add_(1)  # 1 + z u_z (c - h)
            out.mul_(z).add_(h_b)  # f = h + z (c - h)
            c.mul_(c).neg_().add_(1).mul_(u_c).mul_(t).mul_(z)  # z u_c (1 - c^2) d(rh)/dh
            jac.mul_(z.neg_().add_(1)).add_(c)
        return self._outputs


class _NewtonDiagGRU(torch.autograd.Function):
    """States of the diagonal GRU from zero initial state: Newton forward, implicit backward.

    Forward: :func:`clplat.kernels.newton.newton_solve` with the fused cell-and-Jacobian (and its
    early stop for smooth cells); the output is the solver's solution itself. Backward: the
    Jacobian at the solution, the adjoint ``lam`` (one reverse scan,
    :func:`clplat.kernels.newton.implicit_adjoint`) and the cell's VJP written out by hand
    (:meth:`_FusedDiagGRU.vjp`). This is what :func:`clplat.kernels.newton_scan` computes for any
    cell with autograd (one differentiable cell evaluation pulled back with ``lam``), without that
    evaluation's ~15 fresh full-size tensors and their backward's ~20 more. Saved for backward: the
    solution only.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, xp: Tensor, u: Tensor, max_iters: int, tol: float, backend: str,
                info_out: list[NewtonInfo]) -> Tensor:
        fused = _FusedDiagGRU(u.detach())
        h0 = xp.new_zeros(xp.shape[0], xp.shape[-1])
        H, _, info = newton_solve(fused.cell, fused.jacobian, xp.detach(), h0, None, max_iters, tol, backend,
                                  smooth=True)
        info_out.append(info)
        ctx.save_for_backward(xp, u, H)
        ctx.backend = backend
        return H

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor):
        xp, u, H = ctx.saved_tensors
        h = torch.empty_like(H)  # h_prev: the solution shifted by one step, zeros first
        h[:, 0].zero_()
        h[:, 1:] = H[:, :-1]
        fused = _FusedDiagGRU(u)
        _, jac = fused.cell(h, xp), fused.jacobian(h, xp)  # exact at the solution (the solver may stop early)
        lam = implicit_adjoint(jac, g, ctx.backend)
        grad_xp, grad_u = fused.vjp(h, xp, lam)
        return grad_xp, grad_u, None, None, None, None


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

    def forward_parallel(self, x: Tensor) -> Tensor:
        xp = self.proj(x).unflatten(-1, (3, self.hidden_size))
        max_iters, tol = solver_settings(x.shape[1], xp.dtype, self.newton_max_iters, self.newton_tol)
        infos: list[NewtonInfo] = []
        h = _NewtonDiagGRU.apply(xp, self.u, max_iters, tol, "auto", infos)
        self.last_newton_info = infos[0]
        warn_if_not_converged(self, infos[0])
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
        check_int(".newton_max_iters", newton_max_iters, 1, allow_none=True)
        check_float(".newton_tol", newton_tol, 0.0, allow_none=True)
        super().__init__(lambda f: ParaGRULayer(f, hidden_size, mode, newton_max_iters, newton_tol),
                         input_size, hidden_size, num_layers, pooling, dropout, residual)

    def newton_iterations(self) -> list[int | None]:
        """Newton iterations each layer used in its last parallel forward (``None`` if never run)."""
        return [cell.last_newton_info.iterations if cell.last_newton_info else None  # type: ignore[union-attr]
                for cell in self.cells()]
