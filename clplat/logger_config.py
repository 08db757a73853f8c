"""The ``logger`` group: one ``_target_`` config per experiment logger, keyed by a name.

``logger=csv`` gives ``{csv: {_target_: lightning.pytorch.loggers.CSVLogger, ...}}``; a user adds
any Lightning logger with ``+logger.<name>._target_=<class>`` or an option file of their own.
clplat supplies what only the run knows when it builds them (``clplat.logging.build_loggers``).

Runs saved before loggers were ``_target_`` configs hold ``logger: {kind: csv|wandb|[csv, wandb]|
none, <W&B options>}`` in their ``config.yaml``; ``logger_entries`` reads that form as the option
files it named (``kind: wandb`` meant ``logger=wandb``), so those runs still resume. The saved
config itself is never rewritten: a resumed run's config hash must stay that of its checkpoints.
Free of torch and Lightning: the preflight checks the group before they load.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from clplat import config_dir
from clplat.errors import ConfigError

WANDB_FACTORY = "clplat.logging.wandb_logger"
"""The ``_target_`` of clplat's W&B logger (``conf/logger/wandb.yaml``)."""

LEGACY_KINDS = ("csv", "wandb", "none")
"""The values of the old ``logger.kind``: each names the option file ``conf/logger/<kind>.yaml``."""
LEGACY_WANDB_KEYS = ("project", "entity", "group", "tags", "mode")
"""The W&B options that the old form kept next to ``kind``."""


def logger_entries(node: Any) -> dict[str, DictConfig]:
    """The loggers a ``logger`` node asks for, by name, each a config with a ``_target_``.

    Raises ``ConfigError`` (one line naming the key) for an entry that is not such a config.
    """
    if node is None:
        return {}
    if not isinstance(node, DictConfig):
        raise ConfigError("logger", node, "must be a mapping of logger names to _target_ configs "
                          "(logger=csv|wandb|csv_wandb|none, or +logger.<name>._target_=<class>)")
    if "kind" in node:
        node = _from_legacy(node)
    entries = {}
    for name, entry in node.items():
        if not isinstance(entry, DictConfig) or not isinstance(entry.get("_target_"), str):
            raise ConfigError(f"logger.{name}", entry, "must be a config with a _target_ (a lightning.pytorch."
                              "loggers.Logger class, e.g. +logger.tb._target_=lightning.pytorch.loggers."
                              "TensorBoardLogger)")
        entries[str(name)] = entry
    return entries


def _from_legacy(node: DictConfig) -> DictConfig:
    """``{kind: ..., <W&B options>}`` as the entries of the option files that ``kind`` named."""
    kind = node.get("kind")
    kinds = [kind] if isinstance(kind, str) or kind is None else list(kind)
    for one in kinds:
        if one not in LEGACY_KINDS:
            raise ConfigError("logger.kind", one, "allowed values are " + ", ".join(LEGACY_KINDS))
    if len(set(kinds)) < len(kinds) or ("none" in kinds and len(kinds) > 1):
        raise ConfigError("logger.kind", kinds, "names a logger twice, or none with other loggers")
    files = [OmegaConf.load(config_dir() / "logger" / f"{k}.yaml") for k in kinds if k != "none"]
    entries = OmegaConf.merge(OmegaConf.create({}), *files)
    if "wandb" in entries:
        entries.wandb = OmegaConf.merge(entries.wandb, {k: node[k] for k in LEGACY_WANDB_KEYS if k in node})
    return entries


__all__ = ["WANDB_FACTORY", "logger_entries"]
