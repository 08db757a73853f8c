"""Mamba backbone: Mamba-1 blocks (Gu & Dao 2023, arXiv:2312.00752) on the selective scan kernel.

One layer is a pre-norm residual block around the Mamba-1 mixer, as in ``mamba_ssm``'s
``Block(Mamba)`` (RMSNorm, then the mixer, then the residual add):

    u = encoder(x)                          (Linear to H for layer 0 when F_in != H, else identity)
    x', z = in_proj(RMSNorm(u))             (two halves of width Di = expand * H)
    x' = SiLU(causal depthwise conv1d(x'))  (kernel d_conv, left-padded)
    dt_r, B, C = x_proj(x')                 (dt_rank = ceil(H / 16), N = d_state each for B and C)
    delta = softplus(W_dt dt_r + b_dt)      (dt_proj; bias initialised to softplus^-1(dt), dt log-uniform)
    y = selective_scan(x', delta, A = -exp(A_log), B, C, D, z)   (A_log = log(1..N): the S4D-real init)
    out = u + out_proj(y)

The parallel mode calls :func:`clplat.kernels.selective_scan` (bias and softplus of ``delta``
fused there, ``y *= silu(z)`` and the ``D`` skip too). When that is the CPU kernel (``cpp``), the
whole mixer between ``in_proj`` and ``out_proj`` -- convolution + SiLU in ``(B, T, Di)`` layout,
``x_proj``, the low-rank ``dt_proj`` and the scan -- runs as one autograd node
(:func:`clplat.kernels.selective_cpu.mamba_inner_cpu`), the same function with fewer large
temporaries. The sequential mode is Mamba's recurrent ``step``: a rolling ``d_conv`` window for the
convolution and a ``(B, Di, N)`` SSM state.
No final norm: every layer's output is a residual stream that the next layer (or the head) reads.

Cost: ``scan_backend="auto"`` runs the fused C++ selective scan on CPU (compiled at first use;
it keeps the state in cache and never writes ``(B, T, expand * H, d_state)``) and the fused Triton
kernel on a GPU. Without a C++ compiler the CPU falls back to the PyTorch backends, 10-40x slower
(see ``docs/performance.md``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clplat.backbones.recurrent_layer import RecurrentLayer, ScanBackbone, input_encoder
from clplat.errors import check_choice, check_int
from clplat.kernels import SELECTIVE_BACKENDS, resolve_selective_backend, selective_scan
from clplat.kernels.selective_cpu import mamba_inner_cpu

__all__ = ["MambaBackbone", "MambaLayer"]

# mamba_ssm's defaults for the step size initialisation.
_DT_MIN, _DT_MAX, _DT_FLOOR = 1e-3, 1e-1, 1e-4


class MambaLayer(RecurrentLayer):
    """One Mamba-1 residual block ``(B, T, F_in) -> (B, T, H)``."""

    def __init__(self, input_size: int, hidden_size: int, mode: str = "parallel", d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, scan_backend: str = "auto"):
        super().__init__(mode)
        H = hidden_size
        self.scan_backend = scan_backend
        self.d_inner, self.d_state, self.d_conv = expand * H, d_state, d_conv
        self.dt_rank = math.ceil(H / 16)
        Di, N, R = self.d_inner, d_state, self.dt_rank
        self.encoder = input_encoder(input_size, H)
        self.norm = nn.RMSNorm(H)
        self.in_proj = nn.Linear(H, 2 * Di, bias=False)
        self.conv = nn.Conv1d(Di, Di, d_conv, groups=Di, padding=d_conv - 1)
        self.x_proj = nn.Linear(Di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, Di)
        self.out_proj = nn.Linear(Di, H, bias=False)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
            dt = torch.exp(torch.rand(Di) * (math.log(_DT_MAX) - math.log(_DT_MIN)) + math.log(_DT_MIN))
            dt = dt.clamp_min(_DT_FLOOR)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(Di, 1))
        self.D = nn.Parameter(torch.ones(Di))

    def _project(self, xc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x_proj`` split into the low-rank step-size input (already through ``W_dt``), ``B``, ``C``."""
        dt_r, B, C = self.x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt_r, self.dt_proj.weight), B, C

    def forward_parallel(self, x: Tensor) -> Tensor:
        u = self.encoder(x)
        xz = self.in_proj(self.norm(u))
        Bsz, T = xz.shape[:2]
        backend = resolve_selective_backend(self.scan_backend, xz.device, Bsz, T, self.d_inner, self.d_state)
        A = -torch.exp(self.A_log)
        if backend == "cpp" and xz.dtype in (torch.float32, torch.float64) and A.dtype == xz.dtype:
            # the same function as below, as one node of compiled code (see mamba_inner_cpu)
            y = mamba_inner_cpu(xz, self.conv.weight, self.conv.bias, self.x_proj.weight, self.dt_proj.weight,
                                self.dt_proj.bias, A, self.D)
            return u + self.out_proj(y)
        xs, z = xz.chunk(2, dim=-1)
        xc = F.silu(self.conv(xs.transpose(1, 2))[..., :T].transpose(1, 2))
        dt_r, B, C = self.x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        y = selective_scan(xc, dt_r, A, B, C, self.D, z, delta_bias=self.dt_proj.bias,
                           delta_softplus=True, backend=backend, delta_proj_weight=self.dt_proj.weight)
        return u + self.out_proj(y)  # type: ignore[arg-type]

    def init_state(self, x_t: Tensor) -> tuple[Tensor, Tensor]:
        Bsz = x_t.shape[0]
        window = x_t.new_zeros(Bsz, self.d_inner, self.d_conv)
        ssm = x_t.new_zeros(Bsz, self.d_inner, self.d_state)
        return window, ssm

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        window, ssm = state
        u = self.encoder(x_t)
        xs, z = self.in_proj(self.norm(u)).chunk(2, dim=-1)
        window = torch.cat([window[:, :, 1:], xs[:, :, None]], dim=-1)  # last d_conv inputs, oldest first
        xc = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias)
        delta, B, C = self._project(xc)
        delta = F.softplus(delta + self.dt_proj.bias)
        A = -torch.exp(self.A_log)
        ssm = torch.exp(delta[..., None] * A) * ssm + (delta * xc)[..., None] * B[:, None, :]
        y = torch.einsum("bdn,bn->bd", ssm, C) + self.D * xc
        y = y * F.silu(z)
        return u + self.out_proj(y), (window, ssm)


class MambaBackbone(ScanBackbone):
    """Stacked Mamba-1 blocks (selective state spaces)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, pooling: str = "last",
                 dropout: float = 0.0, mode: str = "parallel", d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 scan_backend: str = "auto"):
        """``scan_backend``: :func:`clplat.kernels.selective_scan`'s ``backend`` (``auto``, ``cpp``,
        ``triton``, ``torch``, ``reference``); ``auto`` picks the fastest one available for the
        device and shape (:func:`clplat.kernels.resolve_selective_backend`)."""
        check_int(".d_state", d_state, 1)
        check_int(".d_conv", d_conv, 1)
        check_int(".expand", expand, 1)
        check_choice(".scan_backend", scan_backend, SELECTIVE_BACKENDS)
        super().__init__(lambda f: MambaLayer(f, hidden_size, mode, d_state, d_conv, expand, scan_backend),
                         input_size, hidden_size, num_layers, pooling, dropout)
