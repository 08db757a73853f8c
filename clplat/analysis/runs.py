"""Finding and reading run directories: one run, or every run of a Hydra multirun.

A run directory is self-describing (``metrics.csv``, ``summary.json``, ``config.yaml``, and
Hydra's ``.hydra/overrides.yaml``), so reports and notebooks need nothing but its path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd

from clplat.evaluation.metrics import accuracy_matrix, prepare_table

#: the headline metrics of a report, in display order
REPORT_METRICS = ("avg_acc", "forgetting", "bwt", "min_acc", "wc_acc", "sg_depth_mean", "wall_time_s")
#: their column titles in the Markdown table (the CSV keeps the metric keys)
REPORT_LABELS = {"avg_acc": "final acc", "forgetting": "forgetting", "bwt": "BWT", "min_acc": "min-ACC",
                 "wc_acc": "WC-ACC", "sg_depth_mean": "SG depth", "wall_time_s": "wall time (s)"}

JOB_ERROR_FILE = "error.txt"
"""Written into a multirun job's directory when the job fails (first line: the reason)."""
SWEEP_FAILURES_FILE = "failed_jobs.txt"
"""Written into a multirun directory when jobs failed: one ``<job dir>\t<reason>`` per line, plus
``\tSLURM job <id>, log <path>`` for a job that ran under SLURM."""
SLURM_LINE_PREFIX = "slurm: "
"""Starts the line of ``error.txt`` that names a SLURM job's id and log (``slurm: SLURM job 12_3, log ...``)."""

#: values of a run's row that are not override keys
_NOT_KEYS = (*REPORT_METRICS, "run_dir", "seed", "group")
_DEFAULT_VALUE = "(default)"


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


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """The keys whose value differs between runs (seed excluded): what a report groups by.

    Overrides shared by every run (a common ``trainer.iterations=...``, ``launcher=joblib``)
    say nothing about the comparison and are left out; ``["strategy"]`` when nothing varies.
    """
    candidates = [c for c in runs.columns if c not in _NOT_KEYS]
    return [c for c in candidates if _key_values(runs[c]).nunique() > 1] or ["strategy"]


def _key_values(column: pd.Series) -> pd.Series:
    """Override values as text; a run that did not override the key shows ``(default)``."""
    return column.astype(object).where(column.notna(), _DEFAULT_VALUE).astype(str)


def group_labels(runs: pd.DataFrame, group_by: list[str]) -> pd.Series:
    """One label per run for legends: the value alone for one key, ``key=value, ...`` for several."""
    values = [_key_values(runs[c]) for c in group_by]
    if len(values) == 1:
        return values[0].rename("group")
    return pd.Series([", ".join(f"{k}={v}" for k, v in zip(group_by, row)) for row in zip(*values)],
                     index=runs.index, name="group")


def aggregate(runs: pd.DataFrame, group_by: list[str] | None = None) -> pd.DataFrame:
    """Mean and std over seeds of every metric, grouped by the keys that vary (seed excluded)."""
    if runs.empty:
        return runs
    if group_by is None:
        group_by = swept_keys(runs)
    missing = [c for c in group_by if c not in runs.columns]
    if missing:
        raise KeyError(f"cannot group by {', '.join(missing)}: the runs have keys {', '.join(runs.columns)}")
    grouped = runs.groupby([_key_values(runs[c]) for c in group_by], sort=True)
    table = grouped[list(REPORT_METRICS)].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table.insert(0, "runs", grouped.size())
    return table.reset_index()


def to_markdown(table: pd.DataFrame, group_by: list[str]) -> str:
    """Render ``aggregate``'s table as Markdown with ``mean ± std`` cells (std over the group's runs)."""
    header = [*group_by, "runs", *(REPORT_LABELS.get(m, m) for m in REPORT_METRICS)]
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


@dataclass(frozen=True)
class FailedJob:
    """A multirun job that failed: its directory and the one-line reason from ``error.txt``."""

    job_dir: Path
    message: str
    slurm: str = ""
    """``SLURM job <id>, log <path>`` when the job ran under SLURM, else empty."""


def find_failed_jobs(path: str | Path, since: float | None = None) -> list[FailedJob]:
    """Every failed job (a directory holding ``error.txt``) at or below ``path``.

    ``since`` (a POSIX time) keeps only errors written from then on: the jobs of the sweep that
    just ended, not those of an earlier sweep into the same directory.
    """
    root = Path(path)
    found = [root / JOB_ERROR_FILE] if (root / JOB_ERROR_FILE).is_file() else sorted(root.rglob(JOB_ERROR_FILE))
    failed = []
    for error_file in found:
        if since is not None and error_file.stat().st_mtime < since:
            continue
        text = error_file.read_text(errors="replace").strip().splitlines()
        slurm = next((line[len(SLURM_LINE_PREFIX):] for line in text[1:4] if line.startswith(SLURM_LINE_PREFIX)), "")
        failed.append(FailedJob(error_file.parent, text[0] if text else "(no message)", slurm))
    return failed


def _newest_with_summary(roots: Iterable[Path], depth: int) -> Path | None:
    """The most recently finished directory holding ``summary.json`` ``depth`` levels below ``roots``."""
    pattern = "/".join(["*"] * depth + ["summary.json"])
    candidates = [p for root in roots if root.is_dir() for p in root.glob(pattern)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime).parent


def resolve_run_path(path: str | Path | None = None, kind: Literal["run", "sweep", "any"] = "run",
                     start: str | Path | None = None) -> Path:
    """The run (or sweep) directory a notebook or report should read.

    ``path`` given: it, checked to hold at least one finished run. ``None``: the newest one of
    the project — ``runs/<date>/<run>`` for ``kind="run"``, ``multirun/<date>/<time>`` for
    ``kind="sweep"``, whichever finished last for ``"any"`` — looked for from ``start``
    (default: the working directory) and its parents, so a notebook opened in ``notebooks/``
    finds the runs of the checkout.
    """
    if path is not None:
        resolved = Path(path).expanduser()
        if not resolved.exists():
            raise FileNotFoundError(f"{resolved} does not exist")
        if not find_runs(resolved):
            raise FileNotFoundError(f"{resolved} holds no finished run (no summary.json at or below it)")
        return resolved
    here = Path(start) if start is not None else Path.cwd()
    for directory in (here, *here.resolve().parents):
        candidates = []
        if kind in ("run", "any"):
            candidates.append(_newest_with_summary([directory / "runs"], depth=2))
        if kind in ("sweep", "any"):
            job = _newest_with_summary([directory / "multirun"], depth=3)
            candidates.append(job.parent if job is not None else None)
        found = [c for c in candidates if c is not None]
        if found:
            return max(found, key=lambda p: max(s.stat().st_mtime for s in p.rglob("summary.json")))
    where = {"run": "runs/", "sweep": "multirun/", "any": "runs/ or multirun/"}[kind]
    raise FileNotFoundError(f"no finished {kind} under {where} in {here} or its parents; pass its path")


def accuracy_matrix_table(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy matrix ``R[i, j]`` as a labelled frame (rows: after experience i; columns: task j)."""
    R = accuracy_matrix(prepare_table(table))
    return pd.DataFrame(R, index=pd.Index([f"after exp {i}" for i in range(R.shape[0])], name="R[i, j]"),
                        columns=[f"task {j}" for j in range(R.shape[1])])
