"""Errors a user can fix, reported as one line and exit code 2 by the CLI."""

from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """A bad configuration value: names the key, the value and what is allowed.

    The CLI prints ``clplat: error: <message>`` and exits with code 2, the convention of
    argparse for usage errors, so sweeps and scripts can tell a typo from a crash.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not valid: {allowed}")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, value, "allowed values are " + ", ".join(map(str, choices)))


def check_int(key: str, value: Any, minimum: int | None = None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, "must be an integer" + (f" >= {minimum}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        raise ConfigError(key, value, f"must be an integer >= {minimum}")


def check_float(
    key: str, value: Any, minimum: float | None = None, maximum: float | None = None, allow_none: bool = False
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, "must be a number")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise ConfigError(key, value, f"must be a number in [{lo}, {hi}]")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: stop, keep what was written, say where."""

    def __init__(self, value: float, iteration: int, experience: int) -> None:
        self.value, self.iteration, self.experience = value, iteration, experience
        super().__init__(f"the loss became {value} at iteration {iteration} (experience {experience}); "
                         "lower the learning rate or clip gradients (trainer.gradient_clip_val)")


class RunInterrupted(BaseException):
    """SIGTERM/SIGINT during a run; a ``BaseException`` so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")
