"""minGRU backbone (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201).

minGRU drops the GRU's dependence of the gates on ``h_{t-1}``:

    z_t = sigmoid(Lin_z x_t),  h~_t = Lin_h x_t,  h_t = (1 - z_t) h_{t-1} + z_t g(h~_t)

so the recurrence is a first-order *linear* scan with ``a_t = 1 - z_t``, ``b_t = z_t g(h~_t)``,
computable for all ``t`` at once. ``g(x) = x + 0.5 (x >= 0), sigmoid(x) (x < 0)`` is the paper's
positive activation of its log-space version; both modes use it, so they compute the same function.

Parallel mode, ``scan_method``:

- ``"log"``: the paper's training path -- log coefficients (``clplat.kernels.mingru_log_coeffs``,
  which never leaves log space) into :func:`clplat.kernels.log_linear_scan`, whose default method
  exponentiates once and scans in linear space (the most accurate choice at long T, see its docs).
- ``"heinsen"``: the same log coefficients into the chunked log-space (Heinsen) scan.
- ``"linear"`` (default): the *same* coefficients computed directly in linear space,
  ``a = sigmoid(-k)`` (``= exp(-softplus(k))``) and ``b = sigmoid(k) g(h~)``, into
  :func:`clplat.kernels.linear_scan`. Since ``"log"`` exponentiates before scanning anyway, the
  two agree to rounding; this one skips three ``softplus``/``log`` passes, which on CPU cost more
  than the scan itself (ATen's softplus is ~10x slower than sigmoid per element).

Sequential mode is the loop above. Gate and candidate projections are one GEMM over the whole
sequence: the scan itself is cheap.

Layer structure (``residual``, default on): the gates of a min-RNN see only ``x_t``, so a plain
stack of cells mixes time only through gated averages of per-step functions of its input; with
one input feature (MNIST-1D) a two-cell stack stalled near 60-70% test accuracy where ``nn.GRU``
reaches ~95%, and the pre-norm residual block (:class:`clplat.backbones.recurrent_layer.ResidualBlock`,
``out = u + minGRU(LayerNorm(u))``) reached 83-87% in the same budget. ``residual=False`` gives
the bare cell stack.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clplat.backbones.recurrent_layer import RecurrentLayer, ScanBackbone
from clplat.backbones.units import UnitMap, linear_units
from clplat.errors import check_choice
from clplat.kernels import linear_scan, log_linear_scan, mingru_log_coeffs

__all__ = ["MinGRUBackbone", "MinGRULayer", "MinRNNLayer", "SCAN_METHODS", "g_activation"]

SCAN_METHODS = ("linear", "log", "heinsen")


def g_activation(x: Tensor) -> Tensor:
    """minGRU's positive candidate activation (keeps ``h`` positive, so its log exists)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


class MinRNNLayer(RecurrentLayer):
    """Shared cell of minGRU/minLSTM: one projection to ``gates * H`` channels, then scan or step.

    Subclasses define the recurrence on the projected pre-activations ``pre`` (``(..., gates*H)``):
    :meth:`scan` for a whole sequence and :meth:`update` for one step.
    """

    gates = 0

    def __init__(self, input_size: int, hidden_size: int, mode: str = "parallel", scan_method: str = "linear"):
        super().__init__(mode)
        check_choice(".scan_method", scan_method, SCAN_METHODS)
        self.hidden_size, self.scan_method = hidden_size, scan_method
        self.proj = nn.Linear(input_size, self.gates * hidden_size)

    def scan(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, pre_t: Tensor, h: Tensor) -> Tensor:
        raise NotImplementedError

    def log_scan(self, log_a: Tensor, log_b: Tensor) -> Tensor:
        """The ``"log"``/``"heinsen"`` paths of :func:`clplat.kernels.log_linear_scan`."""
        method = "linear" if self.scan_method == "log" else "heinsen"
        return log_linear_scan(log_a, log_b, method=method)  # type: ignore[return-value]

    def forward_parallel(self, x: Tensor) -> Tensor:
        return self.scan(self.proj(x))

    def unit_map(self, prefix: str, layer: int, source: int | None) -> UnitMap:
        """One projection of ``gates`` blocks of ``H`` rows from ``source``'s units (clplat.backbones.units)."""
        return linear_units(f"{prefix}.proj", self.proj, self.gates, layer, source)

    def init_state(self, x_t: Tensor) -> Tensor:
        return x_t.new_zeros(x_t.shape[0], self.hidden_size)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        h = self.update(self.proj(x_t), state)
        return h, h


class MinGRULayer(MinRNNLayer):
    """One minGRU cell ``(B, T, F_in) -> (B, T, H)``, zero initial state."""

    gates = 2  # [gate logits k | candidate h~]

    def scan(self, pre: Tensor) -> Tensor:
        k, cand = pre.chunk(2, dim=-1)
        if self.scan_method == "linear":
            a = torch.sigmoid(-k)  # 1 - z
            return linear_scan(a, (1 - a) * g_activation(cand))  # type: ignore[return-value]
        return self.log_scan(*mingru_log_coeffs(k, cand))

    def update(self, pre_t: Tensor, h: Tensor) -> Tensor:
        k, cand = pre_t.chunk(2, dim=-1)
        z = torch.sigmoid(k)
        return (1 - z) * h + z * g_activation(cand)


class MinGRUBackbone(ScanBackbone):
    """Stacked minGRU blocks; ``mode="sequential"`` runs the step loop (for checking/streaming)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, pooling: str = "last",
                 dropout: float = 0.0, mode: str = "parallel", scan_method: str = "linear", residual: bool = True):
        super().__init__(lambda f: MinGRULayer(f, hidden_size, mode, scan_method),
                         input_size, hidden_size, num_layers, pooling, dropout, residual)
