"""What every clplat command does on a usage error or a failed run: one line, an exit code."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from clplat.errors import ConfigError, RunInterrupted, TrainingDiverged

if TYPE_CHECKING:
    from omegaconf import DictConfig


def fail(message: str, code: int = 2) -> None:
    """Exit with ``code`` after one ``clplat: error:`` line; under DDP only rank 0 says it (every
    rank fails alike, and a rank's stderr is the console's)."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"clplat: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def failure_message(err: BaseException, cfg: DictConfig) -> tuple[str, int]:
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


def quoted(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar, where ``=``, ``,`` and spaces
    are literal (unquoted they are syntax)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
