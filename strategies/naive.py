"""Naive fine-tuning: the lower bound every method is measured against."""

from clplat.strategy import Strategy


class Naive(Strategy):
    """Train on each experience in turn with plain cross-entropy and nothing against forgetting."""

    name = "naive"
    supports_ddp = True  # stateless: DDP's averaged gradients are the single-process gradients
