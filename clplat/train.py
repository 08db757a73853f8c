"""``clplat-train``: the Hydra entry point (also ``python -m clplat.train``).

Before Hydra creates any output directory, a preflight composes the config for the given
overrides (for a multirun, for every value of every swept key) and checks it, so a typo or a bad
value stops everything with one line and exit code 2 instead of a multi-line Hydra report, a
half-created run directory, or a sweep that fails in its twentieth job.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig

from clplat.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# flags after which Hydra prints or inspects instead of running: nothing to check
_INSPECT_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
                  "--shell-completion", "-sc")


def fail(message: str, code: int = 2) -> None:
    print(f"clplat: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


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


def _expand_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists to check: the given one, or one per swept value (others at their first)."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base, sweeps = [], []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override() and override.is_discrete_sweep() and not override.value_type.name.startswith("GLOB"):
            values = list(override.sweep_string_iterator())
            key = override.get_key_element()
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


def resume_arguments(argv: Sequence[str]) -> list[str] | None:
    """``resume=<run_dir>`` alone -> the arguments that make Hydra run in that directory.

    The run continues with its own saved config, so other overrides are refused rather than
    silently ignored; Hydra writes no new ``.hydra/`` there (the original one is kept).
    """
    resume = [a for a in argv if a.startswith("resume=")]
    if not resume:
        return None
    path = Path(resume[-1].split("=", 1)[1]).expanduser()
    others = [a for a in argv if not a.startswith(("resume=", "hydra."))]
    if others:
        fail(f"resume={path} takes no other overrides (the run continues with its own config.yaml); got {' '.join(others)}")
    if not (path / "config.yaml").is_file():
        fail(f"resume={str(path)!r} is not valid: not a clplat run directory (no config.yaml)")
    return [f"resume={path.resolve()}", f"hydra.run.dir={path.resolve()}", "hydra.output_subdir=null"]


def preflight(argv: Sequence[str]) -> None:
    """Compose and validate the config(s) that ``argv`` asks for; exit 2 on the first problem."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        raise
    if any(flag in argv for flag in _INSPECT_FLAGS) or args.config_dir or args.config_path:
        return
    from clplat.config import validate_config
    from clplat.experiment import build_backbone, build_optimizer, build_strategy

    try:
        variants = _expand_overrides(list(args.overrides), args.multirun)
    except Exception as err:  # noqa: BLE001 - any parse error is a usage error
        fail(_one_line(err))
    for overrides in variants:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name=args.config_name or "train", overrides=overrides)
            validate_config(cfg)
            build_strategy(cfg)
            build_optimizer(cfg)
            build_backbone(cfg, input_size=1)  # the stream (and its input size) is built by the run
        except ConfigError as err:
            fail(str(err))
        except Exception as err:  # noqa: BLE001 - composition/instantiation errors are config errors
            fail(_one_line(err))
        finally:
            GlobalHydra.instance().clear()


# an absolute path: relative ones resolve against the module name when run as a console script
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from omegaconf import OmegaConf, open_dict

    from clplat.errors import RunInterrupted, TrainingDiverged
    from clplat.experiment import run_experiment

    resume = cfg.get("resume")
    if resume:
        run_dir = Path(resume)
        cfg = OmegaConf.load(run_dir / "config.yaml")
        with open_dict(cfg):
            cfg.run_dir, cfg.resume = str(run_dir), str(run_dir)
    try:
        result = run_experiment(cfg, resume=bool(resume))
    except ConfigError as err:
        fail(str(err))
    except TrainingDiverged as err:
        fail(f"{err}; results so far are in {cfg.run_dir}", code=1)
    except RunInterrupted as err:
        fail(f"{err}: results so far are in {cfg.run_dir}; continue with: clplat-train resume={cfg.run_dir}",
             code=128 + err.signum)
    # returned for sweepers that optimise a metric (e.g. Optuna)
    return result.summary.get("avg_acc")


def main() -> None:
    argv = sys.argv[1:]
    resumed = resume_arguments(argv)
    if resumed is not None:
        sys.argv = [sys.argv[0], *resumed]
    else:
        preflight(argv)
    _hydra_main()


if __name__ == "__main__":
    main()
