"""Experiment loggers: the ``logger`` group's ``_target_`` configs built for a run, and W&B as clplat runs it.

Every entry of the ``logger`` group (``clplat.logger_config``) is instantiated by Hydra; clplat
adds the arguments only the run knows (``build_loggers``). Lightning's CSVLogger is the default,
``wandb_logger`` is clplat's W&B logger, and any other Lightning logger can be added by config.

One logger run covers the whole stream; every evaluation is logged at ``step = cl/global_iter``
(monotonic across experiences), and W&B is told to use ``cl/global_iter`` as the x-axis.
W&B runs offline by itself when no API key is configured, so a run never needs the network;
``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later.

W&B runs are organised for comparing sweeps: the runs of one Hydra multirun share a *group*
(the sweep directory), their *job type* is the swept setting without the seed (so W&B's
grouped charts average exactly the runs a ``clplat-report`` row averages), and every run is
tagged ``strategy:…``, ``stream:…``, ``backbone:…``. At the end a run logs its plots, the
accuracy matrix, its results row and the tidy evaluation table as W&B tables, and a per-task
accuracy chart, so the W&B page holds what the run directory holds.

The run wraps these loggers in ``clplat.logger_guard.GuardedLogger``: a logger that fails
(W&B unreachable, a full disk) costs a warning, never the run; ``log_run_end`` and
``finish_wandb`` accept wrapped and bare loggers alike.
"""

from __future__ import annotations

import json
import netrc
import os
import re
import shutil
import warnings
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from clplat.errors import ConfigError
from clplat.logger_config import logger_entries
from clplat.logger_guard import GuardedLogger, unwrap


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
    """``auto``: respect ``WANDB_MODE`` if set, else online with a key and offline without one
    (``mode`` is one of ``clplat.choices.WANDB_MODES``: ``clplat.config`` checks it)."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if wandb_api_key_available() else "offline"


def build_loggers(node: Any, run_dir: Path, run_name: str, config: dict[str, Any]) -> list[Logger]:
    """One logger per entry of the ``logger`` group (``clplat.logger_config``), in the order given.

    Hydra instantiates each entry; clplat then passes what only the run knows to a logger whose
    signature names it: ``save_dir`` (the run directory), ``run_name`` and ``run_config`` (the
    resolved config, passed as it is: Hydra would instantiate the ``_target_`` nodes inside it).
    An entry that sets one of them itself keeps its own value.
    """
    from clplat.experiment import instantiate_node

    run = {"save_dir": str(run_dir), "run_name": run_name, "run_config": config}
    loggers: list[Logger] = []
    for name, entry in logger_entries(node).items():
        key = f"logger.{name}"
        accepted, _ = _parameters(logger_target(key, entry["_target_"]))
        factory = instantiate_node(entry, key, _partial_=True, _convert_="all")
        try:
            logger = factory(**{k: v for k, v in run.items() if k in accepted and k not in entry})
        except TypeError as err:  # an argument the class does not take, or one it lacks
            raise ConfigError(key, entry["_target_"], f"could not be built: {str(err).splitlines()[0]}") from None
        if not isinstance(logger, Logger):
            raise ConfigError(f"{key}._target_", entry["_target_"], "must build a lightning.pytorch.loggers.Logger, "
                              f"not {type(logger).__name__}")
        loggers.append(logger)
    return loggers


def check_logger_targets(node: Any) -> None:
    """Every logger entry names an importable Logger class (or a factory) that takes its keys:
    the preflight's check, which builds nothing (a W&B logger would start a run)."""
    for name, entry in logger_entries(node).items():
        key = f"logger.{name}"
        target = logger_target(key, entry["_target_"])
        if isinstance(target, type) and not issubclass(target, Logger):
            raise ConfigError(f"{key}._target_", entry["_target_"], "must be a lightning.pytorch.loggers."
                              f"Logger class (or a function returning one), not {target.__name__}")
        accepted, open_ended = _parameters(target)
        if open_ended:  # extra keys go on (WandbLogger's to wandb.init): checked when the logger is built
            continue
        for option in entry:
            if not str(option).startswith("_") and option not in accepted:
                raise ConfigError(f"{key}.{option}", entry[option], f"not an argument of {entry['_target_']}; "
                                  f"its arguments: {', '.join(sorted(accepted))}")


def logger_target(key: str, target: str) -> Any:
    """The class or factory a logger entry names; ``ConfigError`` when it cannot be imported.

    Imported here rather than with ``hydra.utils.get_object``, which logs its failure on several
    lines before raising: the user gets one.
    """
    import importlib

    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as err:  # noqa: BLE001 - any import failure is the entry's
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{key}._target_", target, f"cannot be imported ({reason})") from None


def _parameters(target: Any) -> tuple[set[str], bool]:
    """The keyword parameters ``target`` names, and whether it takes others (``**kwargs``, or a
    signature that cannot be read)."""
    import inspect

    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters)


def wandb_logger(*, save_dir: str, run_name: str, run_config: dict[str, Any], project: str | None,
                 entity: str | None, group: str | None, tags: Sequence[str], mode: str,
                 **options: Any) -> WandbLogger:
    """Lightning's ``WandbLogger`` as clplat runs it (``conf/logger/wandb.yaml``, the ``_target_``).

    Silent (one line of ``describe_wandb`` instead of wandb's banner), offline without an API key
    (``mode: auto``), named and grouped for sweeps (``wandb_run_metadata``), and resumed: a run
    that finds an earlier attempt's W&B run in ``save_dir`` continues it under that attempt's
    name, group and job type. ``options`` go to ``WandbLogger`` (and on to ``wandb.init``).
    """
    import wandb

    run_dir = Path(save_dir)
    wandb.setup(wandb.Settings(silent=True))  # silent from the start: init's own warnings included
    previous = previous_wandb_run_id(run_dir)  # a resumed run continues its W&B run
    identity = run_dir / "wandb" / WANDB_IDENTITY_FILE
    if previous and identity.is_file():  # with the first attempt's name, group and job type (a
        meta = json.loads(identity.read_text())  # sweep job resumed by hand runs outside its sweep)
    else:
        meta = wandb_run_metadata(run_config, run_name, group, list(tags))
    logger = WandbLogger(
        project=project,
        entity=entity,
        save_dir=save_dir,
        mode=resolve_wandb_mode(mode),
        config=run_config,
        # wandb's own banner, sync hints and summary (about 36 lines a run) give way to the one
        # line of describe_wandb() in the run's progress output
        settings=wandb.Settings(silent=True),
        **({"id": previous, "resume": "allow"} if previous else {}),
        **meta,
        **options,
    )
    run = logger.experiment  # start the run now so its x-axis is defined before any metric
    if hasattr(run, "define_metric"):
        run.define_metric("cl/global_iter")
        run.define_metric("eval/*", step_metric="cl/global_iter")
        run.define_metric("train/*", step_metric="cl/global_iter")
        run.define_metric("cl/experience", step_metric="cl/global_iter")
    identity.parent.mkdir(parents=True, exist_ok=True)
    identity.write_text(json.dumps(meta))
    return logger


def describe_wandb(loggers: Sequence[Logger]) -> str | None:
    """One line naming the W&B run and where it goes (its page online, its folder offline)."""
    for logger in loggers:
        inner = unwrap(logger)
        if isinstance(inner, WandbLogger):
            run = inner.experiment
            where = getattr(run, "url", None) or f"offline in {Path(run.dir).parent} (upload: wandb sync <that folder>)"
            return f"W&B run {run.name} ({run.id}): {where}"
    return None


def keep_csv_log_until(loggers: Sequence[Logger], step: int) -> list[dict[str, str]]:
    """Keep a resumed run's CSV log up to ``step`` (the checkpoint it resumes from).

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens; the rows the
    checkpoint covers are read first and written back, and the rows of work that the resumed
    run redoes (after ``step``) are dropped, so the log reads like one uninterrupted run's.
    """
    import csv

    kept: list[dict[str, str]] = []
    for logger in loggers:
        inner = unwrap(logger)
        if not isinstance(inner, CSVLogger) or inner._experiment is not None:
            continue
        path = Path(inner.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= step]
        with warnings.catch_warnings():  # Lightning warns that it deletes the file: it is read above
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = inner.experiment  # opening removes the old file
        writer.metrics = kept = [{k: v for k, v in row.items() if v != ""} for row in rows]
        writer.save()
    return kept


def backfill_wandb_history(loggers: Sequence[Logger], run_dir: Path, evaluations: Sequence[Mapping[str, float]],
                           csv_rows: Sequence[Mapping[str, str]]) -> int:
    """Log again, into a resumed W&B run, the history its earlier attempts did not record.

    A run killed with SIGKILL loses what wandb-core had not flushed to its record file (often the
    whole history). Its evaluations are in the checkpoint (``evaluations``: the loggers' metrics of
    each row up to the resumed step) and its training losses in the kept CSV log (``csv_rows``,
    when the CSV logger is on); every row that no attempt's record file holds is logged again, at
    its own ``cl/global_iter``, so the W&B history reads from step 0. Returns the rows logged.
    """
    from collections import Counter

    from clplat.wandb_records import recorded_count

    losses = [{"train/loss": float(r["train/loss"]), "cl/global_iter": int(r["cl/global_iter"])}
              for r in csv_rows if r.get("train/loss") and r.get("cl/global_iter")]
    logged = 0
    for logger in loggers:
        inner = unwrap(logger)
        if not isinstance(inner, WandbLogger):
            continue
        run_id = inner.experiment.id
        missing = []
        for rows, key in ((losses, "train/loss"), (list(evaluations), "eval/acc_seen")):
            have = Counter(recorded_count(run_dir, run_id, key))
            for row in rows:  # of several rows at one step, a killed attempt recorded the first ones
                step = int(row["cl/global_iter"])
                if have[step] > 0:
                    have[step] -= 1
                else:
                    missing.append(row)
        # in the order of the original run: a step's training loss, then its evaluations
        for row in sorted(missing, key=lambda r: (int(r["cl/global_iter"]), "train/loss" not in r)):
            inner.log_metrics(dict(row), step=int(row["cl/global_iter"]))
            logged += 1
    return logged


WANDB_IDENTITY_FILE = "clplat_run.json"
"""The W&B run's name, group, job type and tags, kept under ``<run_dir>/wandb`` for resuming."""


def previous_wandb_run_id(run_dir: Path) -> str | None:
    """The id of the W&B run that an earlier attempt of this run started, else ``None``.

    W&B keeps a run's local files in ``<run_dir>/wandb/run-<time>-<id>`` (``offline-run-...``
    offline). Only a resumed run (``resume=``, or a SLURM job requeued after preemption or its
    time limit) finds one: a new run never starts in a directory holding results. Reusing the id
    (with ``resume="allow"``) makes the continuation the same W&B run instead of a second one;
    offline, each attempt writes its own ``offline-run-*`` directory under that one id.
    """
    attempts = []
    for path in (run_dir / "wandb").glob("*run-*-*"):
        # run-<YYYYMMDD_HHMMSS>-<id>, and -<n> after it when an attempt started in the same second
        match = _WANDB_RUN_DIR.match(path.name)
        if path.is_dir() and match:
            attempts.append((match["stamp"], int(match["n"] or 0), match["id"]))
    return max(attempts)[2] if attempts else None


_WANDB_RUN_DIR = re.compile(r"^(?:offline-)?run-(?P<stamp>\d{8}_\d{6})-(?P<id>[a-z0-9]+)(?:-(?P<n>\d+))?$")


# -- W&B run identity ------------------------------------------------------------------------

_TAG_GROUPS = ("strategy", "stream", "backbone")
_WANDB_MAX_TAG = 64  # W&B rejects longer tags and job types
_WANDB_MAX_GROUP = 128


def _hydra() -> Any:
    """Hydra's runtime config of this job, or ``None`` outside a Hydra app (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a core dependency
        return None
    return HydraConfig.get() if HydraConfig.initialized() else None


def component_names(config: Mapping[str, Any]) -> dict[str, str]:
    """Short names of the strategy, stream and backbone: Hydra's choices (``strategy=replay``),
    else derived from the config (the stream's ``name``, the class name of the ``_target_``)."""
    hydra_cfg = _hydra()
    choices = dict(hydra_cfg.runtime.choices) if hydra_cfg is not None else {}
    names: dict[str, str] = {}
    for group in _TAG_GROUPS:
        choice = choices.get(group)
        node = config.get(group) if isinstance(config.get(group), Mapping) else {}
        if isinstance(choice, str):
            names[group] = choice
        elif node.get("name"):
            names[group] = str(node["name"])
        elif node.get("_target_"):
            names[group] = str(node["_target_"]).rsplit(".", 1)[-1].lower().removesuffix("backbone")
    return names


def swept_overrides(sweep_dir: Path, job_overrides: Sequence[str]) -> list[str]:
    """The job's overrides of the keys the sweep varies (from ``<sweep_dir>/multirun.yaml``),
    seed excluded: the setting that this run repeats over seeds."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        task = list(OmegaConf.load(path).hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(task)
    except Exception:  # noqa: BLE001 - metadata only: a run never fails over its W&B job type
        return []
    swept = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()} - {"seed"}
    return [o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in swept]


def wandb_run_metadata(config: Mapping[str, Any], run_name: str, group: str | None,
                       tags: Sequence[str]) -> dict[str, Any]:
    """``name``, ``group``, ``job_type`` and ``tags`` of the W&B run.

    In a multirun: group = the sweep directory (``<date>/<time>``) unless ``logger.wandb.group`` is
    set, job type = the swept overrides without the seed, name = ``<run_name>#<job number>``.
    """
    names = component_names(config)
    all_tags = [*tags, *(f"{group_}:{name}" for group_, name in names.items())]
    if config.get("seed") is not None:  # runs that differ only by seed get distinct names
        run_name = f"{run_name}-seed{config['seed']}"
    meta: dict[str, Any] = {"name": run_name, "group": group, "job_type": "train",
                            "tags": list(dict.fromkeys(t[:_WANDB_MAX_TAG] for t in all_tags))}
    hydra_cfg = _hydra()
    from hydra.types import RunMode

    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return meta
    sweep_dir = Path(str(hydra_cfg.sweep.dir))
    if group is None:
        meta["group"] = "/".join(sweep_dir.parts[-2:])[-_WANDB_MAX_GROUP:]
    setting = swept_overrides(sweep_dir, list(hydra_cfg.overrides.task))
    if setting:
        meta["job_type"] = ",".join(setting)[:_WANDB_MAX_TAG]
    meta["name"] = f"{run_name}#{hydra_cfg.job.num}"
    return meta


def log_run_end(loggers: list[Logger], summary: Mapping[str, Any], plots: Mapping[str, Path],
                accuracy_matrix: list[list[float]] | None) -> None:
    """Summary metrics, plots, tables and the per-task chart to every logger that can take them.

    The tidy evaluation table is read back from ``<run_dir>/metrics.csv`` (the logger's save
    directory), the file every other consumer reads too.
    """
    for logger in loggers:
        inner = unwrap(logger)
        if isinstance(inner, WandbLogger):
            if isinstance(logger, GuardedLogger):
                logger.call("the end-of-run tables", _log_wandb_run_end, inner, summary, plots, accuracy_matrix)
            else:
                _log_wandb_run_end(inner, summary, plots, accuracy_matrix)
        logger.finalize("success")


_RESULT_KEYS = ("avg_acc", "forgetting", "bwt", "fwt", "min_acc", "wc_acc", "wf10", "sg_depth_mean",
                "sg_transient_mean", "sg_permanent_mean", "sg_recovery_iters_mean", "global_iters", "wall_time_s")


def _log_wandb_run_end(logger: WandbLogger, summary: Mapping[str, Any], plots: Mapping[str, Path],
                       accuracy_matrix: list[list[float]] | None) -> None:
    import pandas as pd
    import wandb

    run = logger.experiment
    run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    for key, path in plots.items():
        logger.log_image(key=f"plots/{Path(key).stem}", images=[str(path)])
    if accuracy_matrix is not None:
        columns = ["after_experience", *[f"task_{j}" for j in range(len(accuracy_matrix))]]
        rows = [[i, *row] for i, row in enumerate(accuracy_matrix)]
        logger.log_table(key="accuracy_matrix", columns=columns, data=rows)
    names = component_names(dict(run.config))
    identity = {"run": run.name, **{g: names.get(g) for g in _TAG_GROUPS}, "seed": summary.get("seed")}
    results = {**identity, **{k: summary.get(k) for k in _RESULT_KEYS}}
    logger.log_table(key="results", columns=list(results), data=[list(results.values())])

    metrics_csv = Path(logger.save_dir or ".") / "metrics.csv"
    if not metrics_csv.is_file():
        return
    table = pd.read_csv(metrics_csv)
    shown = thin_evaluations(table, wandb.Table.MAX_ROWS)
    logger.log_table(key="evaluations", dataframe=shown)
    run.log({"curves/accuracy_per_task": per_task_chart(table)})
    # the full table as a copy in the run's files (run.save would link it by absolute path, which
    # dangles once the run folder moves, e.g. to another machine for `wandb sync`)
    shutil.copyfile(metrics_csv, Path(run.dir) / "metrics.csv")


def thin_evaluations(table: Any, max_rows: int) -> Any:
    """At most ``max_rows`` rows of the tidy table for a W&B table (which truncates beyond its
    limit): every boundary and initial evaluation, and evaluation times evenly spread between."""
    if len(table) <= max_rows:
        return table
    import numpy as np

    times = np.unique(table["global_iter"].to_numpy())
    rows_per_time = int(table.groupby("global_iter").size().max())  # the most tasks evaluated at once
    flags = table["boundary"].astype(str).str.lower().isin(("true", "1")) | \
        table["initial"].astype(str).str.lower().isin(("true", "1"))
    kept = set(table.loc[flags, "global_iter"].tolist())
    spread = max_rows // rows_per_time - len(kept)
    if spread > 0:
        kept |= set(times[np.unique(np.linspace(0, len(times) - 1, spread).round().astype(int))].tolist())
    return table.loc[table["global_iter"].isin(kept)].head(max_rows)


def per_task_chart(table: Any) -> Any:
    """``wandb.plot.line_series`` of every task's accuracy against ``cl/global_iter`` (one chart)."""
    import wandb

    seen = table.loc[table["eval_task"] <= table["experience"]]
    tasks = sorted(int(t) for t in seen["eval_task"].unique())
    xs = [seen.loc[seen["eval_task"] == t, "global_iter"].tolist() for t in tasks]
    ys = [seen.loc[seen["eval_task"] == t, "accuracy"].tolist() for t in tasks]
    return wandb.plot.line_series(xs=xs, ys=ys, keys=[f"task {t}" for t in tasks],
                                  title="Accuracy per task", xname="cl/global_iter")


def finish_wandb(loggers: list[Logger], exit_code: int | None = None) -> None:
    """Close the W&B run so that sweep jobs sharing a process never share a run.

    Called from a ``finally`` block: without ``exit_code``, a run is marked failed (exit code 1)
    when an exception is propagating, so a crashed job does not look finished in W&B.
    """
    if exit_code is None:
        exit_code = 1 if sys.exc_info()[0] is not None else 0
    for logger in loggers:
        if isinstance(unwrap(logger), WandbLogger):
            import wandb

            if isinstance(logger, GuardedLogger):
                logger.call("wandb.finish", wandb.finish, exit_code=exit_code)
            else:
                wandb.finish(exit_code=exit_code)
