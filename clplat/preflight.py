"""The start-up check of ``clplat-train``: compose and validate before anything is written.

Before Hydra creates any output directory, the config for the given overrides is composed (for a
multirun, for every value of every swept key, and both bounds of every interval a sampling
sweeper explores) and checked, so a typo or a bad value stops everything with one line and exit
code 2 instead of a multi-line Hydra report, a half-created run directory, or a sweep that fails
in its twentieth job. The keys and values are checked before torch and Lightning are imported.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from clplat import config_dir
from clplat.cli import fail, quoted
from clplat.errors import ConfigError

CONF_DIR = config_dir()


def hydra_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The parts of a ``clplat-train`` command line that Hydra reads: its flags and the overrides
    (the same flags as Hydra's own parser, which is private API)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("overrides", nargs="*")
    for flags in (("--help", "-h"), ("--hydra-help",), ("--version",), ("--resolve",), ("--multirun", "-m"),
                  ("--experimental-rerun",)):
        parser.add_argument(*flags, action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--run", "-r"), ("--config-path", "-cp"),
                  ("--config-name", "-cn"), ("--config-dir", "-cd"), ("--info", "-i"), ("--shell-completion", "-sc")):
        parser.add_argument(*flags, nargs="?", const=True, default=None)
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        fail(f"unrecognised arguments: {' '.join(unknown)} (clplat-train --help lists the flags)")
    modes = [flag for flag, value in (("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg),
                                      ("--info", args.info), ("--shell-completion", args.shell_completion)) if value]
    if len(modes) > 1:
        fail(f"{' and '.join(modes)} cannot be combined: give one of --run, --multirun, --cfg, --info, --shell-completion")
    return args


# flags after which Hydra prints or inspects instead of running: nothing to check
_INSPECT_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
                  "--shell-completion", "-sc")


def _one_line(err: BaseException) -> str:
    """Hydra and OmegaConf errors span lines (available options, search path, full_key...):
    keep the message, the available options and the hint, on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0].rstrip(".")
    if "Could not find" in text:
        options = []
        for line in lines[1:]:
            if line.startswith("Config search path"):
                break
            if not line.endswith(":"):
                options.append(line)
        if options:
            text += " (available: " + ", ".join(options) + ")"
        return text
    if text.startswith("Could not override"):
        hint = next((line for line in lines[1:] if line.startswith("To append")), "")
        return f"{text}: no such key" + (f" ({hint[0].lower()}{hint[1:]})" if hint else "")
    details = [line for line in lines[1:] if line.startswith(("Key '", "Value '"))]
    return "; ".join([text, *details])


def _explain(err: BaseException, overrides: list[str], config_name: str) -> str:
    """A Hydra composition error as one line, with "did you mean" for a misspelt key or option.

    Hydra's own hint for an unknown key is to append it with ``+``, which only creates a key no
    component reads; the likely intent is a close existing key, or one of a group's options.
    """
    import difflib
    import re

    text = str(err)
    missing_key = re.search(r"Could not override '([^']+)'", text)
    missing_option = re.search(r"Could not (?:load|find) '([^'/]+)/([^']+)'", text)
    if missing_key:
        key = missing_key.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
        parent, _, leaf = key.rpartition(".")
        others = [o for o in overrides if o != given]
        keys = _keys_at(parent, others, config_name)
        close = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
        if close:
            return f"{given} is not valid: no such key; did you mean {parent + '.' if parent else ''}{close[0]}?"
        if keys or not parent:
            return f"{given} is not valid: no such key; the keys of {parent or 'the config'} are: {', '.join(sorted(keys))}"
        ancestor = parent  # the node itself is absent (logger.wandb.mode with logger=csv): say where it is not
        while ancestor and not keys:
            ancestor = ancestor.rpartition(".")[0]
            keys = _keys_at(ancestor, others, config_name)
        return (f"{given} is not valid: no such key; the config has no {parent} (the keys of "
                f"{ancestor or 'the config'} are: {', '.join(sorted(keys))})")
    if missing_option:
        group, name = missing_option.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) if (CONF_DIR / group).is_dir() else []
        if options:
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            return f"{group}={name} is not valid: no such option; {hint}available: {', '.join(options)}"
    return _one_line(err)


def _keys_at(path: str, overrides: list[str], config_name: str) -> list[str]:
    """The keys of the config node at ``path`` (dotted; empty: the root), composed with ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig, OmegaConf

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
        node = OmegaConf.select(cfg, path) if path else cfg
    except Exception:  # noqa: BLE001 - no suggestion is better than a second error
        return []
    finally:
        GlobalHydra.instance().clear()
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _expand_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists to check: the given one, or one per swept value (others at their first)."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base, sweeps = [], []
    for text, override in zip(overrides, parsed):
        key = override.get_key_element()
        if key.lstrip("+~").startswith(SWEEPER_PARAMS):  # a sweeper's search space: check its key's values
            target = key.lstrip("+~")[len(SWEEPER_PARAMS):]
            if override.is_sweep_override():  # Hydra refuses to sweep its own keys, with a traceback hint
                fail(f"{text} is not valid: a search space under hydra.sweeper.params is a quoted string "
                     f"({key}='{override.get_value_element_as_str()}'), or write {target}=... directly")
            # the sweeper parses the string as an override value: so does the check
            override = OverridesParser.create().parse_override(f"{target}={override.value()}")
            values = _values_to_check(override)
            if values:
                base.append(f"{target}={values[0]}")
                sweeps.append((len(base) - 1, target, values))
        elif override.is_sweep_override() and not override.value_type.name.startswith("GLOB"):
            values = _values_to_check(override)
            base.append(f"{key}={values[0]}")
            sweeps.append((len(base) - 1, key, values))
        else:
            base.append(text)
    variants = [base]
    for position, key, values in sweeps:
        for value in values[1:]:
            variant = list(base)
            variant[position] = f"{key}={value}"
            variants.append(variant)
    return variants


SWEEPER_PARAMS = "hydra.sweeper.params."
"""Where sweepers other than Hydra's basic one (Optuna, Nevergrad, Ax) read their search space."""


def _values_to_check(override: Any) -> list[str]:
    """The values of a swept override that the preflight composes: every value of a list, the
    bounds of an ``interval(a,b)`` (any sweeper samples between them), the value itself if not swept."""
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    if override.is_interval_sweep():
        sweep = override.value()
        return [str(sweep.start), str(sweep.end)]
    value = override.get_value_element_as_str()
    return [value] if value else []


def preflight(argv: Sequence[str]) -> None:
    """Compose and validate the config(s) that ``argv`` asks for; exit 2 on the first problem."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    args = hydra_arguments(argv)
    if any(flag in argv for flag in _INSPECT_FLAGS) or args.config_dir or args.config_path:
        return
    from clplat.config import validate_config  # free of torch: the checks below answer in about a second

    check_sweeper(list(args.overrides))
    config_name = args.config_name or "train"
    overrides = list(args.overrides)
    try:
        variants = _expand_overrides(overrides, args.multirun)
    except Exception as err:  # noqa: BLE001 - any parse error is a usage error
        fail(_one_line(err))
    if args.multirun:  # the sweeper chosen on the command line or in a config file
        with _failing_as_config_error(variants[0], config_name):
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                sweeper = compose(config_name=config_name, overrides=variants[0], return_hydra_config=True).hydra.sweeper
        check_sweep_direction(sweeper)
        # a search space written in a config file is checked like one given on the command line
        from_files = [f"{SWEEPER_PARAMS}{key}={quoted(str(value))}" for key, value in (sweeper.get("params") or {}).items()
                      if not any(o.lstrip("+").startswith(f"{SWEEPER_PARAMS}{key}=") for o in overrides)]
        if from_files:
            variants = _expand_overrides(overrides + from_files, True)
    composed = []
    for overrides in variants:  # keys, values and ranges first, before torch and Lightning load
        with _failing_as_config_error(overrides, config_name):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name=config_name, overrides=overrides)
            validate_config(cfg)
            composed.append((overrides, cfg))
    from clplat.distributed import check_ddp_support
    from clplat.experiment import build_backbone, build_hooks, build_optimizer
    from clplat.logging import check_logger_targets
    from clplat.trainer_options import build_callbacks, lightning_options

    for overrides, cfg in composed:  # then what only building the parts can tell
        with _failing_as_config_error(overrides, config_name):
            check_ddp_support(cfg.trainer, build_hooks(cfg))
            build_optimizer(cfg)
            build_backbone(cfg, input_size=1)  # the stream (and its input size) is built by the run
            lightning_options(cfg.trainer.get("lightning"))
            build_callbacks(cfg.get("callbacks"))
            check_logger_targets(cfg.get("logger"))


def check_sweeper(overrides: list[str]) -> None:
    """The sweeper asked for is installed, and the basic sweeper gets no range it cannot sweep."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.plugins import Plugins

    chosen = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("hydra/sweeper=")]
    sweeper = chosen[-1] if chosen else "basic"
    if sweeper != "basic":
        Plugins.instance()  # imports the installed plugins, which register their sweeper configs
        installed = sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list("hydra/sweeper"))
        if sweeper not in installed:
            # hydra-optuna-sweeper declares optuna<3 but runs on clplat's Optuna (docs/sweeps.md)
            hint = " (pip install --no-deps hydra-optuna-sweeper)" if sweeper == "optuna" else \
                f" (pip install hydra-{sweeper}-sweeper)"
            fail(f"hydra/sweeper={sweeper} is not valid: its plugin is not installed; installed sweepers: "
                 f"{', '.join(installed)}{hint}")
        params_default = ConfigStore.instance().load(f"hydra/sweeper/{sweeper}.yaml").node.get("params", {})
        cli_params = [o for o in overrides if o.lstrip("+").startswith(SWEEPER_PARAMS.rstrip("."))]
        if cli_params and params_default is None:  # OmegaConf cannot extend a null node from the command line
            fail(f"{cli_params[0]} is not valid with hydra/sweeper={sweeper}: its params default to null, which "
                 "the command line cannot extend; write the key itself (optimizer.lr=interval(0.0005,0.01)) "
                 "or hydra.sweeper.params in a config file (docs/sweeps.md)")
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - the override parser's own error comes next, from _expand_overrides
        return
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override() and override.is_interval_sweep():
            fail(f"{text} is not valid: the basic sweeper takes lists (a,b,c or range(...)); an interval needs "
                 "a sampling sweeper (hydra/sweeper=<name>) or clplat-tune, whose search spaces are declared "
                 "in the configs")


def check_sweep_direction(hydra_sweeper: Any) -> None:
    """A sweeper that optimises a direction (Optuna's ``direction``, default ``minimize``) must
    maximise: a clplat job returns its final average accuracy. Refused before any job, in one line."""
    if "direction" not in hydra_sweeper:
        return
    direction = str(hydra_sweeper.direction).rsplit(".", 1)[-1]  # Optuna's is an enum: Direction.minimize
    if direction != "maximize":
        fail(f"hydra.sweeper.direction={direction} is not valid: a clplat job returns its final average "
             "accuracy (higher is better); set hydra.sweeper.direction=maximize")


@contextmanager
def _failing_as_config_error(overrides: list[str], config_name: str) -> Iterator[None]:
    """Any error inside ends the command with one line and exit code 2 (it is the config's)."""
    from hydra.core.global_hydra import GlobalHydra

    try:
        yield
    except ConfigError as err:
        fail(str(err))
    except Exception as err:  # noqa: BLE001 - composition/instantiation errors are config errors
        fail(_explain(err, overrides, config_name))
    finally:
        GlobalHydra.instance().clear()
