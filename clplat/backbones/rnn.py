"""LSTM and GRU backbones: single-layer ``torch.nn`` RNNs stacked (the GRU also has a hand-written CPU pass).

One ``nn.GRU``/``nn.LSTM`` per layer instead of one multi-layer module: the cost is the same (the
fused multi-layer module also runs layer after layer) and every layer's output sequence becomes
reachable for activation replay and functional weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clplat.backbones.base import RecurrentBackbone, check_rnn_args
from clplat.backbones.gru_bptt import gru_sequence
from clplat.errors import check_choice
from clplat.backbones.units import Connection, UnitMap, UnitVector

GRU_IMPLEMENTATIONS = ("auto", "torch", "bptt")


class _SequenceOnly(nn.Module):
    """Wraps a batch-first ``nn.RNNBase`` so that it maps a sequence to a sequence."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.rnn = rnn

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return out

    def unit_map(self, prefix: str, layer: int, below: int | None) -> UnitMap:
        """``nn.GRU`` / ``nn.LSTM`` of one unidirectional layer: both weight matrices and both
        bias vectors, ``3`` or ``4`` gate blocks of ``H`` rows (clplat.backbones.units)."""
        rnn = self.rnn
        if not isinstance(rnn, (nn.GRU, nn.LSTM)) or rnn.num_layers != 1 or rnn.bidirectional \
                or getattr(rnn, "proj_size", 0):
            raise NotImplementedError("units are mapped for one unidirectional nn.GRU/nn.LSTM layer per module")
        gates = 3 if isinstance(rnn, nn.GRU) else 4
        bound = rnn.hidden_size ** -0.5  # torch.nn.RNNBase's default init range
        connections = [Connection(f"{prefix}.rnn.weight_ih_l0", rnn.weight_ih_l0, gates, layer, below, bound),
                       Connection(f"{prefix}.rnn.weight_hh_l0", rnn.weight_hh_l0, gates, layer, layer, bound)]
        vectors = [UnitVector(f"{prefix}.rnn.bias_ih_l0", rnn.bias_ih_l0, gates, layer, 0.0),
                   UnitVector(f"{prefix}.rnn.bias_hh_l0", rnn.bias_hh_l0, gates, layer, 0.0)] if rnn.bias else []
        return connections, vectors


class GRULayer(_SequenceOnly):
    """``nn.GRU``'s parameters, run by ``nn.GRU`` or by the hand-written pass of ``gru_bptt``.

    ``implementation``: ``torch`` always calls ``nn.GRU`` (cuDNN on a GPU); ``bptt`` always the
    hand-written forward/backward; ``auto`` the hand-written one on the CPU where it measured
    faster (``benchmarks/gru_bptt.py``, docs/performance.md): for training when
    ``batch * hidden <= 4096`` (2.3x at 64 x 16, 2.0x at 64 x 32, 1.3-1.4x for three of four
    shapes at 4096; slower above, where its whole-sequence buffers leave the cache), for inference
    at 16 units or fewer (1.2-1.5x at any batch; about even or slower with more units).
    """

    def __init__(self, input_size: int, hidden_size: int, implementation: str = "auto"):
        check_choice(".implementation", implementation, GRU_IMPLEMENTATIONS)
        super().__init__(nn.GRU(input_size, hidden_size, batch_first=True))
        self.implementation = implementation

    def _hand_written(self, x: Tensor) -> bool:
        if self.implementation != "auto":
            return self.implementation == "bptt"
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return False  # cuDNN on a GPU; autocast's casting policy is nn.GRU's, not ours
        if torch.is_grad_enabled():
            return x.shape[0] * self.rnn.hidden_size <= 4096
        return self.rnn.hidden_size <= 16

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[0] * x.shape[1] == 0 or not self._hand_written(x):
            return super().forward(x)
        rnn = self.rnn
        return gru_sequence(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)


class LSTMLayer(_SequenceOnly):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(nn.LSTM(input_size, hidden_size, batch_first=True))


class GRUBackbone(RecurrentBackbone):
    """Stacked GRU (Cho et al. 2014); ``implementation`` as in :class:`GRULayer`."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1,
                 pooling: str = "last", dropout: float = 0.0, implementation: str = "auto"):
        check_rnn_args(input_size, hidden_size, num_layers)
        layers = [GRULayer(input_size if i == 0 else hidden_size, hidden_size, implementation)
                  for i in range(num_layers)]
        super().__init__(layers, hidden_size, pooling, dropout)


class LSTMBackbone(RecurrentBackbone):
    """Stacked LSTM (Hochreiter & Schmidhuber 1997)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1,
                 pooling: str = "last", dropout: float = 0.0):
        check_rnn_args(input_size, hidden_size, num_layers)
        layers = [LSTMLayer(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)]
        super().__init__(layers, hidden_size, pooling, dropout)
