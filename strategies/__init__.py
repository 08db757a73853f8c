"""Continual-learning methods (``clplat.strategies``), one module each; wired in by ``conf/strategy/*.yaml``."""
