"""Recurrent sequence encoders with a per-layer interface (see ``base.RecurrentBackbone``)."""

from clplat.backbones.base import RecurrentBackbone
from clplat.backbones.rnn import GRUBackbone, LSTMBackbone

__all__ = ["RecurrentBackbone", "GRUBackbone", "LSTMBackbone"]
