"""clplat: continual-learning experiments for recurrent networks (Lightning + Hydra)."""

__version__ = "0.1.0"
