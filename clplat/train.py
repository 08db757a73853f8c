"""``clplat-train``: the Hydra entry point (also ``python -m clplat.train``).

Before Hydra creates any output directory, a preflight composes the config for the given
overrides (for a multirun, for every value of every swept key) and checks it, so a typo or a bad
value stops everything with one line and exit code 2 instead of a multi-line Hydra report, a
half-created run directory, or a sweep that fails in its twentieth job.

In a multirun, a job that fails at run time (a stream that cannot be built, a diverging loss,
a bug) must not take the other jobs with it: its traceback goes to ``error.txt`` in its job
directory, the job returns ``None`` and the launcher carries on; at the end the sweep lists the
failed jobs in ``failed_jobs.txt`` and ``clplat-train`` exits 1. Two Hydra callbacks live here
because they belong to launching jobs: ``SweepFailures`` (that end-of-sweep check, configured in
``conf/train.yaml``) and ``PinJobResources`` (cores and GPU per parallel job, configured by the
``launcher`` group).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from clplat import config_dir
from clplat.errors import ConfigError, RunInterrupted, TrainingDiverged

CONF_DIR = config_dir()  # the packaged configs, or a source checkout's conf/
JOB_DIRNAME_MAX = 120  # characters of a sweep job's folder name; file systems refuse more than 255


def job_dirname(num: Any, overrides: str) -> str:
    """A sweep job's folder: ``<num>_<overrides>``, shortened with a hash when the overrides are long.

    Hydra names job folders after the job's overrides, and a realistic sweep (fifteen keys) passes
    the file system's 255-character limit. A shortened name stays unique (the job number leads,
    the hash covers the full text) and readable; the full overrides are in the folder's
    ``.hydra/overrides.yaml``, where ``clplat-report`` reads them.
    """
    import hashlib

    name = f"{num}_{overrides}" if overrides else str(num)
    if len(name) <= JOB_DIRNAME_MAX:
        return name
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
    return f"{name[: JOB_DIRNAME_MAX - len(digest) - 1]}_{digest}"


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("clplat_job_dirname"):
        OmegaConf.register_new_resolver("clplat_job_dirname", job_dirname)


_register_resolvers()  # at import: launcher workers resolve the job folder after importing this module
# flags after which Hydra prints or inspects instead of running: nothing to check
_INSPECT_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
                  "--shell-completion", "-sc")


def fail(message: str, code: int = 2) -> None:
    """Exit with ``code`` after one ``clplat: error:`` line; under DDP only rank 0 says it (every
    rank fails alike, and a rank's stderr is the console's)."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"clplat: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _one_line(err: BaseException) -> str:
    """Hydra and OmegaConf errors span lines (available options, search path, full_key...):
    keep the message, the available options and the hint, on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0].rstrip(".")
    if "Could not find" in text:
        options = []
        for line in lines[1:]:
            if line.startswith("Config search path"):
                break
            if not line.endswith(":"):
                options.append(line)
        if options:
            text += " (available: " + ", ".join(options) + ")"
        return text
    if text.startswith("Could not override"):
        hint = next((line for line in lines[1:] if line.startswith("To append")), "")
        return f"{text}: no such key" + (f" ({hint[0].lower()}{hint[1:]})" if hint else "")
    details = [line for line in lines[1:] if line.startswith(("Key '", "Value '"))]
    return "; ".join([text, *details])


def _explain(err: BaseException, overrides: list[str], config_name: str) -> str:
    """A Hydra composition error as one line, with "did you mean" for a misspelt key or option.

    Hydra's own hint for an unknown key is to append it with ``+``, which only creates a key no
    component reads; the likely intent is a close existing key, or one of a group's options.
    """
    import difflib
    import re

    text = str(err)
    missing_key = re.search(r"Could not override '([^']+)'", text)
    missing_option = re.search(r"Could not (?:load|find) '([^'/]+)/([^']+)'", text)
    if missing_key:
        key = missing_key.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
        parent, _, leaf = key.rpartition(".")
        keys = _keys_at(parent, [o for o in overrides if o != given], config_name)
        close = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
        hint = (f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close
                else f"the keys of {parent or 'the config'} are: {', '.join(sorted(keys))}")
        return f"{given} is not valid: no such key; {hint}"
    if missing_option:
        group, name = missing_option.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) if (CONF_DIR / group).is_dir() else []
        if options:
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            return f"{group}={name} is not valid: no such option; {hint}available: {', '.join(options)}"
    return _one_line(err)


def _keys_at(path: str, overrides: list[str], config_name: str) -> list[str]:
    """The keys of the config node at ``path`` (dotted; empty: the root), composed with ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig, OmegaConf

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
        node = OmegaConf.select(cfg, path) if path else cfg
    except Exception:  # noqa: BLE001 - no suggestion is better than a second error
        return []
    finally:
        GlobalHydra.instance().clear()
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _expand_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists to check: the given one, or one per swept value (others at their first)."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base, sweeps = [], []
    for text, override in zip(overrides, parsed):
        key = override.get_key_element()
        if key.lstrip("+~").startswith(SWEEPER_PARAMS):  # a sweeper's search space: check its key's values
            target = key.lstrip("+~")[len(SWEEPER_PARAMS):]
            if override.is_sweep_override():  # Hydra refuses to sweep its own keys, with a traceback hint
                fail(f"{text} is not valid: a search space under hydra.sweeper.params is a quoted string "
                     f"({key}='{override.get_value_element_as_str()}'), or write {target}=... directly")
            # the sweeper parses the string as an override value: so does the check
            override = OverridesParser.create().parse_override(f"{target}={override.value()}")
            values = _values_to_check(override)
            if values:
                base.append(f"{target}={values[0]}")
                sweeps.append((len(base) - 1, target, values))
        elif override.is_sweep_override() and not override.value_type.name.startswith("GLOB"):
            values = _values_to_check(override)
            base.append(f"{key}={values[0]}")
            sweeps.append((len(base) - 1, key, values))
        else:
            base.append(text)
    variants = [base]
    for position, key, values in sweeps:
        for value in values[1:]:
            variant = list(base)
            variant[position] = f"{key}={value}"
            variants.append(variant)
    return variants


SWEEPER_PARAMS = "hydra.sweeper.params."
"""Where sweepers other than Hydra's basic one (Optuna, Nevergrad, Ax) read their search space."""


def _values_to_check(override: Any) -> list[str]:
    """The values of a swept override that the preflight composes: every value of a list, the
    bounds of an ``interval(a,b)`` (any sweeper samples between them), the value itself if not swept."""
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    if override.is_interval_sweep():
        sweep = override.value()
        return [str(sweep.start), str(sweep.end)]
    value = override.get_value_element_as_str()
    return [value] if value else []


def resume_arguments(argv: Sequence[str]) -> list[str] | None:
    """``resume=<run_dir>`` alone -> the arguments that make Hydra run in that directory.

    The run continues with its own saved config, so other overrides are refused rather than
    silently ignored; Hydra writes no new ``.hydra/`` there (the original one is kept).
    """
    resume = [a for a in argv if a.startswith("resume=")]
    if not resume:
        return None
    raw = resume[-1].split("=", 1)[1]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":  # quoted: our own, re-run by a DDP rank
        from hydra.core.override_parser.overrides_parser import OverridesParser

        raw = str(OverridesParser.create().parse_overrides([f"resume={raw}"])[0].value())
    path = Path(raw).expanduser()
    others = [a for a in argv if not a.startswith(("resume=", "hydra."))]
    if others:
        fail(f"resume={path} takes no other overrides (the run continues with its own config.yaml); got {' '.join(others)}")
    if not (path / "config.yaml").is_file():
        fail(f"resume={str(path)!r} is not valid: not a clplat run directory (no config.yaml)")
    where = _quoted(str(path.resolve()))  # a sweep job's directory holds '=' and ',' (its overrides)
    return [f"resume={where}", f"hydra.run.dir={where}", "hydra.output_subdir=null"]


def _quoted(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar, where ``=``, ``,`` and spaces
    are literal (unquoted they are syntax)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def preflight(argv: Sequence[str]) -> None:
    """Compose and validate the config(s) that ``argv`` asks for; exit 2 on the first problem."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        raise
    if any(flag in argv for flag in _INSPECT_FLAGS) or args.config_dir or args.config_path:
        return
    from clplat.config import validate_config  # free of torch: the checks below answer in about a second

    check_sweeper(list(args.overrides))
    config_name = args.config_name or "train"
    overrides = list(args.overrides)
    try:
        variants = _expand_overrides(overrides, args.multirun)
    except Exception as err:  # noqa: BLE001 - any parse error is a usage error
        fail(_one_line(err))
    if args.multirun:  # the sweeper chosen on the command line or in a config file
        with _failing_as_config_error(variants[0], config_name):
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                sweeper = compose(config_name=config_name, overrides=variants[0], return_hydra_config=True).hydra.sweeper
        check_sweep_direction(sweeper)
        # a search space written in a config file is checked like one given on the command line
        from_files = [f"{SWEEPER_PARAMS}{key}={_quoted(str(value))}" for key, value in (sweeper.get("params") or {}).items()
                      if not any(o.lstrip("+").startswith(f"{SWEEPER_PARAMS}{key}=") for o in overrides)]
        if from_files:
            variants = _expand_overrides(overrides + from_files, True)
    composed = []
    for overrides in variants:  # keys, values and ranges first, before torch and Lightning load
        with _failing_as_config_error(overrides, config_name):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name=config_name, overrides=overrides)
            validate_config(cfg)
            composed.append((overrides, cfg))
    from clplat.distributed import check_ddp_support
    from clplat.experiment import build_backbone, build_optimizer, build_strategy
    from clplat.trainer_options import build_callbacks, lightning_options

    for overrides, cfg in composed:  # then what only building the parts can tell
        with _failing_as_config_error(overrides, config_name):
            check_ddp_support(cfg.trainer, build_strategy(cfg))
            build_optimizer(cfg)
            build_backbone(cfg, input_size=1)  # the stream (and its input size) is built by the run
            lightning_options(cfg.trainer.get("lightning"))
            build_callbacks(cfg.get("callbacks"))


def check_sweeper(overrides: list[str]) -> None:
    """The sweeper asked for is installed, and the basic sweeper gets no range it cannot sweep."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.plugins import Plugins

    chosen = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("hydra/sweeper=")]
    sweeper = chosen[-1] if chosen else "basic"
    if sweeper != "basic":
        Plugins.instance()  # imports the installed plugins, which register their sweeper configs
        installed = sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list("hydra/sweeper"))
        if sweeper not in installed:
            # hydra-optuna-sweeper declares optuna<3 but runs on clplat's Optuna (docs/sweeps.md)
            hint = " (pip install --no-deps hydra-optuna-sweeper)" if sweeper == "optuna" else \
                f" (pip install hydra-{sweeper}-sweeper)"
            fail(f"hydra/sweeper={sweeper} is not valid: its plugin is not installed; installed sweepers: "
                 f"{', '.join(installed)}{hint}")
        params_default = ConfigStore.instance().load(f"hydra/sweeper/{sweeper}.yaml").node.get("params", {})
        cli_params = [o for o in overrides if o.lstrip("+").startswith(SWEEPER_PARAMS.rstrip("."))]
        if cli_params and params_default is None:  # OmegaConf cannot extend a null node from the command line
            fail(f"{cli_params[0]} is not valid with hydra/sweeper={sweeper}: its params default to null, which "
                 "the command line cannot extend; write the key itself (optimizer.lr=interval(0.0005,0.01)) "
                 "or hydra.sweeper.params in a config file (docs/sweeps.md)")
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - the override parser's own error comes next, from _expand_overrides
        return
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override() and override.is_interval_sweep():
            fail(f"{text} is not valid: the basic sweeper takes lists (a,b,c or range(...)); an interval needs "
                 "a sampling sweeper (hydra/sweeper=<name>) or clplat-tune, whose search spaces are declared "
                 "in the configs")


def check_sweep_direction(hydra_sweeper: Any) -> None:
    """A sweeper that optimises a direction (Optuna's ``direction``, default ``minimize``) must
    maximise: a clplat job returns its final average accuracy. Refused before any job, in one line."""
    if "direction" not in hydra_sweeper:
        return
    direction = str(hydra_sweeper.direction).rsplit(".", 1)[-1]  # Optuna's is an enum: Direction.minimize
    if direction != "maximize":
        fail(f"hydra.sweeper.direction={direction} is not valid: a clplat job returns its final average "
             "accuracy (higher is better); set hydra.sweeper.direction=maximize")


@contextmanager
def _failing_as_config_error(overrides: list[str], config_name: str) -> Iterator[None]:
    """Any error inside ends the command with one line and exit code 2 (it is the config's)."""
    from hydra.core.global_hydra import GlobalHydra

    try:
        yield
    except ConfigError as err:
        fail(str(err))
    except Exception as err:  # noqa: BLE001 - composition/instantiation errors are config errors
        fail(_explain(err, overrides, config_name))
    finally:
        GlobalHydra.instance().clear()


# an absolute path: relative ones resolve against the module name when run as a console script
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    job_dir = _multirun_job_dir()
    if job_dir is not None:
        return run_sweep_job(cfg, job_dir)
    try:
        return _run(cfg)
    except (ConfigError, TrainingDiverged, RunInterrupted) as err:
        message, code = _failure(err, cfg)
        if isinstance(err, ConfigError) and not cfg.get("resume"):
            discard_unused_run_dir(Path(cfg.run_dir))
        fail(message, code)
    return None  # unreachable: fail() exits


START_FILES = (".hydra", "config.yaml", "train.log", "logs")
"""What Hydra and a run write before the first result: a run refused at start leaves none of it."""


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove a run directory that a run refused at start-up left behind with nothing in it.

    Errors found only when the stream or the model is built (a dataset missing, a strategy that
    needs a deeper backbone) come after Hydra created the directory. It goes when it holds only
    start-up files; a directory with anything else (a user's files, results) is left untouched.
    """
    import shutil

    if not run_dir.is_dir() or any(entry.name not in START_FILES for entry in run_dir.iterdir()):
        return
    if (run_dir / "logs").is_dir() and any(p.is_file() for p in (run_dir / "logs").rglob("*")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def _run(cfg: DictConfig) -> float | None:
    """One run (or the continuation of one); returns the metric a sweeper may optimise."""
    from omegaconf import OmegaConf, open_dict

    from clplat.experiment import run_experiment

    resume = cfg.get("resume")
    if resume:
        run_dir = Path(resume)
        cfg = OmegaConf.load(run_dir / "config.yaml")
        with open_dict(cfg):
            cfg.run_dir, cfg.resume = str(run_dir), str(run_dir)
    result = run_experiment(cfg, resume=bool(resume))
    if resume:  # a failed sweep job continued by hand: its failure record is obsolete
        from clplat.analysis.runs import JOB_ERROR_FILE

        (Path(resume) / JOB_ERROR_FILE).unlink(missing_ok=True)
    # returned for sweepers that optimise a metric (e.g. Optuna)
    return result.summary.get("avg_acc")


def _failure(err: BaseException, cfg: DictConfig) -> tuple[str, int]:
    """The one-line message and exit code of a failed run (usage errors 2, failures 1, signals 128+n)."""
    run_dir = cfg.get("resume") or cfg.get("run_dir")
    if isinstance(err, ConfigError):
        return str(err), 2
    if isinstance(err, TrainingDiverged):
        return f"{err}; results so far are in {run_dir}", 1
    if isinstance(err, RunInterrupted):
        return (f"{err}: results so far are in {run_dir}; continue with: clplat-train resume={run_dir}",
                128 + err.signum)
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__, 1


def _multirun_job_dir() -> Path | None:
    """This job's output directory when running inside a Hydra multirun, else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.runtime.output_dir)


def _job_label() -> str:
    """``#<num> <overrides>`` of the current Hydra job, for messages that must name it."""
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get().job
    num = job.get("num")
    overrides = job.get("override_dirname") or ""
    return f"#{num} {overrides}".strip()


def run_sweep_job(cfg: DictConfig, job_dir: Path) -> float | None:
    """A multirun job: a failure is recorded in ``<job_dir>/error.txt`` and returns ``None``.

    Hydra's launchers abort the sweep (after the current batch) when a job raises, and a
    ``SystemExit`` from a usage error would kill an in-process sweep at once; returning lets
    every other job run. A signal (Ctrl+C, the scheduler's SIGTERM) still stops the sweep: it is
    recorded too, then reported with its exit code as for a single run.

    Under SLURM a signal targets one job, not the sweep: the interrupted job saves, is requeued
    (``clplat.slurm.requeue``) and, run again by SLURM, resumes its own directory here; a job
    that cannot be requeued is recorded as failed like any other.
    """
    from clplat import slurm
    from clplat.analysis.runs import JOB_ERROR_FILE

    error_file = job_dir / JOB_ERROR_FILE
    error_file.unlink(missing_ok=True)  # a failed earlier attempt in a reused sweep directory
    if slurm.restart_count() > 0 and (job_dir / "config.yaml").is_file():
        finished = job_dir / "summary.json"
        if finished.is_file():  # requeued after it finished (e.g. a node failure): nothing to redo
            import json

            slurm.finished()
            return json.loads(finished.read_text()).get("avg_acc")
        print(f"clplat: job {_job_label()}: SLURM job {slurm.job_id()} was requeued (restart "
              f"{slurm.restart_count()}); resuming {job_dir} from its last checkpoint", file=sys.stderr, flush=True)
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.resume = str(job_dir)
    try:
        result = _run(cfg)
        slurm.finished()
        return result
    except RunInterrupted as err:
        message, code = _failure(err, cfg)
        _record_failure(error_file, message)  # stays only if no later attempt resumes the job
        if not slurm.in_slurm_job():
            fail(message, code)
        print(f"clplat: job {_job_label()} {err}: saved; asking SLURM to requeue it ({slurm.describe()})",
              file=sys.stderr, flush=True)
        reason = slurm.requeue()  # returns only if the job was not requeued
        message = f"{message} (not requeued: {reason})"
        _record_failure(error_file, message)
        print(f"clplat: error: job {_job_label()} failed: {message}", file=sys.stderr, flush=True)
    except Exception as err:  # noqa: BLE001 - any failure of one job must leave the others running
        message, _ = _failure(err, cfg)
        _record_failure(error_file, message)
        where = f"; {slurm.describe()}" if slurm.in_slurm_job() else ""
        print(f"clplat: error: job {_job_label()} failed: {message} (traceback in {error_file}{where})",
              file=sys.stderr, flush=True)
    return None


def _record_failure(error_file: Path, message: str) -> None:
    """``error.txt``: the one-line reason first (what reports show), then the job, its SLURM job
    id and log when it ran under SLURM, and the traceback."""
    from clplat import slurm
    from clplat.analysis.runs import SLURM_LINE_PREFIX

    where = f"{SLURM_LINE_PREFIX}{slurm.describe()}\n" if slurm.in_slurm_job() else ""
    error_file.parent.mkdir(parents=True, exist_ok=True)
    error_file.write_text(f"{message}\njob: {_job_label()}\n{where}\n{traceback.format_exc()}")


# -- Hydra callbacks -----------------------------------------------------------------------------

_LAST_SWEEP: dict[str, Any] = {}
"""The last multirun of this process, set by ``SweepFailures``: ``failed`` (job directories)
and ``listing`` (its ``failed_jobs.txt``).

Read through ``importlib.import_module("clplat.train")``: under ``python -m clplat.train`` this
file also runs as ``__main__``, a second module object that Hydra's callback never sees."""


class SweepFailures(Callback):
    """At the end of a multirun: list the failed jobs in ``failed_jobs.txt`` and remember them.

    The jobs may have run in other processes (joblib, submitit), so the record is the files
    they wrote: every ``error.txt`` under the sweep directory written since the sweep started
    (a minute of slack for clocks of a shared filesystem). ``main`` turns a non-empty list into
    exit code 1, so a script running a sweep can tell that something is missing. A SLURM job's
    line also names its job id and log, where a cluster user looks first.
    """

    def __init__(self) -> None:
        self._started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()
        _LAST_SWEEP.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from clplat.analysis.runs import SWEEP_FAILURES_FILE, find_failed_jobs

        sweep_dir = Path(str(config.hydra.sweep.dir))
        failed = find_failed_jobs(sweep_dir, since=self._started - 60.0)
        listing = sweep_dir / SWEEP_FAILURES_FILE
        if failed:
            lines = [f"{job.job_dir.relative_to(sweep_dir) if job.job_dir.is_relative_to(sweep_dir) else job.job_dir}"
                     f"\t{job.message}" + (f"\t{job.slurm}" if job.slurm else "") for job in failed]
            listing.write_text("\n".join(lines) + "\n")
        elif listing.exists():
            listing.unlink()
        _LAST_SWEEP.update(failed=[job.job_dir for job in failed], listing=listing)


_PINNED: dict[str, Any] = {}
"""This process's slot, cores and GPU, chosen once: a joblib worker runs several jobs and must
keep the cores it was given (and CUDA cannot change devices once initialised)."""


class PinJobResources(Callback):
    """Give every job running in parallel its own share of the cores and, if any, one GPU.

    Hydra's joblib and submitit-local launchers start jobs side by side without telling them
    apart: each would use every core (oversubscribing the machine) and the first GPU. Each
    job process claims a free *slot* (``0 .. slots-1``) with a lock file under
    ``<sweep_dir>/.slots`` that it holds until it exits, so two concurrently running jobs never
    share a slot; slot ``s`` gets cores ``[s*share, (s+1)*share)`` of the cores this process may
    use (``share = cpus_per_job`` or ``cores // slots``) and GPU ``s mod n_gpus`` of the visible
    ones, set through ``CUDA_VISIBLE_DEVICES`` before CUDA starts. Torch's intra-op threads
    follow the core count. Jobs beyond ``slots`` (no free lock) share by job number.
    """

    def __init__(self, slots: int | None = None, cpus_per_job: int | None = None, gpus: bool = True) -> None:
        self.slots = slots
        self.cpus_per_job = cpus_per_job if cpus_per_job and cpus_per_job > 0 else None
        self.gpus = gpus

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        import logging

        from hydra.types import RunMode

        if config.hydra.get("mode") != RunMode.MULTIRUN:  # `launcher=joblib` without -m: one run, nothing to share
            return
        if not _PINNED:
            available = _available_cores()
            slots = self.slots if self.slots and self.slots > 0 else max(1, len(available) // (self.cpus_per_job or 1))
            slot, lock = (0, None) if slots == 1 else claim_slot(Path(str(config.hydra.sweep.dir)) / ".slots", slots)
            if slot is None:
                slot = int(config.hydra.job.num) % slots
            _PINNED.update(slot=slot, lock=lock, cores=core_share(available, slot, slots, self.cpus_per_job),
                           gpu=gpu_for_slot(visible_gpus(), slot) if self.gpus else None)
        cores, gpu = _PINNED["cores"], _PINNED["gpu"]
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        import torch

        torch.set_num_threads(len(cores))
        if gpu is not None and not torch.cuda.is_initialized():
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        logging.getLogger(__name__).info("job %s: slot %d, cores %s, gpu %s", config.hydra.job.num,
                                         _PINNED["slot"], cores, gpu if gpu is not None else "-")


def _available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def claim_slot(lock_dir: Path, slots: int) -> tuple[int | None, Any]:
    """The first slot whose lock file this process can lock (kept open, so held until exit)."""
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        handle = open(lock_dir / f"slot_{slot}.lock", "a")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return slot, handle
    return None, None


def core_share(available: Sequence[int], slot: int, slots: int, per_job: int | None = None) -> list[int]:
    """Slot ``slot``'s cores: consecutive blocks of ``per_job`` (default ``len // slots``, at least 1),
    wrapping around when there are more slots than blocks."""
    cores = list(available)
    share = per_job if per_job else max(1, len(cores) // max(slots, 1))
    if share >= len(cores):
        return cores
    start = (slot * share) % len(cores)
    return sorted({cores[(start + i) % len(cores)] for i in range(share)})


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without initialising CUDA (which would freeze them)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        count = torch.cuda._device_count_nvml()  # NVML: leaves CUDA uninitialised
    except Exception:  # noqa: BLE001 - no NVML, no driver: nothing to pin
        return []
    return [str(i) for i in range(count)] if count > 0 else []


def gpu_for_slot(visible: Sequence[str], slot: int) -> str | None:
    return visible[slot % len(visible)] if visible else None


def main() -> None:
    argv = sys.argv[1:]
    # hydra-optuna-sweeper builds Optuna 2-style distributions; Optuna announces each removal on
    # every trial (the sweep works, the lines are noise to a user)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(optuna|hydra_plugins\.hydra_optuna_sweeper)\b")
    resumed = resume_arguments(argv)
    if resumed is not None:
        sys.argv = [sys.argv[0], *resumed]
    elif os.environ.get("LOCAL_RANK", "0") == "0":  # DDP ranks > 0 rerun rank 0's checked arguments
        preflight(argv)
    _hydra_main()
    import importlib

    sweep = importlib.import_module("clplat.train")._LAST_SWEEP
    failed = sweep.get("failed")
    if failed:
        names = ", ".join(path.name for path in failed[:5]) + (", ..." if len(failed) > 5 else "")
        fail(f"{len(failed)} sweep job(s) failed ({names}); reasons in {sweep['listing']}, "
             "tracebacks in each job's error.txt", code=1)


if __name__ == "__main__":
    main()
