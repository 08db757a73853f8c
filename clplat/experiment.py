"""Build a run from its config and train it experience after experience.

One Lightning ``Trainer`` serves the whole stream: each experience is one ``fit`` whose loader
yields exactly the experience's budget of batches (one Lightning epoch), so ``global_step`` —
logged as ``cl/global_iter`` — is monotonic across experiences and one logger run holds the
whole stream. The run directory receives the tidy results table after every boundary, so an
interrupted run keeps everything evaluated so far.

Multi-process runs (``trainer.devices > 1``, Lightning ``ddp``): every rank runs this same loop
(the extra ranks are started by the first ``fit``); rank 0 alone writes the run directory and
logs, every rank writes its own boundary checkpoint (see ``clplat.distributed``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clplat.analysis.plots import save_run_plots
from clplat.backbones.base import RecurrentBackbone, count_parameters
from clplat.checkpointing import latest_checkpoint, load_checkpoint, restore, save_boundary_checkpoint
from clplat.config import validate_config
from clplat.data import ExperienceLoader, iterations_for
from clplat.distributed import barrier, check_ddp_support, launch_rank, lightning_strategy
from clplat.errors import ConfigError, RunInterrupted, TrainingDiverged, check_int
from clplat.evaluation.evaluator import ContinualEvaluator, evaluation_metrics
from clplat.evaluation.metrics import accuracy_matrix, summarize
from clplat.heads import build_head
from clplat.logger_guard import guarded_loggers
from clplat.logging import (backfill_wandb_history, build_loggers, describe_wandb, finish_wandb, keep_csv_log_until,
                            log_run_end)
from clplat.module import ContinualModule
from clplat.progress import StreamProgress
from clplat.search_space import without_search_space
from clplat.stream import Stream, hold_out_validation
from clplat.hooks import Hooks
from clplat.strategy import Component, Plugin
from clplat.strategy_hooks import StrategyHooks
from clplat.trainer_options import build_callbacks, lightning_options
from clplat.seeds import SeedStream, seeded_generator

RESULT_FILES = ("metrics.csv", "summary.json", "accuracy_matrix.csv", "config.yaml")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


#: ``_target_`` prefixes of clplat before its methods and scenarios moved into the package (0.1.0
#: checkouts named them as top-level modules), and their names now. Saved run configs and
#: checkpoints keep the old ones.
LEGACY_TARGET_PREFIXES = {"strategies.": "clplat.strategies.", "streams.": "clplat.streams."}


def _has_legacy_target(value: Any) -> bool:
    """True when a ``_target_`` at any depth of ``value`` (a plain container) starts with an old prefix."""
    if isinstance(value, dict):
        target = value.get("_target_")
        if isinstance(target, str) and target.startswith(tuple(LEGACY_TARGET_PREFIXES)):
            return True
        return any(_has_legacy_target(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_legacy_target(v) for v in value)
    return False


def _renamed_target(target: str) -> str:
    for old, new in LEGACY_TARGET_PREFIXES.items():
        if target.startswith(old):
            return new + target[len(old):]
    return target


def with_current_targets(node: DictConfig) -> DictConfig:
    """``node``, or (when it names a class by an old module path, e.g. ``strategies.replay.Replay``
    in the config of a run made before the move into ``clplat``) a resolved copy naming it by the
    current one, so old run directories and checkpoints still build. ``node`` itself is left
    unchanged: a resumed run's config hash must stay that of its checkpoints."""
    if not isinstance(node, DictConfig) or not _has_legacy_target(OmegaConf.to_container(node, resolve=False)):
        return node

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (_renamed_target(v) if k == "_target_" and isinstance(v, str) else rename(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        return value

    return OmegaConf.create(rename(OmegaConf.to_container(node, resolve=True)))


def instantiate_node(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a builder's ``ConfigError`` through unwrapped, its
    relative key qualified with the path of the node that failed (``key``, or a node nested in
    it such as ``stream.source``), and turns a bad argument (unknown key, wrong type) into a
    ``ConfigError`` naming ``key``. A ``search_space`` declared next to the defaults is for
    ``clplat-tune``, not the constructor; an old ``_target_`` module path is read as its current
    one (``with_current_targets``)."""
    built = without_search_space(with_current_targets(node))
    try:
        return instantiate(built, **kwargs)
    except InstantiationException as err:
        wrapper, cause = err, err.__cause__
        while cause is not None and not isinstance(cause, ConfigError) and cause.__cause__ is not None:
            wrapper, cause = cause, cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause.within(key + _nested_path(wrapper, built)) from None
        reason = str(err.__cause__ or err).splitlines()[0]
        raise ConfigError(key, node.get("_target_"), f"could not be built: {reason}") from err


def _nested_path(err: BaseException, node: DictConfig) -> str:
    """Where under ``node`` the call that ``err`` reports failed (``.source``; empty: ``node``'s
    own target), read from the ``full_key:`` line Hydra ends its message with."""
    lines = [line for line in str(err).splitlines() if line.startswith("full_key: ")]
    if not lines:
        return ""
    failed, own = lines[-1].removeprefix("full_key: "), node._get_full_key(None)
    return failed[len(own):] if own else f".{failed}"


def build_hooks(cfg: DictConfig) -> Hooks:
    """The configured strategy with its plugins, behind the run's dispatcher (cheap: no data or
    buffers are allocated). A plugin named as the strategy is refused by ``Hooks``."""
    base = instantiate_node(cfg.strategy, "strategy")
    if not isinstance(base, Component):
        raise ConfigError("strategy._target_", cfg.strategy.get("_target_"), "must build a clplat.strategy.Strategy")
    plugins, keys = [], ["strategy"]
    for name, node in (cfg.get("plugin") or {}).items():  # None or an empty mapping: no plugins
        plugin = instantiate_node(node, f"plugin.{name}")
        if not isinstance(plugin, Plugin):
            raise ConfigError(f"plugin.{name}._target_", node.get("_target_"), "must build a clplat.strategy.Plugin")
        plugins.append(plugin)
        keys.append(f"plugin.{name}")
    return Hooks(base, plugins, keys)


def build_optimizer(cfg: DictConfig) -> Any:
    """The optimizer factory, tried once on a dummy parameter so a bad value fails at start-up."""
    factory = instantiate_node(cfg.optimizer, "optimizer")
    if not callable(factory):
        raise ConfigError("optimizer._partial_", cfg.optimizer.get("_partial_"), "must be true (a factory)")
    try:
        factory([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as err:
        reason = str(err).splitlines()[0]
        key = _optimizer_key(reason, [str(k) for k in cfg.optimizer.keys()])
        if key is None:
            raise ConfigError("optimizer", cfg.optimizer.get("_target_"), reason) from None
        raise ConfigError(f"optimizer.{key}", cfg.optimizer.get(key), reason) from None
    return factory


_OPTIMIZER_WORDS = {"learning rate": "lr", "epsilon": "eps", "beta": "betas"}


def _optimizer_key(reason: str, keys: list[str]) -> str | None:
    """The optimizer option a torch error is about ("Invalid learning rate: -1" -> ``lr``)."""
    text = reason.lower()
    for words, key in _OPTIMIZER_WORDS.items():
        if words in text and key in keys:
            return key
    return next((k for k in keys if not k.startswith("_") and k in text), None)


def build_backbone(cfg: DictConfig, input_size: int) -> RecurrentBackbone:
    backbone = instantiate_node(cfg.backbone, "backbone", input_size=input_size)
    if not isinstance(backbone, RecurrentBackbone):
        raise ConfigError("backbone._target_", cfg.backbone.get("_target_"),
                          "must build a clplat.backbones.RecurrentBackbone")
    return backbone


def build_module(cfg: DictConfig, stream: Stream, hooks: Hooks) -> ContinualModule:
    """Backbone, head and the run's hooks in one LightningModule, shaped for ``stream``."""
    backbone = build_backbone(cfg, input_size=stream.input_shape[1])
    head = build_head(cfg.head.type, cfg.head.mask_unseen, stream, backbone.out_dim)
    return ContinualModule(backbone, head, hooks, build_optimizer(cfg))


def build_stream(cfg: DictConfig) -> Stream:
    """The configured stream, with its validation split held out when ``validation.fraction`` > 0."""
    stream = instantiate_node(cfg.stream, "stream")
    if not isinstance(stream, Stream):
        raise ConfigError("stream._target_", cfg.stream.get("_target_"), "must build a clplat.stream.Stream")
    validation = cfg.get("validation") or {}
    if validation.get("fraction", 0.0) > 0.0:
        stream = hold_out_validation(stream, float(validation.fraction), int(validation.get("seed", 0)))
    return stream


def quiet_lightning() -> None:
    """Keep the console for clplat's own progress lines: Lightning's per-fit notices (device
    summary, 'fit stopped', tips) repeat at every experience and say nothing new. On a machine
    with SLURM installed, Lightning also warns at every fit that ``srun`` is not used: clplat's
    SLURM jobs are started by the submitit launcher, and a single process needs no ``srun``."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


def prepare_run_dir(run_dir: Path) -> None:
    """Refuse a directory that already holds results: a run never overwrites another's."""
    existing = [name for name in RESULT_FILES if (run_dir / name).exists()]
    if existing:
        raise ConfigError("run_dir", str(run_dir), f"already holds results ({', '.join(existing)}); "
                          "choose a new directory (the default is a fresh timestamped one)")
    run_dir.mkdir(parents=True, exist_ok=True)


def config_hash(config: dict[str, Any]) -> str:
    """Identifies the experiment independently of where and how it ran (run_dir, resume and
    console options excluded), so a resumed run matches its checkpoints."""
    payload = {k: v for k, v in config.items() if k not in ("run_dir", "resume", "print_summary", "plots")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    import hydra
    import lightning

    from clplat import __version__

    return {"clplat": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "lightning": lightning.__version__, "hydra": hydra.__version__, "numpy": np.__version__}


def run_experiment(cfg: DictConfig, resume: bool = False) -> RunResult:
    """Train ``cfg``'s strategy over ``cfg``'s stream and write the run directory.

    With ``resume``, ``cfg.run_dir`` is an interrupted run of the same config: its last boundary
    checkpoint is restored and training continues with the next experience.
    """
    started = time.perf_counter()
    quiet_lightning()
    validate_config(cfg)
    run_dir = Path(cfg.run_dir)
    rank = launch_rank()  # the trainer confirms it below; the extra ranks find rank 0's directory
    if resume:
        check_resumable(run_dir)
    elif rank == 0:
        prepare_run_dir(run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    stream = build_stream(cfg)
    hooks = build_hooks(cfg)
    hooks.check_stream(stream)
    world_size = check_ddp_support(cfg.trainer, hooks)
    if world_size > 1:
        if not _hydra_choices() and "LOCAL_RANK" not in os.environ:
            # Lightning's ddp launcher re-runs sys.argv for the other ranks: that must be clplat-train
            raise ConfigError("trainer.devices", cfg.trainer.devices, "multi-process runs start from the command "
                              "line (clplat-train / python -m clplat.train), not from run_experiment in-process")
        hooks.distribute(rank, world_size)
    module = build_module(cfg, stream, hooks)
    ev = cfg.eval
    evaluator = ContinualEvaluator(stream, ev.every_n_iters, ev.subset_size, ev.tasks, ev.batch_size,
                                   ev.initial, subset_seed=ev.subset_seed, split=ev.split)
    progress = StreamProgress.from_config(cfg, evaluator, len(stream))
    if rank > 0:
        progress.mode = "quiet"  # rank 0 reports for the run

    config = OmegaConf.to_container(cfg, resolve=True)
    digest = config_hash(config)
    if not resume and rank == 0:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    choices = _hydra_choices()
    run_name = "_".join(filter(None, [choices.get("stream"), choices.get("backbone"), choices.get("strategy")])) or run_dir.name
    loggers = guarded_loggers(lambda: build_loggers(cfg.logger, run_dir, run_name, config)) if rank == 0 else []
    tcfg = cfg.trainer
    trainer = L.Trainer(**{
        "accelerator": tcfg.accelerator, "devices": tcfg.devices, "strategy": lightning_strategy(tcfg),
        "precision": tcfg.precision, "use_distributed_sampler": False,
        "gradient_clip_val": tcfg.gradient_clip_val, "deterministic": tcfg.deterministic,
        "logger": loggers or False,
        # the strategy hooks first, the user's callbacks after clplat's own
        "callbacks": [StrategyHooks(), evaluator, progress, *build_callbacks(cfg.get("callbacks"))],
        "log_every_n_steps": tcfg.log_every_n_steps,
        "enable_progress_bar": tcfg.enable_progress_bar, "enable_model_summary": False,
        "enable_checkpointing": False, "num_sanity_val_steps": 0, "limit_val_batches": 0,
        "max_epochs": 0, "default_root_dir": str(run_dir),
        **lightning_options(tcfg.get("lightning")),
    })
    if (trainer.global_rank, trainer.world_size) != (rank, world_size):
        raise RuntimeError(f"process is rank {trainer.global_rank} of {trainer.world_size} for Lightning, "
                           f"rank {rank} of {world_size} for clplat (LOCAL_RANK set by hand?)")
    progress.info(stream.describe())
    progress.info(f"{run_name} -> {run_dir}")
    if (wandb_line := describe_wandb(loggers)) is not None:
        progress.info(wandb_line)
    hooks.setup(module, stream)
    start = 0
    earlier_wall_time = 0.0  # of the attempts before this one, up to the checkpoint resumed from
    if resume and (found := latest_checkpoint(run_dir, rank, world_size)) is not None:
        checkpoint = load_checkpoint(found[1], digest, world_size)
        start = restore(trainer, module, checkpoint)
        earlier_wall_time = float(checkpoint["clplat"].get("wall_time_s", 0.0))
        kept = keep_csv_log_until(loggers, trainer.global_step)
        backfill_wandb_history(loggers, run_dir, [evaluation_metrics(e) for e in evaluator.results.evaluations], kept)
        progress.info(f"resuming after experience {start} (iteration {trainer.global_step}) from {found[1]}")
    elif resume:
        keep_csv_log_until(loggers, -1)
    online = online_regime(stream)
    hooks.plan(lambda data: experience_iterations(len(data), tcfg, online))
    if online is not None:
        progress.info(f"online stream: one pass per experience in batches of {online['batch_size']} "
                      "(trainer.epochs, trainer.iterations and trainer.batch_size are ignored)")
    try:
        with stop_on_signals():
            for exp in stream.experiences[start:]:
                _train_experience(trainer, module, hooks, evaluator, exp, tcfg, cfg.seed, online)
                evaluation = evaluator.evaluate_boundary(trainer, module)
                if rank == 0:
                    evaluator.results.save_csv(run_dir / "metrics.csv")
                if tcfg.checkpoint:
                    save_boundary_checkpoint(trainer, run_dir, exp.index, {
                        "config_hash": digest, "config": config,
                        "wall_time_s": earlier_wall_time + time.perf_counter() - started})
                progress.experience_done(exp.index, trainer.global_step, evaluation.accuracies[: exp.index + 1])
        barrier()  # every rank's last checkpoint is on disk before summary.json says the run finished
        if rank > 0:
            return RunResult(run_dir, {})

        table = evaluator.results.to_frame()
        R = accuracy_matrix(table, num_tasks=len(stream))
        np.savetxt(run_dir / "accuracy_matrix.csv", R, delimiter=",", fmt="%.6f",
                   header=",".join(f"task_{j}" for j in range(len(stream))), comments="")
        plots = save_run_plots(table, run_dir) if cfg.get("plots", True) else {}
        summary = {
            **summarize(table, scenario=stream.scenario.value),
            "strategy": hooks.name,
            "stream": stream.name,
            "scenario": stream.scenario.value,
            "num_experiences": len(stream),
            "global_iters": trainer.global_step,
            "eval": {"split": ev.split, "every_n_iters": ev.every_n_iters, "subset_size": ev.subset_size,
                     "tasks": ev.tasks, "averaging": "macro over tasks"},
            "params": {"backbone": count_parameters(module.backbone), "head": count_parameters(module.head)},
            "strategy_state": hooks.summary(),
            "resources": hooks.resources(cfg.get("memory_budget_bytes")),  # docs/metrics.md
            "seed": cfg.seed,
            "config_hash": digest,
            "resumed": resume,
            "versions": versions(),
            # a resumed run adds the earlier attempts' time up to its checkpoint (work redone after
            # it is counted once, in this attempt)
            "wall_time_s": round(earlier_wall_time + time.perf_counter() - started, 3),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
        log_run_end(loggers, summary, plots, R.tolist())
    except (TrainingDiverged, RunInterrupted):
        if rank == 0:
            evaluator.results.save_csv(run_dir / "metrics.csv")  # everything evaluated so far
        raise
    finally:
        progress.close()
        finish_wandb(loggers)
    progress.run_done(run_dir, summary)
    if cfg.get("print_summary", True) and not progress.quiet:
        print(format_summary(R, summary), flush=True)
    return RunResult(run_dir, summary)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into ``RunInterrupted`` so the loop can save before exiting (and
    Lightning's own Ctrl+C handling, which exits without telling us, never sees a KeyboardInterrupt);
    in a SLURM job also the time-limit signal, so that the job saves before it is requeued
    (``clplat.slurm``)."""
    from clplat.slurm import stop_signals

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT, *stop_signals())}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_resumable(run_dir: Path) -> None:
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError("resume", str(run_dir), "is not a clplat run directory (no config.yaml)")
    if (run_dir / "summary.json").is_file():
        raise ConfigError("resume", str(run_dir), "finished already (summary.json exists); nothing to resume")


def online_regime(stream: Stream) -> dict[str, int] | None:
    """``{"batch_size": b}`` when the stream asks to be trained online (``clplat.streams.online``), else None.

    The stream carries the regime because it cannot set trainer options; checked here so a
    hand-written metadata entry fails with a clear line rather than inside the loader.
    """
    online = stream.metadata.get("online")
    if online is None:
        return None
    batch_size = online.get("batch_size") if isinstance(online, dict) else None
    check_int("stream.batch_size", batch_size, 1)
    return {"batch_size": batch_size}


def experience_iterations(num_samples: int, tcfg: DictConfig, online: dict[str, int] | None, scale: int = 1) -> int:
    """Optimizer steps of one experience training on ``num_samples`` samples: the trainer budget
    (times ``scale``), or one pass in the online regime whatever the budget says. The loop and
    ``Hooks.plan`` both use it, so a strategy's step count in advance is the loop's."""
    if online is not None:
        return iterations_for(num_samples, online["batch_size"], epochs=1, iterations=None)
    return iterations_for(num_samples, tcfg.batch_size, tcfg.epochs, tcfg.iterations, scale)


def _train_experience(trainer: L.Trainer, module: ContinualModule, hooks: Hooks, evaluator: ContinualEvaluator,
                      exp, tcfg: DictConfig, seed: int, online: dict[str, int] | None = None) -> None:
    evaluator.begin_experience(exp.index)
    module.head.observe_classes(exp.classes)
    hooks.before_experience(exp)
    data = hooks.train_data(exp)
    iters = 0
    batch_size = tcfg.batch_size if online is None else online["batch_size"]
    if data is not None and len(data) > 0:
        iters = experience_iterations(len(data), tcfg, online, hooks.budget_scale(exp))
    if iters > 0:
        loader = ExperienceLoader(data, batch_size, iters, seeded_generator(seed, SeedStream.TRAIN_BATCHES, exp.index),
                                  rank=trainer.global_rank, world_size=trainer.world_size)
        trainer.fit_loop.max_epochs = trainer.current_epoch + 1
        with warnings.catch_warnings():
            # tensors sliced in-process by our own loader: Lightning's worker hints do not apply
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*The number of training batches.*")
            trainer.fit(module, train_dataloaders=loader)
    hooks.after_experience(exp)
    hooks.record_memory()  # the peak in summary.json's resources


def _hydra_choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str)}


def format_summary(R: np.ndarray, summary: dict[str, Any]) -> str:
    """The short table a run ends with: accuracy after each experience and the headline metrics."""
    n = R.shape[0]
    lines = ["", "accuracy after each experience (rows) on each task (columns):",
             "        " + " ".join(f"task{j:<3d}" for j in range(n)) + "   avg"]
    for i in range(n):
        cells = " ".join("   -   " if np.isnan(R[i, j]) else f"{R[i, j]:7.3f}" for j in range(n))
        row = R[i, : i + 1]
        lines.append(f"exp {i:<3d} {cells} {np.nanmean(row):6.3f}")

    def fmt(key: str) -> str:
        value = summary.get(key)
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines.append("")
    lines.append("  ".join(f"{k}={fmt(k)}" for k in ("avg_acc", "forgetting", "bwt", "min_acc", "wc_acc",
                                                     "sg_depth_mean", "wf10")))
    lines.append(f"wall time {summary['wall_time_s']:.1f}s, {summary['global_iters']} iterations")
    return "\n".join(lines)


__all__ = ["run_experiment", "build_hooks", "build_stream", "RunResult", "format_summary"]
