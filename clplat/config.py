"""The schema of the platform-owned config keys: each key's type and allowed values, once.

Defaults and the comments that document them live in the YAML option files (``conf/trainer/
default.yaml``, ``conf/eval/default.yaml``, ``conf/logger/wandb.yaml``, ``conf/train.yaml``):
those are what ``--help``, ``--cfg job`` and the configuration reference show, so they are the
one place a default is written. This module says what each key may hold; a test checks that the
default options declare exactly the keys declared here. It imports neither torch nor Lightning:
the preflight answers a bad value in about a second, with one line naming the key, the value
and what is allowed. User-extensible ``_target_`` groups (stream, backbone, strategy, plugin,
optimizer) check their arguments in their constructors with the same ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from clplat.choices import (HEAD_TYPES, PROCESS_GROUP_BACKENDS, SPLITS, TASK_SELECTIONS, TRAINER_STRATEGIES,
                            WANDB_MODES)
from clplat.errors import ConfigError, check_choice, check_float, check_int
from clplat.logger_config import WANDB_FACTORY, logger_entries

PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", 32, 64, 16, "bf16")
"""Lightning's numeric precisions (``trainer.precision``)."""


@dataclass(frozen=True)
class Key:
    """What one key may hold: a type (``None``: any value), an optional range or list of choices,
    or a test with the sentence that explains it."""

    type: type | None = None
    none: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    test: Callable[[Any], bool] | None = None
    allowed: str | None = None  # the explanation of ``choices`` or ``test``, when the list alone is not enough

    def check(self, key: str, value: Any) -> None:
        if value is None:
            if not self.none:
                raise ConfigError(key, value, "must be set" + (f" ({self.allowed})" if self.allowed else ""))
            return
        if self.type is bool:
            check_choice(key, value, (True, False))
        elif self.type is int:
            check_int(key, value, None if self.minimum is None else int(self.minimum))
        elif self.type is float:
            check_float(key, value, self.minimum, self.maximum)
        elif self.type is str and not isinstance(value, str):
            raise ConfigError(key, value, "must be a string")
        elif self.type is dict and not isinstance(value, (dict, DictConfig)):
            raise ConfigError(key, value, "must be a mapping")
        elif self.type is list and not (isinstance(value, (list, ListConfig)) and all(isinstance(v, str) for v in value)):
            raise ConfigError(key, value, "must be a list of strings")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(key, value, self.allowed or "allowed values are " + ", ".join(map(str, self.choices)))
        if self.test is not None and not self.test(value):
            raise ConfigError(key, value, self.allowed or "not allowed")


RUN = {
    "seed": Key(int, minimum=0),
    "plots": Key(bool),
    "print_summary": Key(bool),
    "memory_budget_bytes": Key(int, none=True, minimum=1),
}
"""Top-level keys of ``conf/train.yaml`` (the others are groups, ``run_dir`` and ``resume``)."""

TRAINER = {
    "epochs": Key(int, none=True, minimum=1),
    "iterations": Key(int, none=True, minimum=1),
    "batch_size": Key(int, minimum=1),
    "accelerator": Key(str),
    "devices": Key(),  # an int, a list of device ids, "auto": Lightning parses it
    "strategy": Key(str, choices=TRAINER_STRATEGIES, allowed="allowed values are auto, ddp (ddp_spawn loses "
                    "strategy state such as replay buffers after every experience)"),
    "process_group_backend": Key(str, none=True, choices=PROCESS_GROUP_BACKENDS),
    "precision": Key(choices=PRECISIONS),
    "gradient_clip_val": Key(float, none=True, minimum=0.0),
    "deterministic": Key(bool),
    "log_every_n_steps": Key(int, minimum=1),
    "enable_progress_bar": Key(bool),
    "checkpoint": Key(bool),
    "lightning": Key(dict),  # any other Trainer argument: clplat/trainer_options.py checks each
}

EVAL = {
    "every_n_iters": Key(int, none=True, minimum=1),
    "subset_size": Key(int, minimum=1),
    "subset_seed": Key(int, minimum=0),
    "split": Key(str, choices=SPLITS),
    "tasks": Key(str, choices=TASK_SELECTIONS),
    "batch_size": Key(int, minimum=1),
    "initial": Key(bool),
}

VALIDATION = {
    "fraction": Key(float, test=lambda v: 0.0 <= v < 1.0, allowed="must be in [0, 1) (0: no validation split)"),
    "seed": Key(int, minimum=0),
}

HEAD = {
    "type": Key(str, choices=HEAD_TYPES),
    "mask_unseen": Key(bool),
}

WANDB = {
    "project": Key(str, none=True),
    "entity": Key(str, none=True),
    "group": Key(str, none=True),
    "tags": Key(list),
    "mode": Key(str, choices=WANDB_MODES),
}
"""The options of clplat's W&B logger (``clplat.logging.wandb_logger``); any other key of its
entry goes to Lightning's ``WandbLogger`` as it is."""

SCHEMAS = {"trainer": TRAINER, "eval": EVAL, "validation": VALIDATION, "head": HEAD}
"""The platform-owned groups: their option files declare exactly these keys."""


def check_values(group: str, values: Mapping[str, Any], schema: Mapping[str, Key] | None = None,
                 closed: bool = True) -> None:
    """Check ``values`` (keys of ``group``) against their schema; ``closed``: refuse unknown keys.

    A key the schema declares but ``values`` lacks is not checked: the group's option files
    declare every key, and a run saved before a key existed resumes with the code's behaviour
    of that time.
    """
    schema = SCHEMAS[group] if schema is None else schema
    if not isinstance(values, Mapping):
        raise ConfigError(group, values, f"must be a mapping with keys {', '.join(schema)}")
    for name in values:
        key = f"{group}.{name}"
        if name in schema:
            schema[name].check(key, values[name])
        elif closed:
            raise ConfigError(key, values[name], f"unknown key; allowed keys are {', '.join(schema)}")


def validate_config(cfg: DictConfig) -> None:
    """Check every platform-owned value; raises ``ConfigError`` on the first bad one."""
    for name, key in RUN.items():
        if name in cfg:
            key.check(name, cfg.get(name))
    trainer = cfg.trainer
    check_values("trainer", trainer)
    if trainer.get("epochs") is None and trainer.get("iterations") is None:
        raise ConfigError("trainer.epochs", None, "set trainer.epochs or trainer.iterations (per-experience budget)")
    if str(trainer.get("accelerator")) in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", trainer.accelerator, "no CUDA GPU is visible on this machine "
                              "(torch.cuda.is_available() is False); run on the CPU with trainer=default")

    check_values("eval", cfg.eval)
    validation = cfg.get("validation") or OmegaConf.create({})
    check_values("validation", validation)
    if cfg.eval.get("split") == "validation" and validation.get("fraction", 0.0) == 0.0:
        raise ConfigError("eval.split", cfg.eval.split, "needs held-out training data: set validation.fraction "
                          "(e.g. validation.fraction=0.1)")
    check_values("head", cfg.head)

    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, DictConfig):  # the optimizer class checks the rest when it is built
        lr = optimizer.get("lr")
        if "lr" in optimizer and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            raise ConfigError("optimizer.lr", lr, "must be a number > 0")
        if "weight_decay" in optimizer:
            check_float("optimizer.weight_decay", optimizer.weight_decay, 0.0)

    for name, entry in logger_entries(cfg.get("logger")).items():
        if entry.get("_target_") == WANDB_FACTORY:  # its other keys go to WandbLogger as they are
            check_values(f"logger.{name}", entry, WANDB, closed=False)

    plugins = cfg.get("plugin")
    if plugins is None:
        return
    if not isinstance(plugins, DictConfig):
        raise ConfigError("plugin", plugins, "select plugins as plugin=[name,...] (options in conf/plugin/)")
    for name, node in plugins.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"plugin.{name}", node, "each plugin config needs a _target_")
