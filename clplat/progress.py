"""Console progress of one run: a bar over experiences and iterations, plain lines, or quiet.

A run is a few minutes of iterations split into experiences, and what a researcher wants to see
while it trains is *where* it is (experience k of n, iteration i of the budget) and *how it is
doing* (the current average accuracy over the tasks seen so far, from the continual evaluator).
How to show it depends on where the output goes:

``bar``
    one tqdm bar per experience on stderr, updated every iteration, with the current average
    accuracy as postfix; a terminal only (a bar in a log file is a wall of carriage returns).
``lines``
    the start-up lines and one line per finished experience on stdout: readable in log files.
``quiet``
    nothing while training, one line when the run finishes. Meant for sweeps, where several
    jobs share a console (joblib) or every job has its own log (submitit): per-experience
    chatter from parallel jobs interleaves into noise.
``auto`` (default)
    ``quiet`` inside a Hydra multirun, ``bar`` when stderr is a terminal (and Lightning's own
    bar is off), ``lines`` otherwise.

The mode is read from ``progress`` in the run config (``+progress=quiet`` on the command line
when ``conf/train.yaml`` does not declare the key).
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

import lightning as L
from lightning.pytorch.callbacks import Callback

from clplat.errors import check_choice

PROGRESS_MODES = ("auto", "bar", "lines", "quiet")
RUN_LOG = logging.getLogger("clplat.run")
"""The run's own log: under Hydra it goes to the job's ``train.log`` only (``conf/train.yaml``,
``hydra.job_logging``), whatever the terminal shows (quiet sweep jobs included)."""


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (any launcher)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a core dependency
        return False
    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN


def resolve_mode(mode: str | None, multirun: bool, stream: TextIO | None = None,
                 lightning_bar: bool = False) -> str:
    """The concrete mode (``bar``/``lines``/``quiet``) for a requested one (``auto`` included)."""
    mode = "auto" if mode is None else mode
    check_choice("progress", mode, PROGRESS_MODES)
    if mode != "auto":
        return mode
    if multirun:
        return "quiet"
    stream = sys.stderr if stream is None else stream
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    return "bar" if is_tty and not lightning_bar else "lines"


class StreamProgress(Callback):
    """Progress of a run over its experiences; a Lightning callback for the per-iteration part.

    Register it *after* the ``ContinualEvaluator`` in the trainer's callbacks so the accuracy
    shown at an iteration includes the evaluation taken at that very iteration.
    """

    def __init__(self, evaluator: Any, num_experiences: int, mode: str | None = "auto",
                 multirun: bool | None = None, lightning_bar: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.evaluator = evaluator
        self.num_experiences = int(num_experiences)
        self.mode = resolve_mode(mode, in_multirun() if multirun is None else multirun,
                                 err if err is not None else sys.stderr, lightning_bar)
        self._out = out
        self._err = err
        self._bar: Any = None
        self._experience = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], evaluator: Any, num_experiences: int) -> "StreamProgress":
        """Built from a run config: ``progress`` (optional key) and ``trainer.enable_progress_bar``."""
        trainer = cfg.get("trainer") or {}
        return cls(evaluator, num_experiences, cfg.get("progress", "auto"),
                   lightning_bar=bool(trainer.get("enable_progress_bar", False)))

    # -- what the experiment loop calls -------------------------------------------------------
    @property
    def quiet(self) -> bool:
        return self.mode == "quiet"

    def info(self, text: str) -> None:
        """A start-up line (stream description, run directory); silent in quiet mode."""
        RUN_LOG.info(text)
        if not self.quiet:
            self._write(f"clplat: {text}")

    def experience_done(self, index: int, global_iter: int, accuracies: Sequence[float]) -> None:
        """Close the experience's bar and report the mean accuracy over the seen tasks."""
        self._close_bar()
        mean = sum(accuracies) / len(accuracies) if accuracies else float("nan")
        line = (f"experience {index + 1}/{self.num_experiences} done at iteration {global_iter}: "
                f"mean accuracy on seen tasks {mean:.3f}")
        RUN_LOG.info(line)
        if not self.quiet:
            self._write(f"clplat: {line}")

    def run_done(self, run_dir: Path | str, summary: Mapping[str, Any]) -> None:
        """The one line a quiet run prints: where it wrote and its headline numbers."""
        acc, wall = summary.get("avg_acc"), summary.get("wall_time_s")
        acc_text = "n/a" if acc is None else f"{acc:.3f}"
        wall_text = "" if wall is None else f" in {wall:.1f}s"
        RUN_LOG.info(f"done: avg_acc={acc_text}{wall_text}")
        if self.quiet:
            self._write(f"clplat: done {run_dir}: avg_acc={acc_text}{wall_text}")

    def close(self) -> None:
        """Release the terminal (a bar left open by an exception would swallow the traceback's first line)."""
        self._close_bar()

    # -- Lightning hooks ----------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # one fit (= one Lightning epoch) per experience: its batch count is the experience's budget
        self._experience = int(getattr(self.evaluator, "experience", 0))
        if self.mode != "bar":
            return
        from tqdm.auto import tqdm

        self._close_bar()
        total = trainer.num_training_batches
        acc = self.current_accuracy()
        # a pseudo-terminal reporting a 0x0 size (some CI runners, `script`) makes tqdm draw
        # nothing (zero width, every line "below the screen"): assume 100x24 there
        size = shutil.get_terminal_size(fallback=(0, 0))
        sized = size.columns > 0 and size.lines > 0
        self._bar = tqdm(total=total if isinstance(total, int) else None,
                         desc=f"exp {self._experience + 1}/{self.num_experiences}",
                         postfix=None if acc is None else f"acc_seen={acc:.3f}",
                         unit="it", leave=False, dynamic_ncols=sized,
                         ncols=None if sized else 100, nrows=None if sized else 24,
                         file=self._err if self._err is not None else sys.stderr)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        self._set_postfix()

    # -- helpers ------------------------------------------------------------------------------
    def current_accuracy(self) -> float | None:
        """Mean accuracy over the seen tasks at the latest evaluation (None before any)."""
        results = getattr(self.evaluator, "results", None)
        last = getattr(results, "last", None)
        if last is None:
            return None
        seen = last.accuracies[: last.experience + 1]
        return sum(seen) / len(seen) if seen else None

    def _set_postfix(self) -> None:
        acc = self.current_accuracy()
        if self._bar is not None and acc is not None:
            self._bar.set_postfix_str(f"acc_seen={acc:.3f}", refresh=False)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, line: str) -> None:
        out = self._out if self._out is not None else sys.stdout
        if self._bar is not None:  # keep the bar intact below the line
            from tqdm.auto import tqdm

            tqdm.write(line, file=out)
        else:
            print(line, file=out, flush=True)


__all__ = ["PROGRESS_MODES", "StreamProgress", "in_multirun", "resolve_mode"]
