"""Recurrent sequence encoders with a per-layer interface (see ``base.RecurrentBackbone``)."""

from clplat.backbones.base import RecurrentBackbone
from clplat.backbones.indrnn import IndRNNBackbone
from clplat.backbones.lru import LRUBackbone
from clplat.backbones.mamba import MambaBackbone
from clplat.backbones.mgu import MGUBackbone
from clplat.backbones.mingru import MinGRUBackbone
from clplat.backbones.minlstm import MinLSTMBackbone
from clplat.backbones.para_gru import ParaGRUBackbone
from clplat.backbones.recurrent_layer import RecurrentLayer, ScanBackbone
from clplat.backbones.rnn import GRUBackbone, LSTMBackbone

__all__ = [
    "RecurrentBackbone",
    "GRUBackbone",
    "LSTMBackbone",
    "IndRNNBackbone",
    "LRUBackbone",
    "MambaBackbone",
    "MGUBackbone",
    "MinGRUBackbone",
    "MinLSTMBackbone",
    "ParaGRUBackbone",
    "RecurrentLayer",
    "ScanBackbone",
]
