"""minLSTM backbone (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201).

minLSTM keeps a forget and an input gate, both functions of ``x_t`` only, normalised so that the
state stays a convex-like mix (time-independent scale):

    f_t = sigmoid(Lin_f x_t), i_t = sigmoid(Lin_i x_t), f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t)
    h_t = f'_t h_{t-1} + i'_t g(h~_t),   h~_t = Lin_h x_t

-- a linear scan with ``a_t = f'_t`` and ``b_t = i'_t g(h~_t)``. As for minGRU, ``g`` is the
paper's positive activation of the log-space version, used by both modes. Parallel mode,
``scan_method`` (see :mod:`clplat.backbones.mingru`): ``"log"`` builds the log coefficients with
``clplat.kernels.minlstm_log_coeffs`` (stable ``softplus`` forms, no division) for
:func:`clplat.kernels.log_linear_scan`; ``"heinsen"`` uses its chunked log-space scan; ``"linear"``
(default, cheapest on CPU) computes ``f'``, ``i'`` directly and calls
:func:`clplat.kernels.linear_scan` -- the same coefficients, since ``"log"`` exponentiates them
before scanning anyway. Sequential mode is the loop above. The block around the cell (pre-norm
residual by default) is minGRU's, for the same reason.
"""

from __future__ import annotations

import torch
from torch import Tensor

from clplat.backbones.mingru import MinRNNLayer, g_activation
from clplat.backbones.recurrent_layer import ScanBackbone
from clplat.kernels import linear_scan, minlstm_log_coeffs

__all__ = ["MinLSTMBackbone", "MinLSTMLayer"]


class MinLSTMLayer(MinRNNLayer):
    """One minLSTM cell ``(B, T, F_in) -> (B, T, H)``, zero initial state."""

    gates = 3  # [forget logits | input logits | candidate]

    def scan(self, pre: Tensor) -> Tensor:
        k_f, k_i, cand = pre.chunk(3, dim=-1)
        if self.scan_method == "linear":
            f = torch.sigmoid(k_f)
            a = f / (f + torch.sigmoid(k_i))  # f'; then i' = 1 - f'
            return linear_scan(a, (1 - a) * g_activation(cand))  # type: ignore[return-value]
        return self.log_scan(*minlstm_log_coeffs(k_f, k_i, cand))

    def update(self, pre_t: Tensor, h: Tensor) -> Tensor:
        k_f, k_i, cand = pre_t.chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        total = f + i
        return (f / total) * h + (i / total) * g_activation(cand)


class MinLSTMBackbone(ScanBackbone):
    """Stacked minLSTM blocks; ``mode="sequential"`` runs the step loop (for checking/streaming)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, pooling: str = "last",
                 dropout: float = 0.0, mode: str = "parallel", scan_method: str = "linear", residual: bool = True):
        super().__init__(lambda f: MinLSTMLayer(f, hidden_size, mode, scan_method),
                         input_size, hidden_size, num_layers, pooling, dropout, residual)
