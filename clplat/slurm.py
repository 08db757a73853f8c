"""A sweep job running under SLURM (``launcher=slurm``): surviving preemption and time limits.

SLURM stops a running job in two everyday ways, and a sweep must outlive both:

- **preemption** (or an administrator's ``scancel --signal=TERM``): SIGTERM, then SIGKILL after
  the cluster's grace time;
- **the time limit**: submitit asks SLURM for SIGUSR2 ``signal_delay_s`` seconds before it
  (``#SBATCH --signal=USR2@<s>``), then SLURM kills the job at the limit.

In a SLURM job, ``clplat.experiment.stop_on_signals`` turns SIGUSR2 into ``RunInterrupted`` as it
does SIGTERM and SIGINT, so the run saves what it has (``metrics.csv``; its boundary checkpoints
are already on disk). ``clplat.sweep_jobs.run_sweep_job`` then hands the job to submitit's own
requeue logic (:func:`requeue`): a preempted job is always requeued, a timed-out one as long as
``hydra.launcher.max_num_timeout`` allows; where the cluster requeues preempted jobs itself
(``PreemptMode=REQUEUE``) the job just exits without a result. When SLURM runs the job again
(``SLURM_RESTART_COUNT`` > 0, same job id, same arguments) the job finds its unfinished run
directory and resumes it from the last boundary checkpoint, which ends with the same
``metrics.csv`` as an uninterrupted run (the partial experience is redone with the same seeded
draws); a W&B run continues under the same id (``clplat.logging.previous_wandb_run_id``).

Why delegate to submitit rather than call ``scontrol requeue`` here: submitit keeps the count of
time-outs in the job's pickled submission, so only its handler can tell the third time-out
from the first and stop requeueing.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def in_slurm_job() -> bool:
    """True inside a job that submitit started on SLURM (not a local submitit job, not a shell)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def requeue_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before the time limit (SIGUSR2 unless
    ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise)."""
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


def stop_signals() -> tuple[int, ...]:
    """Signals that must stop a run and save it, beyond SIGTERM and SIGINT: submitit's
    time-limit signal, inside a SLURM job (elsewhere SIGUSR2 keeps its default meaning)."""
    return (requeue_signal(),) if in_slurm_job() else ()


def restart_count() -> int:
    """How many times SLURM has requeued this job (``SLURM_RESTART_COUNT``); 0 outside SLURM."""
    if not in_slurm_job():
        return 0
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def job_id() -> str | None:
    """This job's SLURM id as ``squeue``/``sacct`` show it: ``<array id>_<task>`` in a job array."""
    if not in_slurm_job():
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


def log_path() -> Path | None:
    """The job's stderr file (submitit's ``<sweep>/.submitit/<job id>/<job id>_<task>_log.err``):
    where tracebacks and clplat's error lines go; the ``.out`` file next to it has stdout."""
    if not in_slurm_job() or "SUBMITIT_FOLDER" not in os.environ:
        return None
    try:
        import submitit

        return Path(submitit.JobEnvironment().paths.stderr)
    except Exception:  # noqa: BLE001 - a log path is a courtesy in an error message
        return None


def describe() -> str:
    """``SLURM job <id>, log <path>`` for failure records; empty outside SLURM."""
    identifier = job_id()
    if identifier is None:
        return ""
    path = log_path()
    return f"SLURM job {identifier}" + (f", log {path}" if path else "")


def finished() -> None:
    """Call when the job's run is complete: from then on the time-limit signal (which SLURM may
    send up to a minute early) finds nothing to save and is ignored, so that it cannot kill the
    process while submitit writes the job's result and the job ends ``COMPLETED``, not ``FAILED``."""
    if in_slurm_job():
        signal.signal(requeue_signal(), signal.SIG_IGN)


def requeue() -> str:
    """Have submitit checkpoint this job and requeue it, as its handler of the time-limit signal
    does; does not return when the job is requeued (``SystemExit``, no result written, so the
    launching ``clplat-train`` keeps waiting for the next attempt).

    Returns why the job was not requeued otherwise (time-outs exhausted, ``scontrol requeue``
    refused, submitit's handler missing), for the job's failure record.
    """
    from submitit.core.utils import UncompletedJobError

    sig = requeue_signal()
    handler = signal.getsignal(sig)
    if not callable(handler) or getattr(handler, "__name__", "") != "checkpoint_and_try_requeue":
        return "submitit's requeue handler is not installed in this process"
    try:
        handler(sig, None)  # submitit: checkpoint, `scontrol requeue <id>`, sys.exit(-1)
    except UncompletedJobError as err:  # e.g. "Job not requeued because: timed-out too many times."
        return str(err).rstrip(".")
    except (subprocess.SubprocessError, OSError) as err:
        # a preemption with PreemptMode=REQUEUE: SLURM requeues the job itself and refuses ours
        if requeued_by_slurm():
            raise SystemExit(-1) from None  # as submitit exits: no result, the next attempt gives it
        return f"scontrol requeue failed ({err})"
    return "submitit returned without requeueing"


def requeued_by_slurm() -> bool:
    """Whether SLURM itself has requeued this job (a preemption with ``PreemptMode=REQUEUE``, a
    node failure): its restart count is already past this attempt's, while the job is still
    completing. A job that SLURM cancels instead (``PreemptMode=CANCEL``, ``scancel``) must
    leave a result, or the sweep would stop waiting for it with an error instead of listing it
    as failed."""
    import re

    identifier = job_id()
    if identifier is None:
        return False
    try:
        shown = subprocess.run(["scontrol", "-o", "show", "job", identifier], capture_output=True,
                               text=True, timeout=30).stdout
    except (subprocess.SubprocessError, OSError):
        return False
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    return restarts is not None and int(restarts.group(1)) > restart_count()
