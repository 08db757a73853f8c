"""What many test modules do the same way: run the CLI in a subprocess, expect the preflight's
one-line refusal, and compare a killed-and-resumed run with an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from omegaconf import DictConfig

from clplat.errors import RunInterrupted
from clplat.experiment import run_experiment
from clplat.module import ContinualModule

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("wall_time_s", "resumed")  # how long and how it ran, not what it computed
TIMING_KEYS = ("fpf_seconds",)  # strategy-reported durations


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout first on the path, W&B off."""
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m clplat.train *args`` in a subprocess, output captured."""
    return subprocess.run([sys.executable, "-m", "clplat.train", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def kill_then_resume(args: list[str], run_dir: Path, env: dict[str, str],
                     checkpoint: str = "exp_1.ckpt") -> subprocess.CompletedProcess:
    """``clplat-train *args`` killed with SIGKILL once ``checkpoints/<checkpoint>`` exists, then
    ``clplat-train resume=<run_dir>``; returns the resumed process (asserted to have succeeded)."""
    import time

    proc = subprocess.Popen([sys.executable, "-m", "clplat.train", *args, f"hydra.run.dir={run_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / checkpoint).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run([sys.executable, "-m", "clplat.train", f"resume={run_dir}"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    return resumed


def preflight_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The single stderr line with which the CLI's preflight refuses ``argv`` (exit code 2)."""
    from clplat.preflight import preflight

    with pytest.raises(SystemExit) as exit_info:
        preflight(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def comparable(run_dir: Path) -> tuple[str, dict]:
    """``metrics.csv`` and ``summary.json`` of a run without what depends on timing."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in VOLATILE}
    if "strategy_state" in summary:
        summary["strategy_state"] = {k: v for k, v in summary["strategy_state"].items() if k not in TIMING_KEYS}
    return (run_dir / "metrics.csv").read_text(), summary


def interrupt_at(monkeypatch: pytest.MonkeyPatch, iteration: int, error: BaseException) -> None:
    """Make the training step at ``global_step == iteration`` raise ``error``."""
    original = ContinualModule.training_step

    def step(self, batch, batch_idx):
        if self.trainer.global_step == iteration:
            raise error
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ContinualModule, "training_step", step)


def interrupt_offline_run(monkeypatch: pytest.MonkeyPatch, cfg: DictConfig, iteration: int, signum: int) -> None:
    """Run ``cfg`` with W&B offline until the signal ``signum`` interrupts it at ``iteration``;
    W&B stays offline for what the test runs next (its resumed attempt)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    interrupt_at(monkeypatch, iteration, RunInterrupted(signum))
    with pytest.raises(RunInterrupted):
        run_experiment(cfg)
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")


def assert_resume_matches_uninterrupted(make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch,
                                        overrides: list[str], at: int = 14) -> Path:
    """Run ``overrides`` once through, and once stopped by SIGTERM at step ``at`` then resumed;
    both must write the same results. Returns the resumed run's directory."""
    reference = make_cfg(*overrides)
    run_experiment(reference)
    interrupted = make_cfg(*overrides)
    interrupt_at(monkeypatch, at, RunInterrupted(signal.SIGTERM))
    with pytest.raises(RunInterrupted):
        run_experiment(interrupted)
    run_dir = Path(interrupted.run_dir)
    assert (run_dir / "metrics.csv").exists() and not (run_dir / "summary.json").exists()
    monkeypatch.undo()
    assert run_experiment(interrupted, resume=True).summary["resumed"] is True
    assert comparable(run_dir) == comparable(Path(reference.run_dir))
    return run_dir


def full_batch_steps(strategy, module: ContinualModule, experience, steps: int):  # noqa: ANN001, ANN201
    """Start ``experience`` and take ``steps`` full-batch training steps the way Lightning runs them
    (loss, backward, ``before_optimizer_step``, step); returns the optimizer."""
    strategy.before_experience(experience)
    optimizer = module.configure_optimizers()
    data = experience.train
    for _ in range(steps):
        loss = strategy.training_step((data.x, data.y, data.task))
        optimizer.zero_grad()
        loss.backward()
        strategy.before_optimizer_step()
        optimizer.step()
    return optimizer
