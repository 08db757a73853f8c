"""Shared machinery for the scan-based backbones: layers with a parallel and a step-by-step mode.

Why two modes: the *parallel* mode (a scan over the whole sequence) is what makes these layers
fast to train, but it is not how the recurrence is defined. The *sequential* mode applies
:meth:`RecurrentLayer.step` once per time step -- the literal definition of the model -- so it is
an executable specification the parallel mode is tested against (outputs and gradients), and the
form a streaming user needs (one input at a time, carried state).

The sequential loop iterates over ``unbind`` views and stacks once: slicing ``x[:, t]`` in the
loop would make autograd O(T^2) (every slice's backward allocates a full-size zero tensor).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from clplat.backbones.base import RecurrentBackbone, check_rnn_args
from clplat.backbones.units import Connection, UnitMap, UnitVector, linear_units
from clplat.errors import check_choice

__all__ = ["MODES", "RecurrentLayer", "ResidualBlock", "ScanBackbone", "check_mode", "input_encoder",
           "warn_if_not_converged"]

MODES = ("parallel", "sequential")

State = Any  # a tensor or a tuple of tensors, whatever the layer carries between steps


def check_mode(mode: str, allowed: Sequence[str] = MODES) -> None:
    """Reject an unknown ``mode`` with the config key the user typed."""
    check_choice(".mode", mode, allowed)


class RecurrentLayer(nn.Module):
    """A sequence layer ``(B, T, F_in) -> (B, T, H)`` that can also run one step at a time.

    Subclasses implement :meth:`init_state`, :meth:`step` and :meth:`forward_parallel`; the
    sequential forward is derived from ``step``. A subclass may override :meth:`forward_sequential`
    with a leaner loop (one GEMM for every step's input projection first); the tests hold such
    loops to the generic ``step`` loop, so the definitions cannot drift apart.
    """

    modes: tuple[str, ...] = MODES

    def __init__(self, mode: str = "parallel"):
        super().__init__()
        check_mode(mode, self.modes)
        self.mode = mode

    def init_state(self, x_t: Tensor) -> State:
        """Zero state for a batch shaped like the first input step ``x_t`` ``(B, F_in)``."""
        raise NotImplementedError

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step: input ``(B, F_in)`` and state -> output ``(B, H)`` and the next state."""
        raise NotImplementedError

    def forward_parallel(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_sequential(self, x: Tensor) -> Tensor:
        """The recurrence as defined: ``step`` over time (autograd through the loop)."""
        steps = x.unbind(1)
        state = self.init_state(steps[0])
        outputs = []
        for x_t in steps:
            y, state = self.step(x_t, state)
            outputs.append(y)
        return torch.stack(outputs, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "sequential":
            return self.forward_sequential(x)
        return self.forward_parallel(x)


def warn_if_not_converged(layer: nn.Module, info: Any) -> None:
    """Warn when a Newton solve stopped at its iteration cap: its output is then *not* exact.

    Silent inexactness would look like a training problem; the fix (a higher
    ``newton_max_iters``, or ``mode="sequential"``) is a config change.
    """
    if not info.converged:
        warnings.warn(
            f"{type(layer).__name__}: Newton solve stopped after {info.iterations} iterations without "
            f"converging (last step {info.max_step:.2e}); raise backbone.newton_max_iters or use "
            "backbone.mode=sequential",
            RuntimeWarning,
            stacklevel=3,
        )


def input_encoder(input_size: int, hidden_size: int) -> nn.Module:
    """Linear map to the model width for residual blocks whose input width differs (layer 0).

    Residual blocks (LRU, Mamba) add their input to their output, so the first layer must first
    lift the raw features (often 1 per step) to ``hidden_size``; deeper layers need nothing.
    """
    return nn.Identity() if input_size == hidden_size else nn.Linear(input_size, hidden_size)


class ResidualBlock(RecurrentLayer):
    """Pre-norm residual block around a recurrent cell: ``out = u + cell(LayerNorm(u))``.

    ``u`` is the input, lifted to the cell's width for layer 0 (:func:`input_encoder`). Why: cells
    whose recurrence is elementwise (minGRU/minLSTM gates see only ``x_t``; ParaGRU and IndRNN have
    one recurrent weight per unit) mix units only through the next layer's input projection, so a
    bare stack of them learns slowly -- on MNIST-1D (one input feature) two-layer stacks stalled
    at 40-70% test accuracy where ``nn.GRU`` reaches ~95%. The residual path and normalisation are
    the standard remedy (Li et al. 2018 use a residual IndRNN for deep stacks; ParaRNN and
    Mamba wrap their cells the same way); the recurrence itself is untouched.

    The block has no mode of its own: ``mode`` reads and sets the cell's, and ``forward`` runs the
    cell in its mode (so a cell's own fast sequential loop is kept); ``step`` wraps the cell's step.
    """

    def __init__(self, cell: RecurrentLayer, input_size: int, hidden_size: int):
        nn.Module.__init__(self)
        self.encoder = input_encoder(input_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.cell = cell
        self.modes = cell.modes

    def unit_map(self, prefix: str, layer: int, below: int | None) -> UnitMap:
        """The encoder (layer 0), the cell's own map and the norm's affine vectors. ``u`` (the
        encoder's output) lives in this layer's units, so for layer 0 the cell's input comes from
        the layer itself. Raises ``NotImplementedError`` when the cell declares no unit map."""
        if not hasattr(self.cell, "unit_map"):
            raise NotImplementedError(f"{type(self.cell).__name__} declares no unit map")
        connections: list[Connection] = []
        vectors: list[UnitVector] = []
        if isinstance(self.encoder, nn.Linear):
            connections, vectors = linear_units(f"{prefix}.encoder", self.encoder, 1, layer, below)
        c, v = self.cell.unit_map(f"{prefix}.cell", layer, layer if isinstance(self.encoder, nn.Linear) else below)
        vectors += v + [UnitVector(f"{prefix}.norm.weight", self.norm.weight, 1, layer, 1.0),
                        UnitVector(f"{prefix}.norm.bias", self.norm.bias, 1, layer, 0.0)]
        return connections + c, vectors

    @property
    def mode(self) -> str:  # type: ignore[override]
        return self.cell.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.cell.mode = value

    def forward(self, x: Tensor) -> Tensor:
        u = self.encoder(x)
        return u + self.cell(self.norm(u))

    def init_state(self, x_t: Tensor) -> State:
        return self.cell.init_state(self.encoder(x_t))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        u = self.encoder(x_t)
        h, state = self.cell.step(self.norm(u), state)
        return u + h, state


class ScanBackbone(RecurrentBackbone):
    """A :class:`RecurrentBackbone` of :class:`RecurrentLayer` s, switchable between modes."""

    def __init__(self, make_cell: Callable[[int], RecurrentLayer], input_size: int, hidden_size: int,
                 num_layers: int, pooling: str, dropout: float, residual: bool = False):
        """``make_cell(in_features)`` builds one layer's cell; layer 0 gets ``input_size`` features.

        With ``residual``, each cell is built for ``hidden_size`` inputs and wrapped in a
        :class:`ResidualBlock` (which lifts layer 0's input to ``hidden_size``).
        """
        check_rnn_args(input_size, hidden_size, num_layers)
        sizes = [input_size if i == 0 else hidden_size for i in range(num_layers)]
        if residual:
            layers: list[RecurrentLayer] = [ResidualBlock(make_cell(hidden_size), f, hidden_size) for f in sizes]
        else:
            layers = [make_cell(f) for f in sizes]
        super().__init__(layers, hidden_size, pooling, dropout)

    @property
    def mode(self) -> str:
        return self.layers[0].mode  # type: ignore[return-value]

    def set_mode(self, mode: str) -> "ScanBackbone":
        """Switch every layer to ``"parallel"`` or ``"sequential"`` (e.g. to check one against the other)."""
        check_mode(mode, self.layers[0].modes)  # type: ignore[arg-type]
        for layer in self.layers:
            layer.mode = mode  # type: ignore[assignment]
        return self

    def cells(self) -> list[RecurrentLayer]:
        """The recurrent cell of every layer (inside its :class:`ResidualBlock` if wrapped)."""
        return [layer.cell if isinstance(layer, ResidualBlock) else layer for layer in self.layers]  # type: ignore[misc]
