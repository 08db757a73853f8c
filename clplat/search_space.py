"""Search spaces declared next to the defaults they explore.

A component's YAML (``conf/strategy/*.yaml``, ``conf/plugin/*.yaml``, ``conf/optimizer/*.yaml``)
may carry a ``search_space`` mapping from its own keys to a range::

    ewc_lambda: 10.0
    search_space:
      ewc_lambda: {low: 0.1, high: 1000.0, log: true}   # float (int when low and high are ints)
      mode: {choices: [separate, online]}                # categorical

``instantiate_node`` drops the mapping before building the component, so it never reaches a
constructor. ``clplat-tune`` reads the spaces of the run's strategy, plugins and optimizer and
asks Optuna for values, keyed by their full override path (``strategy.ewc_lambda``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from clplat.errors import ConfigError

SEARCH_SPACE_KEY = "search_space"
TUNED_GROUPS = ("strategy", "optimizer")  # plus every selected plugin, as plugin.<name>


@dataclass(frozen=True)
class Dimension:
    """One tuned value: a numeric range (``low``..``high``, optionally log-scaled or stepped) or
    a list of ``choices``."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.low, bool)

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial picks for this dimension."""
        if self.choices is not None:
            if all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices):
                return trial.suggest_categorical(self.key, list(self.choices))
            # Optuna's categorical values are scalars: a list choice (FPF's modules) is named by its JSON
            return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log,
                                   step=None if self.step is None else float(self.step))


def parse_dimension(key: str, spec: Any) -> Dimension:
    """A ``Dimension`` from its YAML form; a malformed one is a one-line ``ConfigError``."""
    where = f"{key} (search_space)"
    if not isinstance(spec, Mapping):
        raise ConfigError(where, spec, "must be {low: .., high: .., log: ..} or {choices: [...]}")
    allowed = {"low", "high", "log", "step", "choices"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(where, dict(spec), f"unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, (list, tuple)) or not choices or set(spec) != {"choices"}:
            raise ConfigError(where, dict(spec), "choices must be a non-empty list and stand alone")
        return Dimension(key, choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numeric or not low < high:
        raise ConfigError(where, dict(spec), "needs numbers low < high")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(where, dict(spec), "a log range needs low > 0")
    if log and spec.get("step") is not None:
        raise ConfigError(where, dict(spec), "step and log cannot be combined")
    return Dimension(key, low=low, high=high, log=log, step=spec.get("step"))


def node_search_space(node: Any, prefix: str) -> list[Dimension]:
    """The dimensions a component's config node declares, keyed ``<prefix>.<key>``.

    Every key must be one of the node's own settings, so a renamed option cannot leave a dead
    range behind.
    """
    if not isinstance(node, DictConfig) or SEARCH_SPACE_KEY not in node:
        return []
    space = OmegaConf.to_container(node[SEARCH_SPACE_KEY], resolve=True)
    if not isinstance(space, dict):
        raise ConfigError(f"{prefix}.{SEARCH_SPACE_KEY}", space, "must map option names to ranges")
    dims = []
    for key, spec in space.items():
        if key not in node or key == SEARCH_SPACE_KEY:
            raise ConfigError(f"{prefix}.{SEARCH_SPACE_KEY}.{key}", spec, f"{prefix} has no option {key!r}")
        dims.append(parse_dimension(f"{prefix}.{key}", spec))
    return dims


def run_search_space(cfg: DictConfig) -> list[Dimension]:
    """Every dimension of a composed run config: its strategy, its plugins and its optimizer."""
    dims = []
    for group in TUNED_GROUPS:
        dims += node_search_space(cfg.get(group), group)
    for name, node in (cfg.get("plugin") or {}).items():
        dims += node_search_space(node, f"plugin.{name}")
    return dims


def without_search_space(node: DictConfig) -> DictConfig:
    """A copy of ``node`` without its ``search_space`` (what a constructor receives)."""
    if SEARCH_SPACE_KEY not in node:
        return node
    copy = node.copy()
    with_flag = OmegaConf.is_struct(copy)
    OmegaConf.set_struct(copy, False)
    copy.pop(SEARCH_SPACE_KEY)
    OmegaConf.set_struct(copy, with_flag)
    return copy


__all__ = ["Dimension", "parse_dimension", "node_search_space", "run_search_space", "without_search_space",
           "SEARCH_SPACE_KEY"]
