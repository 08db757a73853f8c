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

from clplat.analysis.stats import CLAIM_SEEDS, CONFIDENCE, paired_difference, summarize_seeds
from clplat.evaluation.metrics import accuracy_matrix, prepare_table

#: the headline metrics of a report, in display order
REPORT_METRICS = ("avg_acc", "avg_incremental_acc", "forgetting", "bwt", "fwt", "min_acc", "wc_acc", "wf10",
                  "wp10", "sg_depth_mean", "sg_recovery_iters_mean", "wall_time_s")
#: their column titles in the Markdown table (the CSV keeps the metric keys)
REPORT_LABELS = {"avg_acc": "final acc", "avg_incremental_acc": "avg incremental acc", "forgetting": "forgetting",
                 "bwt": "BWT", "fwt": "FWT", "min_acc": "min-ACC", "wc_acc": "WC-ACC", "wf10": "WF10",
                 "wp10": "WP10", "sg_depth_mean": "SG depth", "sg_recovery_iters_mean": "SG recovery (iters)",
                 "wall_time_s": "wall time (s)"}
#: override keys that change how a run is launched, logged or shown, never its results: two sweeps
#: reported together are not split by them
PRESENTATION_KEYS = ("launcher", "logger", "plots", "print_summary", "progress", "trainer.checkpoint",
                     "trainer.enable_progress_bar", "trainer.log_every_n_steps")
PRESENTATION_PREFIXES = ("hydra.", "logger.", "launcher.")

RESOURCE_PREFIX = "resources."
"""Column prefix of the numeric entries of ``summary["resources"]`` (memory, compute counts)."""

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


@dataclass
class RunData:
    """A run directory read back: its results table, summary, config and, on demand, its models.

    Unpacks (and indexes) as the tuple ``(table, summary, config)``.
    """

    run_dir: Path
    table: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any] | None

    def __iter__(self):  # noqa: ANN204 - tuple-style unpacking
        return iter((self.table, self.summary, self.config))

    def __getitem__(self, index: int) -> Any:
        return (self.table, self.summary, self.config)[index]

    def checkpoints(self) -> dict[int, Path]:
        """The boundary checkpoints on disk, by experience."""
        found = {}
        for path in (self.run_dir / "checkpoints").glob("exp_*.ckpt"):
            index = path.stem.removeprefix("exp_")
            if index.isdigit():
                found[int(index)] = path
        return dict(sorted(found.items()))

    def model(self, experience: int | None = None, map_location: Any = "cpu") -> Any:
        """The ``ContinualModule`` at the end of ``experience`` (default: the last checkpointed one),
        in eval mode, with the strategy's state (``model.strategy.predict`` is what was scored)."""
        from clplat.loading import model_from_checkpoint

        checkpoints = self.checkpoints()
        if not checkpoints:
            raise FileNotFoundError(f"no checkpoints in {self.run_dir} (was it run with trainer.checkpoint=false?)")
        k = max(checkpoints) if experience is None else experience
        if k not in checkpoints:
            raise KeyError(f"no checkpoint for experience {k} in {self.run_dir}; available: {sorted(checkpoints)}")
        return model_from_checkpoint(checkpoints[k], map_location)


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory: results table, summary, config (and models, see :class:`RunData`).

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
    return RunData(run, table, summary, config)


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
    """One row per finished run: its overrides (the swept keys) and its headline metrics.

    The numeric entries of the summary's ``resources`` dict (memory, samples, optimizer
    steps, ...) become ``resources.<key>`` columns, reported beside the metrics; runs written
    before that dict existed simply have none.
    """
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
        resources = summary.get("resources")
        for key, value in (resources.items() if isinstance(resources, dict) else ()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"{RESOURCE_PREFIX}{key}"] = float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def report_metrics(runs: pd.DataFrame) -> list[str]:
    """The columns a report summarises: the headline metrics, then any ``resources.<key>``."""
    return [*REPORT_METRICS, *(c for c in runs.columns if str(c).startswith(RESOURCE_PREFIX))]


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """The keys whose value differs between runs (seed excluded): what a report groups by.

    Overrides shared by every run (a common ``trainer.iterations=...``, ``launcher=joblib``)
    say nothing about the comparison and are left out; ``["strategy"]`` when nothing varies.
    """
    candidates = [c for c in runs.columns if c not in _NOT_KEYS and not str(c).startswith(RESOURCE_PREFIX)
                  and c not in PRESENTATION_KEYS and not str(c).startswith(PRESENTATION_PREFIXES)]
    return [c for c in candidates if _key_values(runs[c]).nunique() > 1] or ["strategy"]


def shared_settings(runs: pd.DataFrame) -> dict[str, str]:
    """Overrides every run has with the same value (seed and presentation keys excluded): the
    setting a report's rows share, recorded beside the table."""
    shared = {}
    for column in runs.columns:
        if column in _NOT_KEYS or str(column).startswith(RESOURCE_PREFIX) or column in PRESENTATION_KEYS \
                or str(column).startswith(PRESENTATION_PREFIXES):
            continue
        values = runs[column]
        if values.notna().all() and values.astype(str).nunique() == 1:
            shared[str(column)] = str(values.iloc[0])
    return shared


def with_config_values(runs: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    """Add each ``key`` that no run overrode as a column read from every run's ``config.yaml``
    (``optimizer.lr``, ``backbone.hidden_size``, ...), so a report can group by any setting.

    Raises ``KeyError`` naming a key that no run's config has.
    """
    runs = runs.copy()
    for key in keys:
        if key in runs.columns and runs[key].notna().all():
            continue
        values = []
        for run_dir, current in zip(runs["run_dir"], runs.get(key, pd.Series([None] * len(runs)))):
            if isinstance(current, str):
                values.append(current)
                continue
            config = Path(run_dir) / "config.yaml"
            node: Any = (_read_yaml(config) if config.is_file() else None) or {}
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            values.append(None if node is None else str(node))
        if all(v is None for v in values):
            raise KeyError(f"--by {key!r}: no run sets or has this key in its config.yaml")
        runs[key] = values
    return runs


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


def _seed_order(seed: Any) -> tuple[int, float, str]:
    """Sort key for seeds read as text: numeric seeds numerically (2 before 10), then the rest."""
    text = str(seed)
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _by_seed(part: pd.DataFrame, metric: str) -> dict[str, float]:
    """``{seed: value}`` of one group's runs; several runs of one seed are averaged (NaN-aware)."""
    values = part.groupby(part["seed"].astype(str), sort=False)[metric].mean()
    return {seed: float(values[seed]) for seed in sorted(values.index, key=_seed_order)}


def _per_seed_text(part: pd.DataFrame, metric: str) -> str:
    """``seed:value`` for every run of a group, seed order, full precision (``nan`` when missing)."""
    pairs = sorted(zip(part["seed"].astype(str), part[metric]), key=lambda pair: _seed_order(pair[0]))
    return " ".join(f"{seed}:{float(value):.6g}" for seed, value in pairs)


def _group_label(values: tuple[str, ...], group_by: list[str]) -> str:
    """The label of a group, as :func:`group_labels` writes it (``--baseline`` takes one)."""
    return values[0] if len(values) == 1 else ", ".join(f"{k}={v}" for k, v in zip(group_by, values))


def _groups(runs: pd.DataFrame, group_by: list[str]) -> list[tuple[tuple[str, ...], pd.DataFrame]]:
    missing = [c for c in group_by if c not in runs.columns]
    if missing:
        raise KeyError(f"cannot group by {', '.join(missing)}: the runs have keys {', '.join(runs.columns)}")
    grouped = runs.groupby([_key_values(runs[c]) for c in group_by], sort=True)
    return [(key if isinstance(key, tuple) else (key,), part) for key, part in grouped]


def aggregate(runs: pd.DataFrame, group_by: list[str] | None = None) -> pd.DataFrame:
    """Per group of runs (seeds excluded from the grouping), for every metric of :func:`report_metrics`:

    ``<metric>_n`` (runs with a value: a metric missing in a run does not count),
    ``<metric>_mean``, ``<metric>_std`` (sample std, n-1), ``<metric>_ci_low`` /
    ``<metric>_ci_high`` (95 % Student-t interval of the mean, NaN below 2 values) and
    ``<metric>_per_seed`` (``seed:value ...``), after the group keys and ``runs``.
    """
    if runs.empty:
        return runs
    if group_by is None:
        group_by = swept_keys(runs)
    metrics = report_metrics(runs)
    rows = []
    for values, part in _groups(runs, group_by):
        row: dict[str, Any] = {**dict(zip(group_by, values)), "runs": len(part)}
        for metric in metrics:
            stats = summarize_seeds(part[metric])
            row.update({f"{metric}_n": stats.n, f"{metric}_mean": stats.mean, f"{metric}_std": stats.std,
                        f"{metric}_ci_low": stats.low, f"{metric}_ci_high": stats.high,
                        f"{metric}_per_seed": _per_seed_text(part, metric)})
        rows.append(row)
    return pd.DataFrame(rows)


def _table_metrics(table: pd.DataFrame, group_by: list[str]) -> list[str]:
    return [c[: -len("_mean")] for c in table.columns if str(c).endswith("_mean") and c not in group_by]


def _label(metric: str) -> str:
    if metric.startswith(RESOURCE_PREFIX):
        return metric[len(RESOURCE_PREFIX):]
    return REPORT_LABELS.get(metric, metric)


def _decimals(reference: float) -> int:
    """3 decimals for accuracies and short times; none from 100 up (counts, bytes, long wall times)."""
    return 0 if np.isfinite(reference) and abs(reference) >= 100 else 3


def _num(value: float, decimals: int, sign: bool = False) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:{'+' if sign else ''},.{decimals}f}"


def to_markdown(table: pd.DataFrame, group_by: list[str]) -> str:
    """Render ``aggregate``'s table as Markdown: ``mean ± std [CI low, CI high]`` cells.

    The std is over the group's runs; the bracket is the 95 % t interval of the mean. A group
    of one run shows its value alone (no spread, no interval); a cell whose metric is missing
    in some runs says on how many it rests (``(n=3)``).
    """
    # a metric no group has (FWT in class-IL, recovery where no gap was found) gets no column
    metrics = [m for m in _table_metrics(table, group_by) if table[f"{m}_mean"].notna().any()]
    header = [*group_by, "runs", *(_label(m) for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[c]) for c in group_by] + [str(int(row["runs"]))]
        for metric in metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            digits = _decimals(mean)
            if np.isnan(mean):
                cell = "n/a"
            elif np.isnan(std):
                cell = _num(mean, digits)
            else:
                cell = f"{_num(mean, digits)} ± {_num(std, digits)}"
                low, high = row.get(f"{metric}_ci_low", np.nan), row.get(f"{metric}_ci_high", np.nan)
                if np.isfinite(low) and np.isfinite(high):
                    cell += f" [{_num(low, digits)}, {_num(high, digits)}]"
            n = row.get(f"{metric}_n")
            if n is not None and not np.isnan(mean) and int(n) < int(row["runs"]):
                cell += f" (n={int(n)})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_markdown(runs: pd.DataFrame, group_by: list[str]) -> str:
    """Every run's value, one row per metric and group, one column per seed.

    Lets a reader see what a mean and interval rest on, and which seeds two groups share (the
    pairs of the paired test). ``–``: the group has no run of that seed; ``n/a``: the run has
    no value; several runs of one seed are listed ``a / b``. Empty when every group is one run
    (the main table already shows each value).
    """
    groups = _groups(runs, group_by)
    if all(len(part) == 1 for _, part in groups):
        return ""
    seeds = sorted(set(runs["seed"].astype(str)), key=_seed_order)
    group_title = ", ".join(group_by)
    header = ["metric", group_title, *(f"seed {s}" for s in seeds)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in report_metrics(runs):
        if runs[metric].isna().all():
            continue
        digits = _decimals(float(runs[metric].abs().max()))
        for values, part in groups:
            part_seeds = part["seed"].astype(str)
            cells = [_label(metric), _group_label(values, group_by)]
            for seed in seeds:
                found = part.loc[part_seeds == seed, metric]
                cells.append(" / ".join(_num(float(v), digits) for v in found) if len(found) else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_warning(runs: pd.DataFrame, group_by: list[str]) -> str:
    """One line naming the groups with fewer than 5 seeds (claims need 5); empty otherwise."""
    few = [(_group_label(values, group_by), part["seed"].astype(str).nunique())
           for values, part in _groups(runs, group_by)]
    few = [(label, n) for label, n in few if n < CLAIM_SEEDS]
    if not few:
        return ""
    listed = ", ".join(f"{label} ({n})" for label, n in few)
    return (f"**Warning:** fewer than {CLAIM_SEEDS} seeds in {listed}; claims need {CLAIM_SEEDS} seeds.")


def group_label_values(runs: pd.DataFrame, group_by: list[str]) -> list[str]:
    """The labels of the groups, in table order: the values ``--baseline`` accepts."""
    return [_group_label(values, group_by) for values, _ in _groups(runs, group_by)]


def paired_differences(runs: pd.DataFrame, group_by: list[str], baseline: str) -> pd.DataFrame:
    """Every other group minus ``baseline``, per metric, paired over the seeds both have.

    One row per (group, metric): ``n`` shared seeds with a value on both sides, ``mean_diff``
    (group − baseline), its ``std``, ``ci_low``/``ci_high`` (95 % t interval of the mean
    difference; NaN below 2 shared seeds) and ``significant`` (the interval excludes 0).
    Pairing by seed removes the seed-to-seed variation both groups share, so it is the test
    to use when the groups ran on the same seeds. Several runs of one seed are averaged first;
    metrics that no run has are left out.
    """
    groups = _groups(runs, group_by)
    labels = [_group_label(values, group_by) for values, _ in groups]
    if baseline not in labels:
        raise KeyError(f"baseline {baseline!r} is not a group; the groups are: {', '.join(map(repr, labels))}")
    base = groups[labels.index(baseline)][1]
    metrics = [m for m in report_metrics(runs) if runs[m].notna().any()]  # not those no run has
    rows = []
    for label, (_, part) in zip(labels, groups):
        if label == baseline:
            continue
        for metric in metrics:
            diff = paired_difference(_by_seed(part, metric), _by_seed(base, metric))
            rows.append({"group": label, "baseline": baseline, "metric": metric, "n": diff.n,
                         "mean_diff": diff.mean, "std": diff.std, "ci_low": diff.low, "ci_high": diff.high,
                         "significant": diff.significant, "seeds": " ".join(map(str, diff.seeds))})
    return pd.DataFrame(rows, columns=["group", "baseline", "metric", "n", "mean_diff", "std", "ci_low",
                                       "ci_high", "significant", "seeds"])


def paired_markdown(paired: pd.DataFrame, group_by: list[str]) -> str:
    """``paired_differences`` as Markdown; the verdict says whether the interval contains 0."""
    header = ["metric", ", ".join(group_by), "shared seeds", "mean diff ± std", f"{CONFIDENCE * 100:g} % CI", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in paired.iterrows():
        digits = _decimals(row["mean_diff"])
        n = int(row["n"])
        if n >= 2:
            diff = f"{_num(row['mean_diff'], digits, sign=True)} ± {_num(row['std'], digits)}"
            ci = f"[{_num(row['ci_low'], digits, sign=True)}, {_num(row['ci_high'], digits, sign=True)}]"
            verdict = "significant" if row["significant"] else "not significant"
        else:
            diff = _num(row["mean_diff"], digits, sign=True)
            ci, verdict = "n/a", "n/a (needs >= 2 shared seeds)"
        lines.append("| " + " | ".join([_label(row["metric"]), row["group"], str(n), diff, ci, verdict]) + " |")
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
