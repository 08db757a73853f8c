"""Schemas and checks for the platform-owned config groups.

Hydra already refuses unknown group options and (struct mode) unknown keys on the command line.
What it cannot know is which *values* make sense: these dataclasses give the types, and
``validate_config`` the ranges and combinations, so a bad value stops the run at start-up with
one line naming the key, the value and what is allowed — before anything is written.
User-extensible groups (stream, backbone, strategy, plugin) validate their own arguments in
their constructors with the same ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clplat.choices import (HEAD_TYPES, LOGGER_KINDS, PROCESS_GROUP_BACKENDS, SPLITS, TASK_SELECTIONS,
                            TRAINER_STRATEGIES, WANDB_MODES)
from clplat.errors import ConfigError, check_choice, check_float, check_int


PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", 32, 64, 16, "bf16")
"""Lightning's numeric precisions (``trainer.precision``)."""


@dataclass
class TrainerSchema:
    epochs: Optional[int] = 5
    iterations: Optional[int] = None
    batch_size: int = 64
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    process_group_backend: Optional[str] = None
    precision: Any = "32-true"
    gradient_clip_val: Optional[float] = None
    deterministic: bool = False
    log_every_n_steps: int = 10
    enable_progress_bar: bool = False
    checkpoint: bool = True
    lightning: Dict[str, Any] = field(default_factory=dict)  # clplat/trainer_options.py


@dataclass
class EvalSchema:
    every_n_iters: Optional[int] = 10
    subset_size: int = 1000
    subset_seed: int = 0
    split: str = "test"
    tasks: str = "seen"
    batch_size: int = 4096
    initial: bool = True


@dataclass
class HeadSchema:
    type: str = "auto"
    mask_unseen: bool = False


@dataclass
class LoggerSchema:
    kind: Any = "csv"  # one of LOGGER_KINDS, or a list of them (csv and wandb together)
    project: Optional[str] = None
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list = field(default_factory=list)
    mode: str = "auto"


@dataclass
class ValidationSchema:
    fraction: float = 0.0
    seed: int = 0


SCHEMAS = {"trainer": TrainerSchema, "eval": EvalSchema, "head": HeadSchema, "logger": LoggerSchema,
           "validation": ValidationSchema}


def _typed(group: str, node: Any) -> Any:
    """Merge ``node`` onto its schema: unknown keys and wrong types become one-line errors."""
    schema = SCHEMAS[group]
    if not isinstance(node, DictConfig):
        raise ConfigError(group, node, f"must be a mapping with keys {', '.join(f.name for f in fields(schema))}")
    for key in node.keys():
        if key not in {f.name for f in fields(schema)}:
            raise ConfigError(f"{group}.{key}", node.get(key), "unknown key; allowed keys are "
                              + ", ".join(f.name for f in fields(schema)))
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as err:
        key = f"{group}.{err.full_key}" if getattr(err, "full_key", None) else group
        value = node.get(err.full_key) if getattr(err, "full_key", None) in node else None
        reason = str(err).splitlines()[0]
        raise ConfigError(key, value, reason) from None


def logger_kinds(value: Any) -> list[str]:
    """``logger.kind`` as a list: one kind (``csv``) or several (``[csv, wandb]``); ``none`` alone."""
    kinds = [value] if isinstance(value, str) or value is None else list(value)
    for kind in kinds:
        check_choice("logger.kind", kind, LOGGER_KINDS)
    if "none" in kinds and len(kinds) > 1:
        raise ConfigError("logger.kind", kinds, "none cannot be combined with other loggers")
    if len(set(kinds)) < len(kinds):
        raise ConfigError("logger.kind", kinds, "names a logger twice")
    return [k for k in kinds if k != "none"]


def validate_config(cfg: DictConfig) -> None:
    """Check every platform-owned value; raises ``ConfigError`` on the first bad one."""
    check_int("seed", cfg.get("seed"), 0)
    check_choice("plots", cfg.get("plots", True), (True, False))
    check_int("memory_budget_bytes", cfg.get("memory_budget_bytes"), 1, allow_none=True)
    trainer = _typed("trainer", cfg.trainer)
    check_int("trainer.epochs", trainer.epochs, 1, allow_none=True)
    check_int("trainer.iterations", trainer.iterations, 1, allow_none=True)
    if trainer.epochs is None and trainer.iterations is None:
        raise ConfigError("trainer.epochs", None, "set trainer.epochs or trainer.iterations (per-experience budget)")
    check_int("trainer.batch_size", trainer.batch_size, 1)
    check_choice("trainer.precision", trainer.precision, PRECISIONS)
    if str(trainer.accelerator) in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", trainer.accelerator, "no CUDA GPU is visible on this machine "
                              "(torch.cuda.is_available() is False); run on the CPU with trainer=default")
    check_int("trainer.log_every_n_steps", trainer.log_every_n_steps, 1)
    check_float("trainer.gradient_clip_val", trainer.gradient_clip_val, 0.0, allow_none=True)
    if trainer.strategy not in TRAINER_STRATEGIES:  # ddp_spawn, fsdp, deepspeed, ...
        raise ConfigError("trainer.strategy", trainer.strategy, "allowed values are auto, ddp (ddp_spawn "
                          "loses strategy state such as replay buffers after every experience)")
    check_choice("trainer.process_group_backend", trainer.process_group_backend, (None, *PROCESS_GROUP_BACKENDS))

    ev = _typed("eval", cfg.eval)
    check_int("eval.every_n_iters", ev.every_n_iters, 1, allow_none=True)
    check_int("eval.subset_size", ev.subset_size, 1)
    check_int("eval.subset_seed", ev.subset_seed, 0)
    check_choice("eval.tasks", ev.tasks, TASK_SELECTIONS)
    check_int("eval.batch_size", ev.batch_size, 1)
    check_choice("eval.split", ev.split, SPLITS)
    validation = _typed("validation", cfg.get("validation", OmegaConf.create({})))
    if not 0.0 <= validation.fraction < 1.0:
        raise ConfigError("validation.fraction", validation.fraction, "must be in [0, 1) (0: no validation split)")
    check_int("validation.seed", validation.seed, 0)
    if ev.split == "validation" and validation.fraction == 0.0:
        raise ConfigError("eval.split", ev.split, "needs held-out training data: set validation.fraction "
                          "(e.g. validation.fraction=0.1)")

    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, DictConfig):  # the optimizer class checks the rest when it is built
        lr = optimizer.get("lr")
        if "lr" in optimizer and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            raise ConfigError("optimizer.lr", lr, "must be a number > 0")
        if "weight_decay" in optimizer:
            check_float("optimizer.weight_decay", optimizer.weight_decay, 0.0)

    head = _typed("head", cfg.head)
    check_choice("head.type", head.type, HEAD_TYPES)

    logger = _typed("logger", cfg.logger)
    logger_kinds(cfg.logger.get("kind"))
    check_choice("logger.mode", logger.mode, WANDB_MODES)

    plugins = cfg.get("plugin")
    if plugins is None:
        return
    if not isinstance(plugins, DictConfig):
        raise ConfigError("plugin", plugins, "select plugins as plugin=[name,...] (options in conf/plugin/)")
    for name, node in plugins.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"plugin.{name}", node, "each plugin config needs a _target_")
