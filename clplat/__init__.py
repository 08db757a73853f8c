"""clplat: continual-learning experiments for recurrent networks (Lightning + Hydra).

Layout. The repository keeps its methods, scenario builders and configs in top-level folders
(``strategies/``, ``streams/``, ``conf/``) next to ``clplat/``; the wheel installs them inside
this package, as ``clplat.strategies``, ``clplat.streams`` and ``clplat/conf`` (pyproject.toml,
``package-dir``), so an installed clplat adds no generic top-level names and carries its configs.
Code and configs always say ``clplat.strategies....`` and ``clplat.streams....``. In a source
checkout (``PYTHONPATH=<checkout>``, or an editable install whose finder predates that mapping)
those two subpackages are not below ``clplat/``: ``_CheckoutFinder`` below resolves them to the
checkout's folders. It is installed only when ``clplat/`` has no ``strategies`` subpackage and
the folder above it is a clplat checkout, i.e. never in an installed wheel.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from clplat.allocator import apply_cpu_memory_policy

__version__ = "0.1.0"

try:
    apply_cpu_memory_policy()  # before torch allocates anything; see clplat.allocator
except ValueError as bad_policy:
    print(f"clplat: error: {bad_policy}", file=sys.stderr)  # one line and exit code 2, as every bad option
    raise SystemExit(2) from None

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_ROOT = _PACKAGE_DIR.parent
#: subpackages of clplat that a source checkout keeps in top-level folders (pyproject.toml maps them)
_CHECKOUT_SUBPACKAGES = {"clplat.strategies": "strategies", "clplat.streams": "streams"}


def config_dir() -> Path:
    """The Hydra config directory: the packaged ``clplat/conf`` when installed, else the checkout's ``conf/``.

    The one place that locates the configs (``clplat-train``, ``clplat-tune``, the DDP checks and
    the tests ask here), so an installed clplat never looks outside its own package.
    """
    packaged = _PACKAGE_DIR / "conf"
    return packaged if (packaged / "train.yaml").is_file() else _CHECKOUT_ROOT / "conf"


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds ``clplat.strategies`` / ``clplat.streams`` in a source checkout's top-level folders.

    Only these two names: their submodules are then found through the package's ``__path__``
    like any others, and nothing else of the checkout (tests, benchmarks) becomes importable
    under ``clplat``.
    """

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        folder = _CHECKOUT_SUBPACKAGES.get(fullname)
        if folder is None:
            return None
        init = _CHECKOUT_ROOT / folder / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


def _from_checkout() -> bool:
    """True when this is a source checkout: no ``clplat/strategies`` here, the folders beside ``clplat/``."""
    return (not (_PACKAGE_DIR / "strategies").is_dir()
            and (_CHECKOUT_ROOT / "pyproject.toml").is_file()
            and all((_CHECKOUT_ROOT / folder / "__init__.py").is_file() for folder in _CHECKOUT_SUBPACKAGES.values()))


if _from_checkout() and not any(isinstance(finder, _CheckoutFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutFinder())


def __getattr__(name: str):  # noqa: ANN202 - lazy, so `import clplat` stays free of torch and pandas
    if name == "load_run":
        from clplat.analysis.runs import load_run

        return load_run
    raise AttributeError(f"module 'clplat' has no attribute {name!r}")
