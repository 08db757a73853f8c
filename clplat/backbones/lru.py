"""LRU backbone: the Linear Recurrent Unit (Orvieto et al. 2023, arXiv:2303.06349).

One layer is the paper's residual block, pre-norm:

    u = encoder(x)                              (Linear to H for layer 0 when F_in != H, else identity)
    v = LayerNorm(u)
    s_t = lambda * s_{t-1} + gamma * (B v_t)     (diagonal, N states)
    y_t = Re(C s_t) + D * v_t
    out = u + GLU(GELU(y))                      (GLU(y) = W1 y * sigmoid(W2 y))

The state recurrence has a *constant* gate, so it is one :func:`clplat.kernels.linear_scan` with
``a = lambda`` broadcast over ``(B, T)`` (a stride-0 view, not a copy) and ``b = gamma * B v``.

Eigenvalue parametrisations (``eigenvalues``), all with ``|lambda| < 1`` by construction and
``gamma`` initialised to ``sqrt(1 - |lambda|^2)`` (trained as ``gamma_log``):

- ``"complex"`` (the paper's): ``lambda = exp(-exp(nu_log) + i exp(theta_log))``; ``B``, ``C`` complex
  (stored as real and imaginary parts), the scan runs in complex64/128. Ring initialisation:
  ``|lambda| = sqrt(U (r_max^2 - r_min^2) + r_min^2)`` (uniform on the ring's area), i.e.
  ``nu_log = log(-log|lambda|)``, and phase ``theta ~ U[0, max_phase]``.
- ``"positive"``: real ``lambda = exp(-exp(nu_log))`` in ``(0, 1)``, same ring init for ``|lambda|``;
  ``B``, ``C`` real, a real scan (the paper's real-diagonal ablation).
- ``"negative"``: real ``lambda = 2 exp(-exp(nu_log)) - 1`` in ``(-1, 1)`` -- Grazzi et al. 2024
  ("Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues", arXiv:2411.12537) map
  a ``[0, 1]`` gate ``g`` to ``2 g - 1``. Initialised with ``|lambda|`` from the ring and a random sign
  (half the states oscillate), i.e. ``nu_log = log(-log((lambda + 1) / 2))``. Needs ``r_max < 1``.
  The open interval is exact arithmetic: for ``nu_log`` above ~3, ``2 exp(-exp(nu_log))`` drops
  below fp32 resolution and ``lambda`` rounds to exactly ``-1`` -- the sign-flipping regime the
  paper needs for parity, still bounded (``|lambda| <= 1``).

State size: ``N = H / 2`` complex states by default (``H`` real numbers, as many as a GRU of
width ``H`` carries), ``N = H`` in the real modes. Complex ``B v`` and ``Re(C s)`` are one real GEMM
each, on interleaved weights viewed as complex -- no copies of the ``(B, T, N)`` tensors.

Defaults ``r_min = 0.5``, ``r_max = 0.99``, ``max_phase = pi``: the ports' ``r_min = 0`` puts most
states at time constants of a few steps, and with last-step pooling on MNIST-1D (length 40) that
cost ~12 points of test accuracy after 10 epochs (69% vs 81%); the paper moves the ring towards 1
and shrinks the phase range for long-range tasks in the same way.

Sequential mode steps the same recurrence one input at a time (``step``), for checking/streaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clplat.backbones.recurrent_layer import RecurrentLayer, ScanBackbone, input_encoder
from clplat.errors import ConfigError, check_choice, check_float, check_int
from clplat.kernels import linear_scan

__all__ = ["EIGENVALUES", "LRUBackbone", "LRULayer"]

EIGENVALUES = ("complex", "positive", "negative")


def _ring_magnitudes(n: int, r_min: float, r_max: float) -> Tensor:
    """``|lambda|`` uniform on the area of the ring ``r_min <= |lambda| <= r_max`` (the paper's init)."""
    u = torch.rand(n)
    return torch.sqrt(u * (r_max**2 - r_min**2) + r_min**2)


class LRULayer(RecurrentLayer):
    """One LRU residual block ``(B, T, F_in) -> (B, T, H)`` with ``N = state_size`` states."""

    def __init__(self, input_size: int, hidden_size: int, state_size: int, mode: str = "parallel",
                 eigenvalues: str = "complex", r_min: float = 0.5, r_max: float = 0.99,
                 max_phase: float = math.pi):
        super().__init__(mode)
        H, N = hidden_size, state_size
        self.hidden_size, self.state_size, self.eigenvalues = H, N, eigenvalues
        self.encoder = input_encoder(input_size, H)
        self.norm = nn.LayerNorm(H)
        magnitude = _ring_magnitudes(N, r_min, r_max).clamp_min(1e-4)  # log(-log 0) is undefined
        if eigenvalues == "negative":
            lam = magnitude * torch.where(torch.rand(N) < 0.5, -1.0, 1.0)
            self.nu_log = nn.Parameter(torch.log(-torch.log((lam + 1) / 2)))
        else:
            lam = magnitude
            self.nu_log = nn.Parameter(torch.log(-torch.log(magnitude)))
        self.gamma_log = nn.Parameter(0.5 * torch.log1p(-lam**2))
        self.B_re = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        if eigenvalues == "complex":
            self.theta_log = nn.Parameter(torch.log(max_phase * torch.rand(N).clamp_min(1e-4)))
            self.B_im = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
            self.C_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        else:
            # Real modes: B gets the variance of a complex entry's squared modulus, 1/H (each complex
            # part has 1/(2H)), so the state is driven as strongly as in the complex mode.
            with torch.no_grad():
                self.B_re.mul_(math.sqrt(2))
        self.D = nn.Parameter(torch.randn(H))
        self.glu = nn.Linear(H, 2 * H)

    def eigenvalue(self) -> Tensor:
        """``lambda`` ``(N,)``: complex for ``"complex"``, real otherwise (see the module docs)."""
        rho = torch.exp(-torch.exp(self.nu_log))
        if self.eigenvalues == "complex":
            return torch.polar(rho, torch.exp(self.theta_log))
        return 2 * rho - 1 if self.eigenvalues == "negative" else rho

    def _drive(self, v: Tensor) -> Tensor:
        """``gamma * B v`` for ``v`` ``(..., H)`` -> ``(..., N)`` (complex in the complex mode).

        ``gamma`` is folded into ``B``'s rows (an ``N x H`` op, not a full-size pass), and complex
        ``B v`` is one real GEMM: the rows of ``[B_re; B_im]`` are interleaved (``re_0, im_0,
        re_1, ...``) so that the ``(..., 2N)`` result *is* the complex tensor's memory, viewed
        without a copy (``view_as_complex``).
        """
        gamma = torch.exp(self.gamma_log)[:, None]
        if self.eigenvalues != "complex":
            return F.linear(v, self.B_re * gamma)
        weight = (torch.stack([self.B_re, self.B_im], dim=1) * gamma[:, None]).flatten(0, 1)  # (2N, H)
        bv = F.linear(v, weight).unflatten(-1, (self.state_size, 2))
        return torch.view_as_complex(bv)

    def _readout(self, s: Tensor, v: Tensor, u: Tensor) -> Tensor:
        """``u + GLU(GELU(Re(C s) + D v))``; the per-step part shared by both modes.

        ``Re(C s) = C_re s_re - C_im s_im`` is one real GEMM on ``view_as_real(s)`` (no copy).
        """
        if self.eigenvalues == "complex":
            weight = torch.stack([self.C_re, -self.C_im], dim=-1).flatten(-2)  # (H, 2N)
            y = F.linear(torch.view_as_real(s).flatten(-2), weight)
        else:
            y = F.linear(s, self.C_re)
        y = F.gelu(torch.addcmul(y, self.D, v))
        gate_in, gate = self.glu(y).chunk(2, dim=-1)
        return torch.addcmul(u, gate_in, torch.sigmoid(gate))

    def forward_parallel(self, x: Tensor) -> Tensor:
        u = self.encoder(x)
        v = self.norm(u)
        b = self._drive(v)
        a = self.eigenvalue().to(b.dtype).expand_as(b)
        s = linear_scan(a, b)
        return self._readout(s, v, u)  # type: ignore[arg-type]

    def init_state(self, x_t: Tensor) -> Tensor:
        dtype = x_t.dtype
        if self.eigenvalues == "complex":
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return x_t.new_zeros(x_t.shape[0], self.state_size, dtype=dtype)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        u = self.encoder(x_t)
        v = self.norm(u)
        s = self.eigenvalue() * state + self._drive(v)
        return self._readout(s, v, u), s


class LRUBackbone(ScanBackbone):
    """Stacked LRU blocks (complex or real-eigenvalue diagonal linear recurrences)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, pooling: str = "last",
                 dropout: float = 0.0, mode: str = "parallel", state_size: int | None = None,
                 eigenvalues: str = "complex", r_min: float = 0.5, r_max: float = 0.99,
                 max_phase: float = math.pi):
        """``state_size`` ``N``: default ``hidden_size // 2`` complex states (``hidden_size`` real numbers,
        like a GRU of the same width) or ``hidden_size`` real ones; see the module docs for the rest."""
        check_choice(".eigenvalues", eigenvalues, EIGENVALUES)
        check_int(".state_size", state_size, 1, allow_none=True)
        check_float(".r_max", r_max, 0.0, 1.0)
        check_float(".r_min", r_min, 0.0, 1.0)
        check_float(".max_phase", max_phase, 0.0)
        if max_phase <= 0:
            raise ConfigError(".max_phase", max_phase, "must be a number > 0")
        if r_min > r_max:
            raise ConfigError(".r_min", r_min, f"must be <= backbone.r_max={r_max}")
        if r_max >= 1.0:
            raise ConfigError(".r_max", r_max, "must be < 1 (|lambda| = 1 never decays)")
        if state_size is None:  # as many real state variables as a GRU of this width
            state_size = max(1, hidden_size // 2) if eigenvalues == "complex" else hidden_size
        N = state_size
        super().__init__(
            lambda f: LRULayer(f, hidden_size, N, mode, eigenvalues, r_min, r_max, max_phase),
            input_size, hidden_size, num_layers, pooling, dropout,
        )
