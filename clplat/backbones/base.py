"""The per-layer backbone interface every recurrent encoder implements.

Strategies need more than ``features = backbone(x)``: activation replay (SHARP) stores one layer's
output sequence and re-enters the network above it, and hypernetworks run the layers with
generated weights through ``torch.func.functional_call``. So a backbone is a stack of ordinary
``nn.Module`` layers, each mapping a sequence ``(B, T, F_in)`` to a sequence ``(B, T, H)``, and a
pooling rule that turns the top sequence into features ``(B, out_dim)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from torch import Tensor, nn

from clplat.errors import ConfigError, check_choice, check_float, check_int

if TYPE_CHECKING:
    from clplat.backbones.units import UnitMap

POOLINGS = ("last", "mean")


class RecurrentBackbone(nn.Module):
    """A stack of sequence-to-sequence layers followed by temporal pooling."""

    def __init__(self, layers: Sequence[nn.Module], out_dim: int, pooling: str = "last", dropout: float = 0.0):
        super().__init__()
        check_choice(".pooling", pooling, POOLINGS)
        check_float(".dropout", dropout, 0.0, 1.0)
        if not layers:
            raise ConfigError(".num_layers", 0, "must be an integer >= 1")
        self.layers = nn.ModuleList(layers)
        self.out_dim = out_dim
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _layer(self, index: int, h: Tensor) -> Tensor:
        if index > 0:
            h = self.dropout(h)
        return self.layers[index](h)

    def pool(self, h: Tensor) -> Tensor:
        """Sequence ``(B, T, H)`` -> features ``(B, H)``."""
        return h[:, -1] if self.pooling == "last" else h.mean(dim=1)

    def forward_layers(self, x: Tensor) -> list[Tensor]:
        """Output sequence of every layer, bottom to top."""
        outputs = []
        h = x
        for i in range(self.num_layers):
            h = self._layer(i, h)
            outputs.append(h)
        return outputs

    def forward_from(self, layer: int, h: Tensor) -> Tensor:
        """Features from ``h``, the output sequence of ``layer`` (``-1``: the raw input).

        Activation replay stores ``forward_layers(x)[layer]`` and re-enters here.
        """
        if not -1 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} out of range for a {self.num_layers}-layer backbone")
        for i in range(layer + 1, self.num_layers):
            h = self._layer(i, h)
        return self.pool(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from(-1, x)

    def unit_map(self) -> "UnitMap":
        """Every weight matrix and per-unit vector, mapped to units and layers
        (:mod:`clplat.backbones.units`), from each layer's own ``unit_map(prefix, layer, below)``.

        Raises ``NotImplementedError`` naming the first layer that declares none.
        """
        connections, vectors = [], []
        for index, layer in enumerate(self.layers):
            if not hasattr(layer, "unit_map"):
                raise NotImplementedError(f"layer {index} ({type(layer).__name__}) declares no unit map")
            c, v = layer.unit_map(f"layers.{index}", index, index - 1 if index > 0 else None)
            connections += c
            vectors += v
        return connections, vectors


def check_rnn_args(input_size: int, hidden_size: int, num_layers: int) -> None:
    check_int(".input_size", input_size, 1)
    check_int(".hidden_size", hidden_size, 1)
    check_int(".num_layers", num_layers, 1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["RecurrentBackbone", "POOLINGS", "check_rnn_args", "count_parameters"]
