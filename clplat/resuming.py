"""``clplat-train resume=<run dir>``: continue a run with its own saved config."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from clplat.cli import fail, quoted


def resume_arguments(argv: Sequence[str]) -> list[str] | None:
    """``resume=<run_dir>`` alone -> the arguments that make Hydra run in that directory.

    The run continues with its own saved config, so other overrides are refused rather than
    silently ignored; Hydra writes no new ``.hydra/`` there (the original one is kept).
    """
    resume = [a for a in argv if a.startswith("resume=")]
    if not resume:
        return None
    raw = resume[-1].split("=", 1)[1]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":  # quoted: our own, re-run by a DDP rank
        from hydra.core.override_parser.overrides_parser import OverridesParser

        raw = str(OverridesParser.create().parse_overrides([f"resume={raw}"])[0].value())
    path = Path(raw).expanduser()
    others = [a for a in argv if not a.startswith(("resume=", "hydra."))]
    if others:
        fail(f"resume={path} takes no other overrides (the run continues with its own config.yaml); got {' '.join(others)}")
    if not (path / "config.yaml").is_file():
        fail(f"resume={str(path)!r} is not valid: not a clplat run directory (no config.yaml)")
    where = quoted(str(path.resolve()))  # a sweep job's directory holds '=' and ',' (its overrides)
    return [f"resume={where}", f"hydra.run.dir={where}", "hydra.output_subdir=null"]
