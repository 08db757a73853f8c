"""LSTM and GRU backbones built from single-layer ``torch.nn`` RNNs.

One ``nn.GRU``/``nn.LSTM`` per layer instead of one multi-layer module: the cost is the same (the
fused multi-layer module also runs layer after layer) and every layer's output sequence becomes
reachable for activation replay and functional weights.
"""

from __future__ import annotations

from torch import Tensor, nn

from clplat.backbones.base import RecurrentBackbone, check_rnn_args


class _SequenceOnly(nn.Module):
    """Wraps a batch-first ``nn.RNNBase`` so that it maps a sequence to a sequence."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.rnn = rnn

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return out


class GRULayer(_SequenceOnly):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(nn.GRU(input_size, hidden_size, batch_first=True))


class LSTMLayer(_SequenceOnly):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(nn.LSTM(input_size, hidden_size, batch_first=True))


class GRUBackbone(RecurrentBackbone):
    """Stacked GRU (Cho et al. 2014)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1,
                 pooling: str = "last", dropout: float = 0.0):
        check_rnn_args(input_size, hidden_size, num_layers)
        layers = [GRULayer(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)]
        super().__init__(layers, hidden_size, pooling, dropout)


class LSTMBackbone(RecurrentBackbone):
    """Stacked LSTM (Hochreiter & Schmidhuber 1997)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1,
                 pooling: str = "last", dropout: float = 0.0):
        check_rnn_args(input_size, hidden_size, num_layers)
        layers = [LSTMLayer(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)]
        super().__init__(layers, hidden_size, pooling, dropout)
