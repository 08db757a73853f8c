"""Experiment loggers: Lightning's CSVLogger (default), WandbLogger, or none.

One logger run covers the whole stream; every evaluation is logged at ``step = cl/global_iter``
(monotonic across experiences), and W&B is told to use ``cl/global_iter`` as the x-axis.
W&B runs offline by itself when no API key is configured, so a run never needs the network.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from clplat.errors import ConfigError, check_choice

LOGGER_KINDS = ("csv", "wandb", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_api_key_available() -> bool:
    """True when wandb could authenticate: ``WANDB_API_KEY`` or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto``: respect ``WANDB_MODE`` if set, else online with a key and offline without one."""
    check_choice("logger.mode", mode, WANDB_MODES)
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if wandb_api_key_available() else "offline"


def build_loggers(cfg: Mapping[str, Any], run_dir: Path, run_name: str, config: dict[str, Any]) -> list[Logger]:
    kind = cfg.get("kind")
    check_choice("logger.kind", kind, LOGGER_KINDS)
    if kind == "none":
        return []
    if kind == "csv":
        return [CSVLogger(save_dir=str(run_dir), name="logs", version="csv")]
    mode = resolve_wandb_mode(cfg.get("mode", "auto"))
    tags = list(cfg.get("tags") or [])
    if not all(isinstance(t, str) for t in tags):
        raise ConfigError("logger.tags", tags, "must be a list of strings")
    logger = WandbLogger(
        project=cfg.get("project") or "clplat",
        entity=cfg.get("entity"),
        group=cfg.get("group"),
        tags=tags,
        name=run_name,
        save_dir=str(run_dir),
        mode=mode,
        config=config,
    )
    run = logger.experiment  # start the run now so its x-axis is defined before any metric
    if hasattr(run, "define_metric"):
        run.define_metric("cl/global_iter")
        run.define_metric("eval/*", step_metric="cl/global_iter")
        run.define_metric("cl/*", step_metric="cl/global_iter")
    return [logger]


def log_run_end(loggers: list[Logger], summary: Mapping[str, Any], plots: Mapping[str, Path],
                accuracy_matrix: list[list[float]] | None) -> None:
    """Summary metrics, plots and the accuracy matrix to every logger that can take them."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            for key, path in plots.items():
                logger.log_image(key=f"plots/{key}", images=[str(path)])
            if accuracy_matrix is not None:
                columns = ["after_experience", *[f"task_{j}" for j in range(len(accuracy_matrix))]]
                rows = [[i, *row] for i, row in enumerate(accuracy_matrix)]
                logger.log_table(key="accuracy_matrix", columns=columns, data=rows)
        logger.finalize("success")


def finish_wandb(loggers: list[Logger]) -> None:
    """Close the W&B run so that sweep jobs sharing a process never share a run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
