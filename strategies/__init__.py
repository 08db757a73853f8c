"""Continual-learning methods, one module each; wired in by ``conf/strategy/*.yaml``."""
