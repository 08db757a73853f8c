"""``launcher=slurm`` against a real SLURM cluster: sweeps, failing jobs, preemption and requeue.

The cluster is the single-node one of ``.ci/slurm_cluster.sh`` (munge, mariadb + slurmdbd,
slurmctld, slurmd on this machine), started by the ``slurm_cluster`` fixture if it is not up;
as root on a Debian machine the script also installs the packages. Every sweep runs through the
real command line (``python -m clplat.train -m launcher=slurm ...``, submitit, ``sbatch``), and
its jobs are real SLURM array tasks. Marked ``slurm``: not in the default test run; ``.ci/run``
runs them after ``make test`` (``make test-slurm``). About 5 minutes on 2 cores once installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from clplat.analysis.runs import JOB_ERROR_FILE, SWEEP_FAILURES_FILE
from tests.conftest import TINY
from tests.helpers import ROOT, cli_env, comparable

pytestmark = pytest.mark.slurm

CLUSTER_SCRIPT = ROOT / ".ci" / "slurm_cluster.sh"
# the local cluster's partition has 2 cores and no GPU: one core per job, two jobs at a time
ON_THIS_CLUSTER = ["launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
                   "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20"]
FAST = [*TINY, "trainer.iterations=3", "trainer.checkpoint=false", "plots=false"]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The local cluster, started (and installed, as root) if it is not running; left running,
    as starting it costs seconds and stopping it is the script's ``stop``."""
    if shutil.which("sbatch") is None and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing it needs root (.ci/slurm_cluster.sh start)")
    log = tmp_path_factory.mktemp("slurm") / "cluster.log"
    with log.open("w") as out:  # a file, not a pipe: the daemons it starts must not hold our pipe open
        started = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], stdout=out, stderr=subprocess.STDOUT,
                                 timeout=900)
    assert started.returncode == 0, log.read_text()
    yield


_SWEEPS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_jobs_left_behind(tmp_path: Path) -> Iterator[None]:
    """A test that fails half-way must not leave its sweep running, nor its jobs in the queue
    (a requeueing job would go on competing for the cores with the next tests)."""
    yield
    while _SWEEPS:
        proc = _SWEEPS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    for folder in tmp_path.glob("*/.submitit/*"):
        if folder.name[:1].isdigit():
            subprocess.run(["scancel", folder.name.split("_")[0]], capture_output=True)


def clplat_sweep(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``clplat-train -m <args>`` in a subprocess (it submits the jobs and waits for them)."""
    proc = subprocess.Popen([sys.executable, "-m", "clplat.train", "-m", *args], env=env or cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _SWEEPS.append(proc)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def sacct_states(array_id: str) -> list[tuple[str, str]]:
    """``(job id, state)`` of every attempt of every task of a job array, oldest first (``-D``)."""
    text = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", array_id, "-o", "JobID,State"],
                          capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in text.splitlines() if line]


def settled_states(array_id: str, timeout: float = 60) -> list[tuple[str, str]]:
    """``sacct_states`` once SLURM has recorded the end of every attempt: a job's result file
    (which ``clplat-train`` waits for) is written just before its process and job step end."""
    deadline = time.monotonic() + timeout
    while True:
        states = sacct_states(array_id)
        if all(state not in ("PENDING", "RUNNING", "COMPLETING") for _, state in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def array_id(sweep: Path) -> str:
    """The SLURM id of the sweep's job array, from submitit's per-job folders ``<id>_<task>``."""
    return next((sweep / ".submitit").glob("*_0")).name.split("_")[0]


def wait_for(condition, what: str, timeout: float = 300, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"clplat-train ended (exit {proc.returncode}) while waiting for {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def held_for_requeue(job_id: str) -> bool:
    """Whether SLURM holds the requeued job until its BeginTime (about 2 minutes)."""
    state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True)
    return state.stdout.strip() == "PENDING BeginTime"


def release(job_id: str) -> None:
    """Start a requeued job now instead of after SLURM's hold, as an administrator can. Not in
    the same second as the requeue: the node refuses a launch whose credential is not newer than
    the revocation of the killed attempt's ("Job credential revoked")."""
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def report(sweep: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "clplat.report", str(sweep), "--no-plots"], env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_slurm_sweep_runs_every_job_through_the_scheduler_then_reports(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    code, _, err = finish(clplat_sweep(*ON_THIS_CLUSTER, *FAST, "strategy=naive,replay", "seed=0,1",
                                       f"hydra.sweep.dir={sweep}"))
    assert code == 0, err
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 4 and all((job / "summary.json").is_file() and (job / "metrics.csv").is_file() for job in jobs)
    assert not (sweep / SWEEP_FAILURES_FILE).exists()
    # four tasks of one job array, each completed by SLURM, each with its submitit log
    array = array_id(sweep)
    assert settled_states(array) == [(f"{array}_{task}", "COMPLETED") for task in range(4)]
    logs = [sweep / ".submitit" / f"{array}_{task}" / f"{array}_{task}_0_log.out" for task in range(4)]
    assert all("Job completed successfully" in log.read_text() for log in logs)
    rows = [line for line in report(sweep).splitlines() if line.startswith(("| naive", "| replay"))]
    # mean ± std of the final accuracy over both seeds (the third cell of each row)
    assert len(rows) == 2 and all(row.split("|")[3].count("±") == 1 for row in rows), rows


def test_a_failing_slurm_job_is_listed_with_its_job_id_and_log_and_the_others_finish(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    # 3 experiences cannot split 10 classes: found only when job #0 builds its stream, on the node
    code, _, err = finish(clplat_sweep(*ON_THIS_CLUSTER, *FAST, "stream.n_experiences=3,5",
                                       f"hydra.sweep.dir={sweep}"))
    assert code == 1 and err.strip().splitlines()[-1].startswith("clplat: error: 1 sweep job(s) failed (0_"), err
    array = array_id(sweep)
    failed, = [p for p in sweep.iterdir() if p.name.startswith("0_")]
    done, = [p for p in sweep.iterdir() if p.name.startswith("1_")]
    assert (done / "summary.json").is_file() and not (done / JOB_ERROR_FILE).exists()
    log = sweep / ".submitit" / f"{array}_0" / f"{array}_0_0_log.err"
    reason = "stream.classes_per_experience=2 is not valid"
    listing = (sweep / SWEEP_FAILURES_FILE).read_text().splitlines()
    assert len(listing) == 1
    where, message, slurm = listing[0].split("\t")
    assert where == failed.name and message.startswith(reason)
    assert slurm == f"SLURM job {array}_0, log {log}"
    assert "clplat: error: job #0 " in log.read_text() and reason in log.read_text()
    assert settled_states(array) == [(f"{array}_0", "COMPLETED"), (f"{array}_1", "COMPLETED")]  # failed cleanly
    out = report(sweep)
    assert "1 failed job(s)" in out and f"(SLURM job {array}_0, log {log})" in out


def _wandb_runs(job: Path) -> list[tuple[str, pd.DataFrame, list[int]]]:
    """``(run id, history, exit codes)`` of each offline W&B run under ``job``, oldest first."""
    from clplat.wandb_records import read_records
    from tests.test_logging import _history

    runs = []
    for directory in sorted((job / "wandb").glob("offline-run-*")):
        records = list(read_records(next(directory.glob("run-*.wandb"))))
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        runs.append((directory.name.rsplit("-", 1)[1], _history(records), exits))
    return runs


def test_a_signalled_job_saves_is_requeued_and_resumes_to_identical_metrics(slurm_cluster, tmp_path):
    """Job #1 gets SIGTERM from SLURM (``scancel --signal=TERM``, what a preemption sends) in the
    middle of its run: it saves, submitit requeues it, SLURM runs it again, and it resumes from
    its last boundary checkpoint. Job #0 is the same experiment left alone (``print_summary`` is
    not part of the computation): both end with the same ``metrics.csv``, and job #1's W&B run
    (offline) continues under its first attempt's id."""
    sweep = tmp_path / "sweep"
    env = {**cli_env(), "WANDB_MODE": "offline"}
    proc = clplat_sweep(*ON_THIS_CLUSTER, *TINY, "trainer.iterations=40", "eval.every_n_iters=10", "plots=false",
                        "logger=wandb", "print_summary=true,false", f"hydra.sweep.dir={sweep}", env=env)
    wait_for(lambda: list(sweep.glob("1_*/checkpoints/exp_1.ckpt")), "job #1's second boundary checkpoint",
             proc=proc)
    job_id = f"{array_id(sweep)}_1"
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True)

    wait_for(lambda: held_for_requeue(job_id), f"SLURM to requeue {job_id}", timeout=120, proc=proc)
    release(job_id)
    code, _, err = finish(proc)
    assert code == 0, err

    reference, = sweep.glob("0_*")
    resumed, = sweep.glob("1_*")
    assert (resumed / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert comparable(resumed) == comparable(reference)
    assert json.loads((resumed / "summary.json").read_text())["resumed"] is True
    assert json.loads((reference / "summary.json").read_text())["resumed"] is False
    assert not (resumed / JOB_ERROR_FILE).exists()  # the interruption's record went with the resume
    attempts = [state for job, state in settled_states(job_id.split("_")[0]) if job == job_id]
    assert attempts == ["REQUEUED", "COMPLETED"], attempts
    log = (sweep / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert "interrupted by signal 15: saved; asking SLURM to requeue it" in log
    assert f"SLURM job {job_id} was requeued (restart 1); resuming {resumed}" in log

    # W&B: the second attempt continues the first one's run (same id); SLURM's signal reaches W&B's
    # service process too, so the first attempt's record file may lack its last rows: the second
    # logs again what the first did not record, and together they hold the whole history
    (first_id, first_history, _), (second_id, history, exits) = _wandb_runs(resumed)
    assert first_id == second_id and exits == [0]
    assert _wandb_runs(reference)[0][0] != first_id
    table = pd.read_csv(resumed / "metrics.csv")
    both = pd.concat([first_history, history], ignore_index=True)
    logged = both.dropna(subset=["eval/task_0/acc"]).drop_duplicates("cl/global_iter", keep="last")
    steps = sorted(logged["cl/global_iter"].astype(int).tolist())
    assert steps == sorted(table.global_iter.unique())  # from step 0 to the end
    expected = table.loc[table.eval_task == 0].drop_duplicates("global_iter", keep="last").set_index("global_iter")
    logged = logged.set_index(logged["cl/global_iter"].astype(int)).sort_index()
    assert logged["eval/task_0/acc"].tolist() == pytest.approx(expected.loc[steps, "accuracy"].tolist())


def test_a_job_preempted_by_a_higher_priority_partition_is_requeued_by_slurm_and_resumes(slurm_cluster, tmp_path):
    """A real preemption: a job submitted to the ``urgent`` partition (higher priority tier,
    ``PreemptMode=REQUEUE``) takes the core of one running sweep job. SLURM signals that job
    (SIGTERM) and requeues it itself; the job saves, and when it runs again resumes. The job
    that kept its core is the uninterrupted reference."""
    sweep = tmp_path / "sweep"
    # long enough (a few seconds per experience on a quiet machine) that the preemption, which
    # SLURM's scheduler decides within seconds, lands while both jobs are still training
    proc = clplat_sweep(*ON_THIS_CLUSTER, *TINY, "trainer.iterations=1000", "eval.every_n_iters=50", "plots=false",
                        "print_summary=true,false", f"hydra.sweep.dir={sweep}")
    wait_for(lambda: len(list(sweep.glob("*/checkpoints/exp_0.ckpt"))) == 2, "both jobs' first boundary checkpoint",
             proc=proc)
    array = array_id(sweep)
    urgent = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--cpus-per-task=1", "--mem=100M",
                             f"--output={tmp_path / 'urgent.out'}", "--wrap", "sleep 1"],
                            capture_output=True, text=True, check=True).stdout.strip()

    def preempted() -> list[str]:
        return [job for job, state in sacct_states(array) if state == "PREEMPTED"]

    wait_for(lambda: preempted(), "SLURM to preempt a sweep job", timeout=120, proc=proc)
    job_id, = preempted()
    wait_for(lambda: held_for_requeue(job_id), f"SLURM to requeue {job_id}", timeout=120, proc=proc)
    release(job_id)
    code, _, err = finish(proc)
    assert code == 0, err

    task = job_id.split("_")[1]
    resumed, = sweep.glob(f"{task}_*")
    reference, = sweep.glob(f"{1 - int(task)}_*")
    assert json.loads((resumed / "summary.json").read_text())["resumed"] is True
    assert json.loads((reference / "summary.json").read_text())["resumed"] is False
    assert (resumed / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert comparable(resumed) == comparable(reference)
    assert [state for job, state in settled_states(array) if job == job_id] == ["PREEMPTED", "COMPLETED"]
    assert [state for _, state in settled_states(urgent)] == ["COMPLETED"]
    log = (sweep / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert "DUE TO PREEMPTION" in log and "interrupted by signal 15: saved" in log


def test_the_time_limit_signal_requeues_a_job_until_its_time_outs_run_out(slurm_cluster, tmp_path):
    """SIGUSR2 is what SLURM sends ``signal_delay_s`` before the time limit (``--signal=USR2@<s>``);
    the test sends it with ``scancel --signal=USR2`` at a known point of the run, because SLURM
    delivers the real one up to a minute early (it checks time limits every 30 s), which made a
    test with a real 1-minute limit depend on the machine's load. With ``timeout_min=5`` submitit
    counts every such signal as a time-out, and ``max_num_timeout=1`` allows one requeue: job #1
    is requeued after the first signal and resumes; the second signal finds no time-out left, so
    the job is recorded as failed (with its SLURM job id and log) while job #0 finishes; then
    ``clplat-train resume=<job dir>`` by hand completes it, identical to job #0."""
    sweep = tmp_path / "sweep"
    proc = clplat_sweep(*ON_THIS_CLUSTER, *TINY, "trainer.iterations=100", "eval.every_n_iters=10", "plots=false",
                        "hydra.launcher.timeout_min=5", "hydra.launcher.max_num_timeout=1", "print_summary=true,false",
                        f"hydra.sweep.dir={sweep}")
    wait_for(lambda: list(sweep.glob("1_*/checkpoints/exp_1.ckpt")), "job #1's second boundary checkpoint", proc=proc)
    job_id = f"{array_id(sweep)}_1"
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: held_for_requeue(job_id), f"SLURM to requeue {job_id}", timeout=120, proc=proc)
    release(job_id)
    released = time.time()
    job, = sweep.glob("1_*")

    def stepped_again() -> bool:  # the second attempt wrote a checkpoint of its own
        return any(path.stat().st_mtime > released for path in (job / "checkpoints").glob("exp_*.ckpt"))

    wait_for(stepped_again, "job #1's second attempt to pass a boundary", proc=proc)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    code, _, err = finish(proc)
    assert code == 1 and err.strip().splitlines()[-1].startswith("clplat: error: 1 sweep job(s) failed (1_"), err

    log = sweep / ".submitit" / job_id / f"{job_id}_0_log.err"
    text = log.read_text()
    assert text.count("interrupted by signal 12: saved; asking SLURM to requeue it") == 2
    assert "Requeued job" in (sweep / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    where, message, slurm = (sweep / SWEEP_FAILURES_FILE).read_text().splitlines()[0].split("\t")
    assert where == job.name and message.startswith("interrupted by signal 12")
    assert message.endswith("(not requeued: Job not requeued because: timed-out too many times)")
    assert slurm == f"SLURM job {job_id}, log {log}"
    attempts = [state for task, state in settled_states(job_id.split("_")[0]) if task == job_id]
    assert attempts == ["REQUEUED", "COMPLETED"], attempts  # the job ended cleanly, as a failed sweep job
    assert not (job / "summary.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "clplat.train", f"resume={job}"], env=cli_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert not (job / JOB_ERROR_FILE).exists()  # no longer a failed job for clplat-report
    reference, = sweep.glob("0_*")
    assert (job / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert comparable(job) == comparable(reference)
