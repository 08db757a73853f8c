"""The Lightning Trainer a run uses: clplat's own options, any other Trainer option, user callbacks.

clplat drives Lightning one ``fit`` per experience with a budget of optimizer steps it sets
itself, its own loggers and its own callbacks (strategy hooks, evaluator, progress). Every other
``lightning.Trainer`` argument is reachable from the command line through ``trainer.lightning``
(``+trainer.lightning.profiler=simple``, ``+trainer.lightning.num_nodes=2``; an object as a
``_target_`` config: ``+trainer.lightning.profiler._target_=lightning.pytorch.profilers.AdvancedProfiler``), and any Lightning
callback through the ``callbacks`` group (``_target_`` configs that Hydra instantiates, run after
clplat's own: ``callbacks=lr_monitor`` or ``+callbacks.mine._target_=my_pkg.MyCallback``).

Arguments that would change what a run measures are refused with the reason, in one line:
the per-experience loop's own arguments (``max_epochs``, ``max_steps``, ``limit_*_batches``, ...)
and those that ``trainer.*`` already sets (``trainer.precision``, not
``trainer.lightning.precision``).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Mapping

import lightning as L
from omegaconf import DictConfig

from clplat.errors import ConfigError

SET_BY_TRAINER_CONFIG = {
    "accelerator": "accelerator", "devices": "devices", "strategy": "strategy", "precision": "precision",
    "gradient_clip_val": "gradient_clip_val", "deterministic": "deterministic",
    "log_every_n_steps": "log_every_n_steps", "enable_progress_bar": "enable_progress_bar",
    "enable_checkpointing": "checkpoint", "max_epochs": "epochs", "max_steps": "iterations",
}
"""Lightning argument -> the ``trainer.*`` key that sets it."""

SET_BY_THE_LOOP = {
    "logger": "the logger group sets the loggers (logger=csv|wandb|csv_wandb|none, +logger.<name>._target_=...)",
    "callbacks": "use the callbacks group (callbacks=<name> or +callbacks.<name>._target_=...)",
    "min_epochs": "the budget per experience is trainer.epochs or trainer.iterations",
    "min_steps": "the budget per experience is trainer.epochs or trainer.iterations",
    "max_time": "a time limit would end experiences early; bound the run with the launcher's time limit "
                "(SLURM requeues and resumes, docs/slurm.md)",
    "limit_train_batches": "the budget per experience is trainer.epochs or trainer.iterations",
    "accumulate_grad_batches": "the budget and the evaluation cadence count optimizer steps of one batch each",
    "fast_dev_run": "use a small budget (trainer.iterations=2) instead",
    "overfit_batches": "the experience's data is the stream's",
    "limit_val_batches": "evaluation is the evaluator's (eval.*), not Lightning's validation loop",
    "limit_test_batches": "evaluation is the evaluator's (eval.*), not Lightning's test loop",
    "limit_predict_batches": "evaluation is the evaluator's (eval.*), not Lightning's predict loop",
    "val_check_interval": "evaluation cadence is eval.every_n_iters",
    "check_val_every_n_epoch": "evaluation cadence is eval.every_n_iters",
    "num_sanity_val_steps": "evaluation is the evaluator's (eval.*), not Lightning's validation loop",
    "use_distributed_sampler": "clplat shards each experience's batches itself under DDP",
    "reload_dataloaders_every_n_epochs": "each experience builds its own batches",
    "default_root_dir": "the run directory is hydra.run.dir",
    "barebones": "it disables the loggers and callbacks a run records its results with",
}
"""Lightning arguments the per-experience loop sets itself, with why they are not options."""


def trainer_arguments() -> list[str]:
    return [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]


def lightning_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``trainer.lightning`` checked: keyword arguments for ``lightning.Trainer`` that clplat does
    not set itself. Raises ``ConfigError`` naming the key for anything else."""
    options = dict(options or {})
    allowed = trainer_arguments()
    for key in options:
        name = f"trainer.lightning.{key}"
        if key in SET_BY_TRAINER_CONFIG:
            raise ConfigError(name, options[key], f"clplat sets it from trainer.{SET_BY_TRAINER_CONFIG[key]}; "
                              f"set that key instead")
        if key in SET_BY_THE_LOOP:
            raise ConfigError(name, options[key], f"clplat's per-experience loop sets it: {SET_BY_THE_LOOP[key]}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean trainer.lightning.{close[0]}? " if close else ""
            raise ConfigError(name, options[key], f"not an argument of lightning.Trainer; {hint}options: "
                              + ", ".join(a for a in allowed if a not in SET_BY_TRAINER_CONFIG and a not in SET_BY_THE_LOOP))
    from clplat.experiment import instantiate_node

    # an object argument (a profiler, plugins) may be given as a _target_ config
    return {key: instantiate_node(value, f"trainer.lightning.{key}") if isinstance(value, Mapping) and "_target_" in value
            else value for key, value in options.items()}


def build_callbacks(node: DictConfig | None) -> list[L.Callback]:
    """The ``callbacks`` group: one Lightning callback per entry, in the order given."""
    from clplat.experiment import instantiate_node

    callbacks = []
    for name, spec in (node or {}).items():
        key = f"callbacks.{name}"
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise ConfigError(key, spec, "must be a config with a _target_ (a lightning.pytorch.Callback class)")
        callback = instantiate_node(spec, key)
        if not isinstance(callback, L.Callback):
            raise ConfigError(f"{key}._target_", spec["_target_"], "must build a lightning.pytorch.Callback, "
                              f"not {type(callback).__name__}")
        callbacks.append(callback)
    return callbacks
