"""Loggers that cannot stop a run: a failing logger becomes one warning.

The run directory (``metrics.csv``, ``summary.json``, plots, checkpoints) is the record of a
run; loggers are copies for dashboards. A W&B server that is unreachable or rejects a call, or
a full disk under the CSV logger's directory, must therefore cost the copy, not the run (or the
hours of training behind it). ``GuardedLogger`` wraps a Lightning ``Logger`` and turns any
exception from it into a ``LoggerFailedWarning``, emitted **once per logger** (a failure at
every step would bury the console), and keeps counting the failed calls so the end of the run
can say how much of the copy is missing. Calls keep being attempted: a transient failure (a
network blip, space freed) loses only the calls made while it lasted.

Lightning calls loggers from inside ``fit`` (``log_metrics``, ``save``, ``finalize``, ...) and
clplat calls them from the evaluator and at the end of the run, so wrapping the objects — not
guarding each call site — covers every path.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from lightning.pytorch.loggers import Logger


class LoggerFailedWarning(UserWarning):
    """A logger raised; the run goes on and the run directory is still written."""


class GuardedLogger(Logger):
    """Delegates to ``inner``; any exception from it is counted and warned about once."""

    def __init__(self, inner: Logger, label: str | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.label = label or type(inner).__name__
        self.failures = 0

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or ``None`` (and a first-time warning) when it raises."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a logger must never end a run
            self.failures += 1
            if self.failures == 1:
                warnings.warn(f"logger {self.label} failed in {what} ({type(err).__name__}: {err}); "
                              "training continues and the run directory is still written; further "
                              "failures of this logger are not reported", LoggerFailedWarning, stacklevel=2)
            return None

    # -- Logger interface ----------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self.call("name", lambda: self.inner.name)

    @property
    def version(self) -> Any:
        return self.call("version", lambda: self.inner.version)

    @property
    def root_dir(self) -> str | None:
        return self.call("root_dir", lambda: self.inner.root_dir)

    @property
    def log_dir(self) -> str | None:
        return self.call("log_dir", lambda: self.inner.log_dir)

    @property
    def save_dir(self) -> str | None:
        return self.call("save_dir", lambda: self.inner.save_dir)

    @property
    def group_separator(self) -> str:
        return self.inner.group_separator

    @property
    def experiment(self) -> Any:
        return self.call("experiment", lambda: self.inner.experiment)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.call("log_metrics", self.inner.log_metrics, metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.call("log_hyperparams", self.inner.log_hyperparams, params, *args, **kwargs)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        self.call("log_graph", self.inner.log_graph, model, input_array)

    def save(self) -> None:
        self.call("save", self.inner.save)

    def finalize(self, status: str) -> None:
        self.call("finalize", self.inner.finalize, status)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.call("after_save_checkpoint", self.inner.after_save_checkpoint, checkpoint_callback)


def guarded_loggers(build: Callable[[], list[Logger]]) -> list[Logger]:
    """``build()``'s loggers, each guarded; a logger that cannot even start (``wandb.init``
    failing, an unwritable log directory) is dropped with a warning. A ``ConfigError`` (a bad
    logger option) still stops the run: that is the user's to fix, not an outage."""
    from clplat.errors import ConfigError

    try:
        loggers = build()
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - see the module docstring
        warnings.warn(f"the logger could not start ({type(err).__name__}: {err}); the run continues "
                      "without it and the run directory is still written", LoggerFailedWarning, stacklevel=2)
        return []
    return [logger if isinstance(logger, GuardedLogger) else GuardedLogger(logger) for logger in loggers]


def unwrap(logger: Logger) -> Logger:
    return logger.inner if isinstance(logger, GuardedLogger) else logger


__all__ = ["GuardedLogger", "LoggerFailedWarning", "guarded_loggers", "unwrap"]
