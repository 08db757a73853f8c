"""clplat: continual-learning experiments for recurrent networks (Lightning + Hydra)."""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - lazy, so `import clplat` stays free of torch and pandas
    if name == "load_run":
        from clplat.analysis.runs import load_run

        return load_run
    raise AttributeError(f"module 'clplat' has no attribute {name!r}")
