"""Unit-level sparse connectivity for recurrent backbones (SHARP's rewiring machinery).

SHARP (Gurbuz, Moorman & Dovrolis 2023) reasons about *units* (hidden neurons) and the binary
connections between them. A recurrent layer has several weight matrices per unit (one row per
gate), so we map every weight row and column to a unit:

- each backbone declares which weight rows and columns belong to which unit
  (:mod:`clplat.backbones.units`): a gated layer stacks ``gates`` blocks of ``H`` rows, so row
  ``r`` belongs to unit ``r % H``;
- a connection is a (source unit, target unit) pair and its mask entry is shared by every gate
  row of the target unit -- the recurrent analogue of SHARP's channel-wise conv masks (one k x k
  kernel per in/out channel pair);
- input-to-hidden matrices connect layer ``l-1`` to layer ``l``; hidden-to-hidden (recurrent)
  matrices connect layer ``l`` to itself. Matrices fed by the raw input stay dense, as SHARP
  leaves its first conv unpruned (with one MNIST-1D feature per step, pruning it would cut 60 %
  of the units off the input).

Masked weights are held at zero by the caller: gradients are multiplied by the mask before the
optimizer step and weights after it (so momentum or weight decay cannot revive them).
"""

from __future__ import annotations


import torch
from torch import Tensor

from clplat.backbones.base import RecurrentBackbone
from clplat.backbones.units import Connection, UnitVector
from clplat.errors import ConfigError


def unit_map(backbone: RecurrentBackbone) -> tuple[list[Connection], list[UnitVector]]:
    """Every weight matrix and per-unit vector of ``backbone``, mapped to units and layers (the
    backbone's own declaration, :meth:`RecurrentBackbone.unit_map`); a ``ConfigError`` for a
    backbone that declares none."""
    try:
        return backbone.unit_map()
    except (NotImplementedError, AttributeError) as err:
        raise ConfigError("backbone", type(backbone).__name__,
                          f"sharp needs a backbone that declares its unit map ({err}; clplat.backbones.units)") from None


def random_mask(rows: int, cols: int, density: float, generator: torch.Generator) -> Tensor:
    """A ``(rows, cols)`` bool mask with exactly ``round(density * rows * cols)`` ones, at random."""
    n = rows * cols
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=generator)[: int(round(density * n))]] = True
    return keep.view(rows, cols)


def expand_rows(unit_rows: Tensor, gates: int) -> Tensor:
    """Per-unit rows ``(H, ...)`` -> per-weight-row ``(gates * H, ...)`` (gate blocks stacked)."""
    return unit_rows.repeat(gates, *([1] * (unit_rows.dim() - 1)))


def drop_and_grow(mask: Tensor, source_types: Tensor, target_types: Tensor,
                  generator: torch.Generator) -> tuple[Tensor, Tensor, int]:
    """SHARP's rewiring of one unit-pair mask ``(H_target, n_source)``.

    Drop every connection from a plastic source unit (type 0) into a non-plastic target unit, so
    stable units only listen to stable units; grow as many new connections, at random among the
    absent ones into plastic target units (from any source unit). Density is kept exactly unless
    the plastic targets have fewer free slots than were dropped (then every free slot is used).

    Returns the new mask, the grown entries (their weights must be set to zero) and the number
    dropped.
    """
    drop = mask & (source_types == 0)[None, :] & (target_types != 0)[:, None]
    n_drop = int(drop.sum())
    new = mask & ~drop
    grown = torch.zeros_like(mask)
    if n_drop == 0:
        return new, grown, 0
    free = (~new & (target_types == 0)[:, None]).flatten().nonzero().squeeze(1)
    chosen = free[torch.randperm(free.numel(), generator=generator)[:n_drop]]
    grown.view(-1)[chosen] = True
    return new | grown, grown, n_drop


def select_units(activation: Tensor, types: Tensor, percent: float) -> Tensor:
    """SHARP's unit selection (``pick_u0_and_u1_neurons`` / ``pick_top_neurons`` in the authors'
    ``Source/architecture.py``): *all* units of the layer are ranked by activity and the most
    active ones covering ``percent`` % of the layer's *total* activity are picked (the crossing
    unit included); picked plastic and candidate units (types 0 and 1) become candidates (1), the
    other plastic and candidate units plastic (0). Stable units (types >= 2) keep their type but
    their activity counts towards the share: once the stable units carry ``percent`` % of what the
    layer does on the new classes, no further unit is claimed. (Ranking only the plastic and
    candidate units against their own total claims ``percent`` % of what is left at every
    experience, so on a dense recurrent layer every unit ends up stable.)

    ``activation`` is a non-negative mean activity per unit.
    """
    types = types.clone()
    open_units = types <= 1
    if not bool(open_units.any()):
        return types
    order = torch.argsort(activation, descending=True, stable=True)
    cumulative = torch.cumsum(activation[order], 0)
    total = float(cumulative[-1])
    # the first units whose cumulative share reaches percent (the crossing unit included)
    count = min(int((cumulative < total * percent / 100.0).sum()) + 1, activation.numel()) if total > 0 else 0
    picked = torch.zeros_like(open_units)
    picked[order[:count]] = True
    types[open_units] = 0
    types[open_units & picked] = 1
    return types


__all__ = ["unit_map", "random_mask", "expand_rows", "drop_and_grow", "select_units"]
