"""Errors a user can fix, reported as one line and exit code 2 by the CLI."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator


class ConfigError(ValueError):
    """A bad configuration value: names the key, the value and what is allowed.

    The CLI prints ``clplat: error: <message>`` and exits with code 2, the convention of
    argparse for usage errors, so sweeps and scripts can tell a typo from a crash.

    A key that starts with a dot (``.density``) names an option of the component raising the
    error, relative to the config node the component was built from: a component cannot know
    where a config puts it (``strategy``, ``plugin.fpf``, a nested ``source``), so whoever builds
    it from a node qualifies the key with that node's path (``within``). Any other key is
    absolute and left as it is (a strategy pointing at ``backbone.num_layers``).
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(self._message())

    def _message(self) -> str:
        # a key never qualified (a component built by hand) reads as the bare option name
        return f"{self.key.removeprefix('.')}={self.value!r} is not valid: {self.allowed}"

    @property
    def relative(self) -> bool:
        """Whether the key still names an option relative to an unknown config node."""
        return self.key.startswith(".")

    def within(self, node: str) -> "ConfigError":
        """Qualify a relative key with ``node``, the path of the config node the component was
        built from (itself relative when it starts with a dot: a nested node); an absolute key
        is kept. Changes this error in place, so re-raising it keeps its traceback."""
        if self.relative and node:
            self.key = f"{node}{self.key}"
            self.args = (self._message(),)
        return self


@contextmanager
def options_of(node: str) -> Iterator[None]:
    """Errors raised inside about a component's own options (relative keys) name them under ``node``."""
    try:
        yield
    except ConfigError as err:
        raise err.within(node)


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
