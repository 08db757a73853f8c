"""A backbone's unit map: which weight rows and columns belong to which hidden unit of which layer.

Methods that reason about *units* (SHARP's stable/plastic units and unit-to-unit connections)
read this map instead of a backbone's internals, so a new backbone becomes usable by them by
declaring it (a layer's ``unit_map``), with no change to any strategy. The role is that of
hypnettorch's ``param_shapes_meta``: parameters described by what they are, not where they sit.

Gated layouts (``nn.GRU`` ``[r|z|n]``, ``nn.LSTM`` ``[i|f|g|o]``, minGRU ``[k|h~]``, minLSTM
``[f|i|h~]``) stack ``gates`` blocks of ``H`` rows, so row ``r`` belongs to unit ``r % H``.
Input-to-hidden matrices connect layer ``l-1`` to layer ``l`` (``source=None``: the raw input);
hidden-to-hidden matrices connect layer ``l`` to itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Connection:
    """A weight matrix ``(gates * H_target, n_source)`` from ``source``'s units into ``target``'s.

    ``source`` is a backbone layer index, or ``None`` for the raw input.
    """

    name: str
    param: nn.Parameter
    gates: int
    target: int
    source: int | None
    #: re-initialisation range U(-b, b) of a unit's incoming weights (the layer's default init)
    init_bound: float


@dataclass
class UnitVector:
    """A per-unit vector ``(gates * H,)`` of layer ``layer`` (bias, norm affine); ``reset`` is
    its value at initialisation."""

    name: str
    param: nn.Parameter
    gates: int
    layer: int
    reset: float


UnitMap = tuple[list[Connection], list[UnitVector]]


def linear_units(prefix: str, linear: nn.Linear, gates: int, target: int, source: int | None) -> UnitMap:
    """An ``nn.Linear`` whose ``gates * H`` output rows feed layer ``target``'s units."""
    vectors = [UnitVector(f"{prefix}.bias", linear.bias, gates, target, 0.0)] if linear.bias is not None else []
    bound = linear.in_features ** -0.5  # nn.Linear's default init range
    return [Connection(f"{prefix}.weight", linear.weight, gates, target, source, bound)], vectors
