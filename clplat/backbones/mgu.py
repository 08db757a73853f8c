"""MGU backbone: the Minimal Gated Unit (Zhou et al. 2016, arXiv:1603.09420).

A GRU with a single (forget) gate:

    f_t  = sigmoid(W_f x_t + U_f h_{t-1} + b_f)
    h~_t = tanh(W_h x_t + U_h (f_t * h_{t-1}) + b_h)
    h_t  = (1 - f_t) * h_{t-1} + f_t * h~_t

``U_f`` and ``U_h`` are full ``H x H`` matrices, so the Jacobian in ``h_{t-1}`` is dense: no linear
scan and no diagonal Newton step applies (a dense Newton step would cost ``H^3`` per step). The
step loop is the only exact path, so this is the one backbone without a parallel mode. The loop
is kept lean: the input terms ``W x + b`` of all steps are one GEMM before the loop, and each step
is two ``addmm`` plus a few elementwise ops, with autograd through the loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clplat.backbones.recurrent_layer import RecurrentLayer, ScanBackbone

__all__ = ["MGUBackbone", "MGULayer"]


class MGULayer(RecurrentLayer):
    """One MGU layer ``(B, T, F_in) -> (B, T, H)``, zero initial state; sequential only."""

    modes = ("sequential",)

    def __init__(self, input_size: int, hidden_size: int, mode: str = "sequential"):
        super().__init__(mode)
        H = hidden_size
        self.hidden_size = H
        self.proj = nn.Linear(input_size, 2 * H)  # input terms of [f | h~], with biases
        self.U_f = nn.Parameter(torch.empty(H, H))
        self.U_h = nn.Parameter(torch.empty(H, H))
        bound = 1 / math.sqrt(H)  # nn.GRU's initialisation, for every weight
        for w in (self.proj.weight, self.proj.bias, self.U_f, self.U_h):
            nn.init.uniform_(w, -bound, bound)

    def _recur(self, a_t: Tensor, h: Tensor) -> Tensor:
        """One step from the precomputed input terms ``a_t`` ``(B, 2H)``."""
        a_f, a_h = a_t.chunk(2, dim=-1)
        f = torch.sigmoid(torch.addmm(a_f, h, self.U_f.t()))
        cand = torch.tanh(torch.addmm(a_h, f * h, self.U_h.t()))
        return h + f * (cand - h)

    def forward_sequential(self, x: Tensor) -> Tensor:
        a = self.proj(x)
        h = a.new_zeros(a.shape[0], self.hidden_size)
        outputs = []
        for a_t in a.unbind(1):
            h = self._recur(a_t, h)
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def init_state(self, x_t: Tensor) -> Tensor:
        return x_t.new_zeros(x_t.shape[0], self.hidden_size)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        h = self._recur(self.proj(x_t), state)
        return h, h


class MGUBackbone(ScanBackbone):
    """Stacked minimal gated units (sequential in time, like ``nn.GRU`` but without a fused kernel)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, pooling: str = "last",
                 dropout: float = 0.0, mode: str = "sequential"):
        super().__init__(lambda f: MGULayer(f, hidden_size, mode), input_size, hidden_size, num_layers,
                         pooling, dropout)
