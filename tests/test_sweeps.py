"""Sweeps through the real launchers, failing jobs, and the per-job resource pinning.

``clplat.train.main`` runs here as ``clplat-train -m launcher=... strategy=naive,replay seed=0,1``
would (same argv, preflight, Hydra, callbacks), with this process as the launching side: the
jobs run in real joblib (loky) worker processes and submitit subprocesses, and the command line
itself is covered by ``tests/test_cli.py``. Keeping the launching side in-process saves a Python
start and a torch/Lightning import per test; the job processes still pay theirs, which is most
of these tests' time (the runs are 3 iterations per experience). Then ``clplat-report`` on the
sweep directory must print a two-row mean ± std table.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

import clplat.pinning as pinning
import clplat.resuming as resuming
import clplat.sweep_jobs as sweep_jobs
import clplat.train as train
from clplat.analysis.runs import JOB_ERROR_FILE, SWEEP_FAILURES_FILE
from clplat.report import main as report_main
from tests.conftest import TINY

GRID = ["strategy=naive,replay", "seed=0,1"]
FAST = [*TINY, "trainer.iterations=3", "trainer.checkpoint=false"]


@pytest.fixture
def in_process_hydra() -> Iterator[None]:
    """Run ``clplat.train.main`` in this process and leave no Hydra, logging or worker state
    behind (Hydra configures the root logger and keeps the last job's config as a singleton;
    joblib keeps its loky workers alive for reuse)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor(reuse=True).shutdown(wait=True, kill_workers=True)  # the workers joblib left idle


def clplat_train(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``clplat-train *args`` in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["clplat-train", *args])
    try:
        train.main()
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return 0


def _report_rows(sweep: Path, capsys: pytest.CaptureFixture) -> list[str]:
    capsys.readouterr()
    assert report_main([str(sweep), "--no-plots"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| naive", "| replay"))]
    assert len(rows) == 2, out
    for row in rows:  # both seeds in each group; a metric undefined in one run says it rests on n=1
        cells = row.strip("| ").split(" | ")
        assert cells[1] == "2" and "±" in cells[2], row
        assert all("±" in cell or "(n=" in cell or cell == "n/a" for cell in cells[2:]), row
    return rows


def test_joblib_sweep_runs_pinned_parallel_jobs_then_reports(tmp_path, monkeypatch, capsys, in_process_hydra):
    sweep = tmp_path / "sweep"
    assert clplat_train(monkeypatch, "-m", "launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, *GRID,
                        f"hydra.sweep.dir={sweep}") == 0
    jobs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(jobs) == 4
    # every job claimed one of the 2 slots (one core each) and said so in its own log
    pins = [next(line for line in (job / "train.log").read_text().splitlines() if "slot" in line) for job in jobs]
    assert all(("slot 0" in line) != ("slot 1" in line) for line in pins), pins
    assert not (sweep / SWEEP_FAILURES_FILE).exists()
    rows = _report_rows(sweep, capsys)
    assert len(rows) == 2


def test_submitit_local_sweep_runs_jobs_as_subprocesses_then_reports(tmp_path, monkeypatch, capsys,
                                                                     in_process_hydra):
    sweep = tmp_path / "sweep"
    assert clplat_train(monkeypatch, "-m", "launcher=submitit_local", *FAST, *GRID, f"hydra.sweep.dir={sweep}") == 0
    assert len(list(sweep.glob("*/summary.json"))) == 4
    logs = [log.read_text() for log in (sweep / ".submitit").glob("*/*_log.out")]
    assert len(logs) == 4 and all("Job completed successfully" in log for log in logs)
    # quiet mode in a sweep: one line per job, no per-experience chatter
    assert all("clplat: done " in log and "experience 1/5" not in log for log in logs)
    rows = _report_rows(sweep, capsys)
    assert len(rows) == 2


def test_a_failing_job_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys, in_process_hydra):
    sweep = tmp_path / "sweep"
    # 3 experiences cannot split 10 classes: found only when job #0 builds its stream
    assert clplat_train(monkeypatch, "-m", *FAST, "stream.n_experiences=3,5", f"hydra.sweep.dir={sweep}") == 1
    err = capsys.readouterr().err
    assert "clplat: error: job #0 " in err and "stream.classes_per_experience=2 is not valid" in err
    assert err.strip().splitlines()[-1].startswith("clplat: error: 1 sweep job(s) failed (0_")

    failed, = [p for p in sweep.iterdir() if p.name.startswith("0_")]
    done, = [p for p in sweep.iterdir() if p.name.startswith("1_")]
    assert (done / "summary.json").exists()  # the job after the failure ran
    error = (failed / JOB_ERROR_FILE).read_text()
    assert error.startswith("stream.classes_per_experience=2 is not valid") and "Traceback" in error
    listing = (sweep / SWEEP_FAILURES_FILE).read_text()
    assert listing.startswith(f"{failed.name}\tstream.classes_per_experience=2")

    assert report_main([str(sweep), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "1 failed job(s)" in out and f"`{failed.name}`" in out


# -- resource pinning ---------------------------------------------------------------------------

def test_core_share_and_gpu_for_slot():
    assert pinning.core_share(range(8), 0, 4) == [0, 1] and pinning.core_share(range(8), 3, 4) == [6, 7]
    assert pinning.core_share([2, 3], 1, 2) == [3]  # the cores this process may use, not 0..n
    assert pinning.core_share(range(2), 2, 4) == [0]  # more slots than cores: shared, one each
    assert pinning.core_share(range(8), 1, 2, per_job=3) == [3, 4, 5]
    assert pinning.core_share(range(2), 0, 1) == [0, 1]
    assert pinning.gpu_for_slot(["0", "1"], 3) == "1" and pinning.gpu_for_slot([], 3) is None


def test_claim_slot_gives_concurrent_claimers_distinct_slots(tmp_path):
    first, lock1 = pinning.claim_slot(tmp_path, 2)
    second, lock2 = pinning.claim_slot(tmp_path, 2)  # flock: another open file description conflicts
    third, lock3 = pinning.claim_slot(tmp_path, 2)
    assert (first, second, third) == (0, 1, None) and lock3 is None
    lock1.close()
    assert pinning.claim_slot(tmp_path, 2)[0] == 0  # released when its holder closes (or exits)
    lock2.close()


def test_visible_gpus_respects_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert pinning.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pinning.visible_gpus() == []


def test_pin_job_resources_sets_affinity_threads_and_gpu(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    calls = {}
    monkeypatch.setattr(pinning, "_PINNED", {})
    monkeypatch.setattr(pinning, "_available_cores", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(pinning.os, "sched_setaffinity", lambda pid, cores: calls.update(cores=sorted(cores)),
                        raising=False)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.update(threads=n))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    from hydra.types import RunMode

    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}, "job": {"num": 5}}})
    pinning.PinJobResources(slots=2).on_job_start(OmegaConf.create({"hydra": {"mode": RunMode.RUN}}))
    assert calls == {} and not pinning._PINNED  # a single run is left alone
    holder, held = pinning.claim_slot(tmp_path / ".slots", 2)  # another job holds slot 0
    pinning.PinJobResources(slots=2).on_job_start(config)
    assert calls == {"cores": [2, 3], "threads": 2}
    assert pinning._PINNED["slot"] == 1 and pinning._PINNED["gpu"] == "1"
    assert pinning._PINNED["lock"] is not None
    pinning._PINNED["lock"].close()
    held.close()
    assert holder == 0


# -- launcher configs ---------------------------------------------------------------------------

def _compose_with_hydra(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("name, target", [("basic", "BasicLauncher"), ("joblib", "JoblibLauncher"),
                                          ("submitit_local", "LocalLauncher"), ("slurm", "SlurmLauncher")])
def test_every_launcher_composes_with_its_callbacks(name, target):
    from hydra.utils import instantiate

    cfg = _compose_with_hydra(f"launcher={name}")
    assert cfg.hydra.launcher._target_.endswith(target)
    callbacks = {key: instantiate(node) for key, node in cfg.hydra.callbacks.items()}
    assert isinstance(callbacks.pop("sweep_failures"), sweep_jobs.SweepFailures)
    if name == "basic":
        assert not callbacks
    else:
        assert isinstance(callbacks["pin_job_resources"], pinning.PinJobResources)


def test_slurm_launcher_config_gives_submitit_a_valid_sbatch_script(tmp_path, monkeypatch):
    """What ``launcher=slurm`` submits, without a cluster: the plugin's own parameter mapping
    fed to submitit's SLURM executor (a stand-in ``srun`` on PATH satisfies its start-up check)."""
    import os

    import submitit
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose_with_hydra("launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=myproj",
                              f"hydra.sweep.dir={tmp_path / 'sweep'}", 'hydra.launcher.setup=["module load cuda/12.4"]')
    HydraConfig.instance().set_config(cfg)
    try:
        params = instantiate(cfg.hydra.launcher).params
    finally:
        HydraConfig.instance().cfg = None
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in base else f"slurm_{key}": value for key, value in params.items()
                                  if key not in ("submitit_folder", "max_num_timeout")})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=myproj", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --mem=16GB", "#SBATCH --time=120", "module load cuda/12.4",
                 "#SBATCH --signal=USR2@120", "#SBATCH --requeue"):
        assert line in script, line
    assert params["max_num_timeout"] == 3  # a job that reaches its time limit is requeued (3 times at most)


# -- SLURM jobs (without a cluster; tests/test_slurm.py runs them on one) -------------------------

def _as_slurm_array_task(monkeypatch: pytest.MonkeyPatch, restarts: str | None = None) -> None:
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for key, value in {"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "2"}.items():
        monkeypatch.setenv(key, value)
    if restarts is not None:
        monkeypatch.setenv("SLURM_RESTART_COUNT", restarts)


def test_a_slurm_job_knows_its_array_task_id_restarts_and_stop_signals(monkeypatch):
    import signal

    from clplat import slurm

    for key in ("SUBMITIT_EXECUTOR", "SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    assert not slurm.in_slurm_job() and slurm.job_id() is None and slurm.describe() == ""
    assert slurm.stop_signals() == () and slurm.restart_count() == 0
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # an interactive allocation: not a submitit job
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert not slurm.in_slurm_job() and slurm.restart_count() == 0
    _as_slurm_array_task(monkeypatch, restarts="2")
    assert slurm.job_id() == "41_2" and slurm.restart_count() == 2
    assert slurm.stop_signals() == (signal.SIGUSR2,)
    assert slurm.describe().startswith("SLURM job 41_2")
    assert slurm.requeue() == "submitit's requeue handler is not installed in this process"


def test_in_a_slurm_job_the_time_limit_signal_stops_a_run_like_sigterm(monkeypatch):
    import os
    import signal
    import time

    from clplat.errors import RunInterrupted
    from clplat.experiment import stop_on_signals

    _as_slurm_array_task(monkeypatch)
    with pytest.raises(RunInterrupted) as interrupted, stop_on_signals():
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(5)  # the handler raises at once
    assert interrupted.value.signum == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # restored


def test_a_failed_slurm_job_is_listed_with_its_job_id_and_log(tmp_path):
    from clplat.analysis.runs import SLURM_LINE_PREFIX, find_failed_jobs

    job = tmp_path / "sweep" / "0_seed=0"
    job.mkdir(parents=True)
    where = f"SLURM job 41_0, log {tmp_path}/sweep/.submitit/41_0/41_0_0_log.err"
    (job / JOB_ERROR_FILE).write_text(f"the reason\njob: #0 seed=0\n{SLURM_LINE_PREFIX}{where}\n\nTraceback ...\n")
    failed, = find_failed_jobs(tmp_path / "sweep")
    assert (failed.message, failed.slurm) == ("the reason", where)
    from clplat.report import _failures_markdown

    assert f"- `0_seed=0`: the reason ({where})" in _failures_markdown(tmp_path / "sweep", tmp_path / "sweep")


def test_a_resumed_wandb_run_continues_the_run_id_of_its_first_attempt(tmp_path):
    from clplat.logging import previous_wandb_run_id

    assert previous_wandb_run_id(tmp_path) is None
    for name in ("offline-run-20261206_041121-firstid1", "offline-run-20261206_051144-secondid", "latest-run",
                 "offline-run-20261206_041121-firstid1-1"):  # a second attempt in the first one's second
        (tmp_path / "wandb" / name).mkdir(parents=True)
    (tmp_path / "wandb" / "debug.log").write_text("")
    assert previous_wandb_run_id(tmp_path) == "secondid"  # the newest attempt's
    (tmp_path / "wandb" / "offline-run-20261206_051144-secondid").rmdir()
    assert previous_wandb_run_id(tmp_path) == "firstid1"  # not "1" from the same-second suffix


def test_resume_takes_a_sweep_job_directory_whose_name_holds_its_overrides(tmp_path):
    """``clplat-train resume=<job dir>``: a multirun job's directory is named after its overrides
    (``1_seed=1,strategy=naive``), whose ``=`` and ``,`` must reach Hydra quoted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    job = tmp_path / "sweep" / "1_seed=1,strategy=naive"
    job.mkdir(parents=True)
    (job / "config.yaml").write_text("seed: 1\n")
    arguments = resuming.resume_arguments([f"resume={job}"])
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(arguments)}
    assert parsed["resume"] == parsed["hydra.run.dir"] == str(job.resolve())
    assert resuming.resume_arguments(arguments) == arguments  # as a DDP rank re-runs them


def test_a_sweep_with_many_overrides_gets_short_unique_job_folders(tmp_path, monkeypatch, in_process_hydra):
    """The issue's realistic sweep: ~15 overrides named the job folder past 255 characters (OSError)."""
    sweep = tmp_path / "sweep"
    many = ["stream=permuted_mnist1d", "backbone=lstm", "backbone.hidden_size=8", "backbone.num_layers=2",
            "strategy=derpp", "strategy.buffer_size=20", "optimizer=sgd", "optimizer.lr=0.01,0.03",
            "trainer.batch_size=16", "eval.every_n_iters=5", "eval.subset_size=20", "trainer.iterations=2",
            "plots=false", "trainer.checkpoint=false", "seed=0", "stream.source.num_samples=300",
            "logger=none", "print_summary=false"]
    assert clplat_train(monkeypatch, "-m", *many, f"hydra.sweep.dir={sweep}") == 0
    jobs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert [job.name.split("_", 1)[0] for job in jobs] == ["0", "1"]
    assert all(len(job.name) <= train.JOB_DIRNAME_MAX for job in jobs)
    assert jobs[0].name != jobs[1].name
    recorded = (jobs[1] / ".hydra" / "overrides.yaml").read_text()
    assert "optimizer.lr=0.03" in recorded and "backbone=lstm" in recorded  # the full overrides, kept


def test_job_dirname_keeps_short_names_and_hashes_long_ones():
    assert train.job_dirname(3, "seed=0,strategy=naive") == "3_seed=0,strategy=naive"
    assert train.job_dirname(0, "") == "0"
    long_a, long_b = "x=" + "a" * 300, "x=" + "a" * 299 + "b"
    name_a, name_b = train.job_dirname(7, long_a), train.job_dirname(7, long_b)
    assert len(name_a) == train.JOB_DIRNAME_MAX and name_a.startswith("7_x=aaa") and name_a != name_b


MIDPOINT_SWEEPER = '''
"""A sampling sweeper for the test: each interval(a, b) override at n evenly spaced inner points."""
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper


class MidpointSweeper(Sweeper):
    def __init__(self, n_trials: int = 2) -> None:
        self.n_trials = n_trials

    def setup(self, *, hydra_context, task_function, config):
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments):
        parsed = OverridesParser.create().parse_overrides(arguments)
        jobs = []
        for i in range(1, self.n_trials + 1):
            job = []
            for text, override in zip(arguments, parsed):
                if override.is_interval_sweep():
                    lo, hi = override.value().start, override.value().end
                    job.append(f"{override.get_key_element()}={lo + i * (hi - lo) / (self.n_trials + 1)}")
                else:
                    job.append(text)
            jobs.append(job)
        return [self.launcher.launch(jobs, initial_job_idx=0)]


ConfigStore.instance().store(group="hydra/sweeper", name="midpoint", provider="tests",
                             node={"_target_": "hydra_plugins.midpoint_sweeper.MidpointSweeper", "n_trials": 2})
'''


def test_a_third_party_sampling_sweeper_runs_interval_searches(tmp_path):
    """Any installed Hydra sweeper works, with the search-space syntax it reads (interval(...))."""

    from tests.helpers import cli_env

    plugin = tmp_path / "plugins" / "hydra_plugins" / "midpoint_sweeper"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(MIDPOINT_SWEEPER)
    env = {**cli_env(), "PYTHONPATH": f"{cli_env()['PYTHONPATH']}:{tmp_path / 'plugins'}"}
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "clplat.train", "-m", "hydra/sweeper=midpoint", *FAST,
                             "optimizer.lr=interval(0.003,0.012)", f"hydra.sweep.dir={sweep}"],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    lrs = sorted(float(value) for value in
                 (line.split(": ")[1] for job in sweep.glob("*/config.yaml")
                  for line in job.read_text().splitlines() if line.startswith("  lr: ")))
    assert lrs == pytest.approx([0.006, 0.009])
    assert len(list(sweep.glob("*/summary.json"))) == 2
    # a bound outside the allowed range is found before any job starts
    result = subprocess.run([sys.executable, "-m", "clplat.train", "-m", "hydra/sweeper=midpoint", *FAST,
                             "optimizer.lr=interval(-1,0.01)", f"hydra.sweep.dir={tmp_path / 'never'}"],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2 and "optimizer.lr=-1" in result.stderr and not (tmp_path / "never").exists()


def test_the_basic_sweeper_and_missing_sweepers_are_refused_in_one_line(capsys):
    from tests.helpers import preflight_error

    assert "the basic sweeper takes lists" in preflight_error(["-m", "optimizer.lr=interval(0.001,0.01)"], capsys)
    missing = preflight_error(["-m", "hydra/sweeper=ax", "optimizer.lr=interval(0.001,0.01)"], capsys)
    assert "hydra/sweeper=ax is not valid" in missing and "optuna" in missing and "pip install hydra-ax-sweeper" in missing
    # Optuna minimises by default; a clplat job returns an accuracy
    wrong_way = preflight_error(["-m", "hydra/sweeper=optuna", "optimizer.lr=interval(0.001,0.01)"], capsys)
    assert "hydra.sweeper.direction=minimize is not valid" in wrong_way and "direction=maximize" in wrong_way


@pytest.mark.filterwarnings("ignore::FutureWarning")  # Optuna 2-style distributions, loaded
def test_the_optuna_sweeper_searches_intervals_and_resumes_from_its_storage(tmp_path, capsys):
    """The issue's command with Hydra's Optuna sweeper (installed by `make setup` beside Optuna 4+),
    then the same study continued from its storage with the search space in the user's config file."""
    import optuna

    from tests.helpers import cli_env, preflight_error

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = [sys.executable, "-m", "clplat.train", "-m", "hydra.sweeper.n_trials=2",
               f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=lr", *FAST]
    first = subprocess.run([*command, "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                            "optimizer.lr=interval(0.0005,0.01)", f"hydra.sweep.dir={tmp_path / 'a'}"],
                           env=cli_env(), capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    assert "Warning" not in first.stderr  # Optuna's deprecation notices are filtered
    experiment = tmp_path / "my_conf" / "experiment"
    experiment.mkdir(parents=True)
    (experiment / "lr_search.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
        "hydra:\n  sweeper:\n    direction: maximize\n    params:\n      optimizer.lr: interval(0.0005,0.01)\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"
    second = subprocess.run([*command, searchpath, "experiment=lr_search", f"hydra.sweep.dir={tmp_path / 'b'}"],
                            env=cli_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr
    trials = optuna.load_study(study_name="lr", storage=storage).trials
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(0.0005 <= t.params["optimizer.lr"] <= 0.01 for t in trials)
    # the config file's search space is checked at its bounds before any job, like the command line's
    (experiment / "lr_search.yaml").write_text((experiment / "lr_search.yaml").read_text().replace("0.0005", "-1"))
    assert "optimizer.lr=-1" in preflight_error(["-m", searchpath, "experiment=lr_search"], capsys)
    # Optuna's params default to null: the command line cannot add keys under them
    assert "write the key itself" in preflight_error(
        ["-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
         "hydra.sweeper.params.optimizer.lr='interval(0.0005,0.01)'"], capsys)
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("[ab]/*/summary.json")]
    assert sorted(t.value for t in trials) == pytest.approx(sorted(s["avg_acc"] for s in summaries))
