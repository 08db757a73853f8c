"""``clplat-train``: the Hydra entry point (also ``python -m clplat.train``).

The command line is checked before Hydra starts (``clplat.preflight``; ``resume=`` is read by
``clplat.resuming``), then Hydra runs one job or a multirun; a multirun job's failure is recorded
rather than ending the sweep (``clplat.sweep_jobs``), and parallel jobs get their own cores
(``clplat.pinning``). A failed run ends with one line and its exit code (``clplat.cli``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from clplat import config_dir
from clplat.cli import fail, failure_message
from clplat.errors import ConfigError, RunInterrupted, TrainingDiverged
from clplat.preflight import preflight
from clplat.resuming import resume_arguments
from clplat.sweep_jobs import LAST_SWEEP, multirun_job_dir, run_sweep_job

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


_register_resolvers()  # at import: launcher workers resolve the job folder after importing this module


# an absolute path: relative ones resolve against the module name when run as a console script
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    job_dir = multirun_job_dir()
    if job_dir is not None:
        return run_sweep_job(cfg, job_dir, _run)
    try:
        return _run(cfg)
    except (ConfigError, TrainingDiverged, RunInterrupted) as err:
        message, code = failure_message(err, cfg)
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
    failed = LAST_SWEEP.get("failed")
    if failed:
        names = ", ".join(path.name for path in failed[:5]) + (", ..." if len(failed) > 5 else "")
        fail(f"{len(failed)} sweep job(s) failed ({names}); reasons in {LAST_SWEEP['listing']}, "
             "tracebacks in each job's error.txt", code=1)


if __name__ == "__main__":
    main()
