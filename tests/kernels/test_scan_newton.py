"""newton_scan (ParaRNN-style) on a diagonal GRU against the sequential recurrence."""

from __future__ import annotations

import pytest
import torch

from clplat.kernels import diag_gru_cell, diag_gru_jacobian, newton_scan
from clplat.kernels.reference import sequential_rnn_ref


def _gru_problem(B=2, T=200, D=8, F=5, dtype=torch.float64):
    W = (torch.randn(F, 3 * D, dtype=dtype) / F**0.5).requires_grad_()
    u = torch.randn(3, D, dtype=dtype).requires_grad_()
    x = torch.randn(B, T, F, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, D, dtype=dtype, requires_grad=True)
    return W, u, x, h0


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("analytic", [False, True], ids=["jvp", "analytic-jacobian"])
def test_newton_gru_matches_sequential(dtype, tol, analytic):
    W, u, x, h0 = _gru_problem(dtype=dtype)
    B, T, D = x.shape[0], x.shape[1], h0.shape[1]

    def cell(h, xp):
        return diag_gru_cell(h, xp, u)

    jac = (lambda h, xp: diag_gru_jacobian(h, xp, u)) if analytic else None
    # Inputs are projected inside each branch so the two graphs are independent.
    h, info = newton_scan(cell, (x @ W).view(B, T, 3, D), h0, jac_diag=jac, return_info=True)
    ref = sequential_rnn_ref(cell, (x @ W).view(B, T, 3, D), h0)
    assert info.converged and info.iterations < 20, info
    torch.testing.assert_close(h, ref, atol=tol, rtol=0)
    g = torch.randn_like(ref)
    got = torch.autograd.grad((h * g).sum(), (W, u, x, h0))
    want = torch.autograd.grad((ref * g).sum(), (W, u, x, h0))
    for name, a, b in zip(("W", "u", "x", "h0"), got, want):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, atol=tol * scale, rtol=0, msg=lambda m, name=name: f"d{name}: {m}")


def test_jacobian_helper_matches_jvp():
    _, u, _, _ = _gru_problem()
    h = torch.randn(2, 10, 8, dtype=torch.float64)
    xp = torch.randn(2, 10, 3, 8, dtype=torch.float64)
    _, jvp = torch.func.jvp(lambda s: diag_gru_cell(s, xp, u.detach()), (h,), (torch.ones_like(h),))
    torch.testing.assert_close(diag_gru_jacobian(h, xp, u.detach()), jvp)


def test_newton_iteration_cap_and_single_step():
    W, u, x, h0 = (t.detach() for t in _gru_problem(T=50))
    xp = (x @ W).view(2, 50, 3, 8)

    def cell(h, xp_):
        return diag_gru_cell(h, xp_, u)

    _, info = newton_scan(cell, xp, h0, max_iters=1, return_info=True)
    assert info.iterations == 1 and not info.converged
    h, info = newton_scan(cell, xp[:, :1], h0, return_info=True)
    torch.testing.assert_close(h[:, 0], cell(h0, xp[:, 0]))
    assert info.iterations <= 2


def test_smooth_early_stop_saves_the_confirming_iteration():
    """``smooth=True`` stops once the quadratic rate predicts a step below tol: same solution, fewer steps."""
    from clplat.kernels.newton import newton_solve

    W, u, x, h0 = (t.detach() for t in _gru_problem(T=300, dtype=torch.float32))
    xp = (x @ W).view(2, 300, 3, 8)

    def cell(h, xp_):
        return diag_gru_cell(h, xp_, u)

    def jac(h, xp_):
        return diag_gru_jacobian(h, xp_, u)

    plain_h, _, plain = newton_solve(cell, jac, xp, h0, None, 64, 1e-6, "torch")
    early_h, _, early = newton_solve(cell, jac, xp, h0, None, 64, 1e-6, "torch", smooth=True)
    assert plain.converged and early.converged
    assert early.iterations == plain.iterations - 1
    ref = sequential_rnn_ref(cell, xp, h0)
    torch.testing.assert_close(early_h, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain_h, ref, atol=1e-5, rtol=0)
