"""Finding and reading run directories: one run, or every run of a Hydra multirun.

A run directory is self-describing (``metrics.csv``, ``summary.json``, ``config.yaml``, and
Hydra's ``.hydra/overrides.yaml``), so reports and notebooks need nothing but its path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clplat.evaluation.metrics import prepare_table

#: the headline metrics of a report, in display order
REPORT_METRICS = ("avg_acc", "forgetting", "bwt", "min_acc", "wc_acc", "sg_depth_mean", "wall_time_s")


def _read_yaml(path: Path) -> Any:
    import yaml  # ships with Hydra/OmegaConf

    with path.open() as fh:
        return yaml.safe_load(fh)


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any] | None]:
    """Read a run directory: ``(results table, summary, config)``.

    The table is normalised by :func:`prepare_table` so metrics and plots apply directly. The
    summary is ``{}`` when ``summary.json`` is absent (a run that did not finish); the config is
    read from ``config.yaml``, else Hydra's ``.hydra/config.yaml``, else ``None``.
    """
    run = Path(run_dir)
    metrics_path = run / "metrics.csv"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no metrics.csv in run directory {run}")
    table = prepare_table(pd.read_csv(metrics_path))
    summary_path = run / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    config: dict[str, Any] | None = None
    for candidate in (run / "config.yaml", run / ".hydra" / "config.yaml"):
        if candidate.is_file():
            loaded = _read_yaml(candidate)
            config = loaded if isinstance(loaded, dict) else None
            break
    return table, summary, config


def find_runs(path: str | Path) -> list[Path]:
    """Every finished run (a directory holding ``summary.json``) at or below ``path``."""
    root = Path(path)
    if (root / "summary.json").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("summary.json"))


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in _read_yaml(path) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def collect_runs(path: str | Path) -> pd.DataFrame:
    """One row per finished run: its overrides (the swept keys) and its headline metrics."""
    rows = []
    for run in find_runs(path):
        summary = json.loads((run / "summary.json").read_text())
        row: dict[str, Any] = {"run_dir": str(run), **_overrides(run)}
        row.setdefault("strategy", summary.get("strategy"))
        row.setdefault("stream", summary.get("stream"))
        row.setdefault("seed", str(summary.get("seed")))
        for key in REPORT_METRICS:
            value = summary.get(key)
            row[key] = np.nan if value is None else float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame, group_by: list[str] | None = None) -> pd.DataFrame:
    """Mean and std over seeds of every metric, grouped by the keys that vary (seed excluded)."""
    if runs.empty:
        return runs
    if group_by is None:
        candidates = [c for c in runs.columns if c not in (*REPORT_METRICS, "run_dir", "seed")]
        group_by = [c for c in candidates if runs[c].astype(str).nunique() > 1] or ["strategy"]
    grouped = runs.groupby([runs[c].astype(str) for c in group_by], sort=True)
    table = grouped[list(REPORT_METRICS)].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table.insert(0, "runs", grouped.size())
    return table.reset_index()


def to_markdown(table: pd.DataFrame, group_by: list[str]) -> str:
    """Render ``aggregate``'s table as Markdown with ``mean ± std`` cells."""
    header = [*group_by, "runs", *REPORT_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[c]) for c in group_by] + [str(int(row["runs"]))]
        for metric in REPORT_METRICS:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            if np.isnan(mean):
                cells.append("n/a")
            elif np.isnan(std):
                cells.append(f"{mean:.3f}")
            else:
                cells.append(f"{mean:.3f} ± {std:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
