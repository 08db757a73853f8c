"""Scan-based and modern recurrent backbones: modes agree, per-layer interface, functional calls.

Every parallel backbone is checked against its own step-by-step recurrence (outputs and all
gradients, fp64 tight and fp32 at 1e-4), re-entry above every layer must reproduce the forward
pass, and ``torch.func.functional_call`` must see the parameters it is given. Shapes are tiny:
the whole file runs in a few seconds on two cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from clplat.backbones import (
    IndRNNBackbone,
    LRUBackbone,
    MambaBackbone,
    MGUBackbone,
    MinGRUBackbone,
    MinLSTMBackbone,
    ParaGRUBackbone,
    RecurrentLayer,
)
from clplat.backbones.indrnn import bounded
from clplat.errors import ConfigError

F_IN, H, B, T = 3, 6, 2, 9

# name -> factory(**overrides); tiny widths, two layers so that re-entry crosses a layer boundary.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mingru": lambda **kw: MinGRUBackbone(F_IN, H, num_layers=2, **kw),
    "mingru_cell": lambda **kw: MinGRUBackbone(F_IN, H, num_layers=2, residual=False, **kw),
    "mingru_log": lambda **kw: MinGRUBackbone(F_IN, H, num_layers=2, scan_method="log", **kw),
    "mingru_heinsen": lambda **kw: MinGRUBackbone(F_IN, H, num_layers=2, scan_method="heinsen", **kw),
    "minlstm": lambda **kw: MinLSTMBackbone(F_IN, H, num_layers=2, **kw),
    "minlstm_log": lambda **kw: MinLSTMBackbone(F_IN, H, num_layers=2, scan_method="log", **kw),
    "lru": lambda **kw: LRUBackbone(F_IN, H, num_layers=2, **kw),
    "lru_positive": lambda **kw: LRUBackbone(F_IN, H, num_layers=2, eigenvalues="positive", **kw),
    "lru_negative": lambda **kw: LRUBackbone(F_IN, H, num_layers=2, eigenvalues="negative", r_min=0.5, **kw),
    "mamba": lambda **kw: MambaBackbone(F_IN, H, num_layers=2, d_state=4, d_conv=3, **kw),
    "mamba_ref": lambda **kw: MambaBackbone(F_IN, H, num_layers=2, d_state=4, scan_backend="reference", **kw),
    "para_gru": lambda **kw: ParaGRUBackbone(F_IN, H, num_layers=2, **kw),
    "para_gru_cell": lambda **kw: ParaGRUBackbone(F_IN, H, num_layers=2, residual=False, **kw),
    "indrnn": lambda **kw: IndRNNBackbone(F_IN, H, num_layers=2, **kw),
    "indrnn_cell": lambda **kw: IndRNNBackbone(F_IN, H, num_layers=2, residual=False, **kw),
    "indrnn_tanh": lambda **kw: IndRNNBackbone(F_IN, H, num_layers=2, activation="tanh", **kw),
    "mgu": lambda **kw: MGUBackbone(F_IN, H, num_layers=2, **kw),
}
PARALLEL = [name for name in BUILDERS if name != "mgu"]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _build(name: str, dtype: torch.dtype = torch.float32, **kw) -> nn.Module:
    return BUILDERS[name](**kw).to(dtype)


def _outputs_and_grads(net: nn.Module, x: Tensor, mode: str) -> tuple[list[Tensor], list[Tensor]]:
    """Every layer's output in ``mode``, and the gradients of a fixed loss w.r.t. input and parameters."""
    net.set_mode(mode)
    x = x.detach().requires_grad_()
    outs = net.forward_layers(x)
    weights = torch.linspace(-1, 1, outs[-1].numel(), dtype=x.dtype).view_as(outs[-1])
    loss = (outs[-1] * weights).sum() + net.pool(outs[-1]).square().sum()
    grads = torch.autograd.grad(loss, [x, *net.parameters()])
    return [o.detach() for o in outs], list(grads)


@pytest.mark.parametrize("name", PARALLEL)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_parallel_mode_matches_step_by_step_recurrence(name, dtype, tol):
    net = _build(name, dtype)
    x = torch.randn(B, T, F_IN, dtype=dtype)
    par_out, par_grads = _outputs_and_grads(net, x, "parallel")
    seq_out, seq_grads = _outputs_and_grads(net, x, "sequential")
    for p, s in zip(par_out, seq_out):
        torch.testing.assert_close(p, s, atol=tol, rtol=tol)
    names = ["input", *(n for n, _ in net.named_parameters())]
    assert len(par_grads) == len(names)
    for label, p, s in zip(names, par_grads, seq_grads):
        scale = max(1.0, s.abs().max().item())
        torch.testing.assert_close(p, s, atol=tol * scale, rtol=tol, msg=lambda m, label=label: f"d{label}: {m}")


@pytest.mark.parametrize("name", PARALLEL + ["mgu"])
def test_generic_step_loop_matches_forward(name):
    """``step`` carried over time reproduces each layer's own forward (the streaming contract)."""
    net = _build(name, torch.float64).eval()
    x = torch.randn(B, T, F_IN, dtype=torch.float64)
    h = x
    for layer in net.layers:
        assert isinstance(layer, RecurrentLayer)
        expected = layer(h)
        torch.testing.assert_close(RecurrentLayer.forward_sequential(layer, h), expected, atol=1e-10, rtol=1e-10)
        h = expected


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_reentry_above_every_layer_reproduces_the_output(name, pooling):
    net = _build(name, pooling=pooling).eval()
    x = torch.randn(B, T, F_IN)
    layers = net.forward_layers(x)
    assert [tuple(h.shape) for h in layers] == [(B, T, H)] * 2
    out = net(x)
    assert out.shape == (B, net.out_dim) == (B, H)
    for k, h in enumerate(layers):
        torch.testing.assert_close(net.forward_from(k, h), out)
    expected = layers[-1][:, -1] if pooling == "last" else layers[-1].mean(1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_functional_call_uses_the_given_parameters(name):
    net = _build(name).eval()
    x = torch.randn(B, T, F_IN)
    params = dict(net.named_parameters())
    out = net(x)
    torch.testing.assert_close(torch.func.functional_call(net, params, (x,)), out)
    perturbed = {k: v + 0.1 * torch.randn_like(v) for k, v in params.items()}
    changed = torch.func.functional_call(net, perturbed, (x,))
    assert (changed - out).abs().max() > 1e-4
    # the module's own parameters are untouched, and gradients flow to the functional ones
    torch.testing.assert_close(net(x), out)
    leaves = {k: v.detach().requires_grad_() for k, v in perturbed.items()}
    torch.func.functional_call(net, leaves, (x,)).sum().backward()
    assert all(v.grad is not None for v in leaves.values())


def test_para_gru_reports_newton_iterations_and_converges():
    net = ParaGRUBackbone(F_IN, H, num_layers=2)
    assert net.newton_iterations() == [None, None]
    net(torch.randn(B, 40, F_IN))
    iters = net.newton_iterations()
    assert all(isinstance(i, int) and 1 <= i < 40 for i in iters), iters
    assert all(cell.last_newton_info.converged for cell in net.cells())


def test_lru_eigenvalue_parametrisations():
    for eig in ("complex", "positive", "negative"):
        net = LRUBackbone(F_IN, 64, eigenvalues=eig, r_min=0.4, r_max=0.9)
        lam = net.layers[0].eigenvalue().detach()
        assert lam.is_complex() == (eig == "complex")
        assert (lam.abs() < 1).all()
        # ring initialisation, and |lambda| <= 1 for any parameter value (< 1 in exact arithmetic;
        # "negative" reaches -1 in floating point for large nu_log, the parity regime Grazzi et al. want)
        assert (lam.abs() >= 0.4 - 1e-4).all() and (lam.abs() <= 0.9 + 1e-4).all(), eig
        with torch.no_grad():
            net.layers[0].nu_log.uniform_(-8, 8)
        magnitude = net.layers[0].eigenvalue().abs()
        assert (magnitude <= 1).all()
        if eig != "negative":
            assert (magnitude[net.layers[0].nu_log > -8] < 1).all()
    negative = LRUBackbone(F_IN, 64, eigenvalues="negative", r_min=0.4, r_max=0.9).layers[0].eigenvalue()
    assert (negative < 0).any() and (negative > 0).any()
    assert (LRUBackbone(F_IN, 64, eigenvalues="positive").layers[0].eigenvalue() > 0).all()
    # default state size: H/2 complex states (H real numbers) or H real ones
    assert LRUBackbone(F_IN, 64).layers[0].state_size == 32
    assert LRUBackbone(F_IN, 64, eigenvalues="negative").layers[0].state_size == 64


def test_indrnn_recurrent_bound_clamps_and_lets_weights_back_in():
    w = torch.tensor([-3.0, -0.5, 0.5, 3.0, 3.0], requires_grad=True)
    out = bounded(w, 1.0)
    torch.testing.assert_close(out, torch.tensor([-1.0, -0.5, 0.5, 1.0, 1.0]))
    # descent direction: -grad. w=3 with grad +1 moves back in (kept); grad -1 would push out (dropped)
    (out * torch.tensor([-1.0, 2.0, 2.0, 1.0, -1.0])).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([-1.0, 2.0, 2.0, 1.0, 0.0]))
    cell = IndRNNBackbone(F_IN, H, recurrent_bound=0.5).cells()[0]
    with torch.no_grad():
        cell.u.fill_(5.0)
    assert cell.recurrent_weight().max().item() == 0.5
    unbounded = IndRNNBackbone(F_IN, H, recurrent_bound=None).cells()[0]
    assert unbounded.recurrent_weight() is unbounded.u


def test_indrnn_newton_is_exact_for_relu():
    net = IndRNNBackbone(F_IN, H, mode="parallel").double()
    x = torch.randn(B, 60, F_IN, dtype=torch.float64)
    par = net(x)
    assert all(cell.last_newton_info.converged for cell in net.cells())
    torch.testing.assert_close(par, net.set_mode("sequential")(x), atol=1e-12, rtol=0)


def test_modes_are_switchable_and_validated():
    net = MinGRUBackbone(F_IN, H)
    assert net.mode == "parallel" and net.set_mode("sequential").mode == "sequential"
    with pytest.raises(ConfigError, match="^mode"):
        net.set_mode("fast")
    with pytest.raises(ConfigError, match="^mode"):
        MGUBackbone(F_IN, H, mode="parallel")  # no parallel form for dense recurrences


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: MinGRUBackbone(F_IN, hidden_size=0), "hidden_size"),
        (lambda: MinLSTMBackbone(F_IN, scan_method="fft"), "scan_method"),
        (lambda: LRUBackbone(F_IN, eigenvalues="imaginary"), "eigenvalues"),
        (lambda: LRUBackbone(F_IN, r_max=1.0), "r_max"),
        (lambda: LRUBackbone(F_IN, r_min=0.9, r_max=0.5), "r_min"),
        (lambda: LRUBackbone(F_IN, state_size=0), "state_size"),
        (lambda: LRUBackbone(F_IN, max_phase=0.0), "max_phase"),
        (lambda: MambaBackbone(F_IN, d_state=0), "d_state"),
        (lambda: MambaBackbone(F_IN, expand=1.5), "expand"),
        (lambda: MambaBackbone(F_IN, scan_backend="cuda"), "scan_backend"),
        (lambda: ParaGRUBackbone(F_IN, newton_max_iters=0), "newton_max_iters"),
        (lambda: IndRNNBackbone(F_IN, activation="sigmoid"), "activation"),
        (lambda: IndRNNBackbone(F_IN, recurrent_bound=-1.0), "recurrent_bound"),
        (lambda: IndRNNBackbone(F_IN, num_layers=0), "num_layers"),
        (lambda: MGUBackbone(F_IN, pooling="max"), "pooling"),
    ],
)
def test_bad_arguments_name_the_config_key(build, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build()


def test_mamba_step_size_initialisation_is_log_uniform():
    """``softplus(dt_proj.bias)`` lies in mamba's [dt_min, dt_max] = [1e-3, 0.1]."""
    dt = torch.nn.functional.softplus(MambaBackbone(F_IN, 64).layers[0].dt_proj.bias.detach())
    assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 0.1 + 1e-7
    assert math.log(dt.max() / dt.min()) > 2  # spread over decades, not a constant


@pytest.mark.parametrize("cls", [IndRNNBackbone, ParaGRUBackbone])
def test_newton_solve_stopped_at_its_cap_warns(cls):
    net = cls(F_IN, H, mode="parallel", newton_max_iters=1)
    with pytest.warns(RuntimeWarning, match="newton_max_iters"):
        net(torch.randn(B, 30, F_IN))
