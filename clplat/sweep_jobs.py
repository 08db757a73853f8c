"""A job of a multirun: its failure recorded instead of ending the sweep, and the sweep's end.

In a multirun, a job that fails at run time (a stream that cannot be built, a diverging loss,
a bug) must not take the other jobs with it: its traceback goes to ``error.txt`` in its job
directory, the job returns ``None`` and the launcher carries on; at the end the sweep lists the
failed jobs in ``failed_jobs.txt`` (``SweepFailures``, a Hydra callback configured in
``conf/train.yaml``) and ``clplat-train`` exits 1.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from clplat.cli import fail, failure_message
from clplat.errors import RunInterrupted


def multirun_job_dir() -> Path | None:
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


def run_sweep_job(cfg: DictConfig, job_dir: Path, run: Callable[[DictConfig], float | None]) -> float | None:
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
        result = run(cfg)
        slurm.finished()
        return result
    except RunInterrupted as err:
        message, code = failure_message(err, cfg)
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
        message, _ = failure_message(err, cfg)
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


LAST_SWEEP: dict[str, Any] = {}
"""The last multirun of this process, set by ``SweepFailures``: ``failed`` (job directories)
and ``listing`` (its ``failed_jobs.txt``).
"""


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
        LAST_SWEEP.clear()

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
        LAST_SWEEP.update(failed=[job.job_dir for job in failed], listing=listing)
