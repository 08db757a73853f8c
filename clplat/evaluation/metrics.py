"""Continual-learning metrics as pure functions of the results table.

Every metric here is computed *after the fact* from the tidy table the evaluator writes (one row
per evaluation and evaluated task; see ``TABLE_COLUMNS``), never from state kept during training.
That keeps the numbers reproducible from ``metrics.csv`` alone, lets a notebook recompute them
with other parameters (window, tolerance), and makes every metric unit-testable on a table
written by hand.

Conventions (see ``docs/metrics.md`` for the full definitions and their sources):

* Tasks and experiences are **0-based** in code; the reference formulas are 1-based.
* Accuracies are fractions in ``[0, 1]``; "depth" and "drop" values are in the same units.
* Averages over tasks are **macro** (each task weighs the same) and skip entries that were not
  evaluated (NaN). A metric that is undefined (for instance BWT with one experience) is NaN,
  never 0, so "no forgetting" and "nothing to measure" stay distinguishable.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

TABLE_COLUMNS: tuple[str, ...] = (
    "global_iter",
    "experience",
    "eval_task",
    "correct",
    "n",
    "loss",
    "accuracy",
    "chance",
    "boundary",
    "initial",
)
"""Columns of the results table written by the evaluator (the contract). ``chance`` (the
accuracy of a uniform guess among the classes the model could predict) may be absent in tables
from elsewhere; it is then unknown (NaN) and no task is treated as being at chance."""

_REQUIRED_COLUMNS: tuple[str, ...] = ("global_iter", "experience", "eval_task", "boundary", "initial")
_INT_COLUMNS: tuple[str, ...] = ("global_iter", "experience", "eval_task")
_BOOL_COLUMNS: tuple[str, ...] = ("boundary", "initial")

GAP_COLUMNS: tuple[str, ...] = (
    "experience",
    "task",
    "boundary_iter",
    "acc_at_boundary",
    "chance",
    "tolerance",
    "at_chance",
    "min_acc",
    "depth",
    "iter_of_min",
    "has_gap",
    "recovered",
    "recovery_iters",
    "acc_at_end",
    "transient",
    "permanent",
    "n_evals",
)
"""Columns of the frame returned by :func:`stability_gap`."""

DEFAULT_SE_MULTIPLIER: float = 2.0
"""The stability-gap tolerance, in binomial standard errors of the task's subset accuracy at the
boundary (about a 95 % band): differences smaller than that are what the subset size can tell."""

DEFAULT_TOLERANCE: float | None = None
"""``None``: the tolerance scales with each subset's standard error (``DEFAULT_SE_MULTIPLIER``);
a number fixes it for every case instead."""

_EPS = 1e-9  # absorbs float rounding when comparing accuracies (multiples of 1/n) to thresholds


# --------------------------------------------------------------------------------------------
# Table handling
# --------------------------------------------------------------------------------------------


def _as_bool(series: pd.Series) -> pd.Series:
    """Coerce a boolean column that may have round-tripped through CSV or a logger as text/ints."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(bool)
    if pd.api.types.is_numeric_dtype(series):
        return series.fillna(0).astype(float) != 0.0
    text = series.astype(str).str.strip().str.lower()
    return text.isin(("true", "1", "yes", "t", "1.0"))


_PREPARED = "clplat_prepared_table"


def prepare_table(table: pd.DataFrame) -> pd.DataFrame:
    """Validate the results table and return a normalised copy sorted by time then task.

    Every metric calls this first so callers may pass a table straight from ``read_csv`` or from
    a logger: ``accuracy`` is derived from ``correct / n`` when absent (the evaluator may store
    counts only, because counts are what DDP reduces), flags are coerced to ``bool``, and index
    columns to ``int``. Extra columns are kept untouched.

    A table this function returned is marked (``DataFrame.attrs``) and passed through as is, so
    :func:`summarize`, which prepares once and hands the result to a dozen metrics, pays the
    copy and the sort once (they were a third of a short run's end-of-run time). Row subsets
    inherit the mark but not the fresh 0..n-1 index, so they are prepared again.
    """
    index = table.index
    if table.attrs.get(_PREPARED) and isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return table
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.columns]
    if "accuracy" not in table.columns and not {"correct", "n"} <= set(table.columns):
        missing.append("accuracy (or correct and n)")
    if missing:
        raise ValueError(f"results table is missing columns: {', '.join(missing)}")
    out = table.copy()
    if "accuracy" not in out.columns:
        out["accuracy"] = out["correct"].astype(float) / out["n"].astype(float)
    out["accuracy"] = out["accuracy"].astype(float)
    out["chance"] = out["chance"].astype(float) if "chance" in out.columns else math.nan
    for col in _INT_COLUMNS:
        out[col] = out[col].astype(np.int64)
    for col in _BOOL_COLUMNS:
        out[col] = _as_bool(out[col])
    out = out.sort_values(["global_iter", "eval_task"], kind="stable").reset_index(drop=True)
    out.attrs[_PREPARED] = True
    return out


def infer_num_tasks(table: pd.DataFrame) -> int:
    """Number of tasks the table speaks about: the largest experience or evaluated task, plus one.

    Future-task evaluation (``eval.tasks=all``) reveals the whole stream from the first row;
    seen-task evaluation reveals it once the last experience has started.
    """
    if len(table) == 0:
        return 0
    return int(max(table["experience"].max(), table["eval_task"].max())) + 1


def boundary_iters(table: pd.DataFrame) -> pd.Series:
    """``t_i``: the global iteration of the boundary evaluation of each experience i.

    Returns a Series indexed by experience (sorted). Experiences whose boundary evaluation is
    missing (a run stopped mid-experience) are simply absent.
    """
    t = prepare_table(table)
    ends = t.loc[t["boundary"]].groupby("experience")["global_iter"].max()
    ends.name = "boundary_iter"
    return ends.sort_index()


def _evaluation_grid(t: pd.DataFrame, num_tasks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wide view of a prepared table: evaluation times, experience per time, accuracy matrix.

    ``acc[r, j]`` is the accuracy on task j at the r-th distinct evaluation time (NaN where task j
    was not evaluated then). Time-resolved metrics are column operations on this grid.
    """
    times = np.sort(t["global_iter"].unique())
    exp_at = t.groupby("global_iter")["experience"].max().reindex(times).to_numpy(np.int64)
    wide = (
        t.groupby(["global_iter", "eval_task"])["accuracy"]
        .last()
        .unstack("eval_task")
        .reindex(index=times, columns=range(num_tasks))
    )
    return times, exp_at, wide.to_numpy(float)


# --------------------------------------------------------------------------------------------
# Small numeric helpers (NaN-aware without RuntimeWarnings)
# --------------------------------------------------------------------------------------------


def _nanmean(values: ArrayLike) -> float:
    """Mean of the non-NaN values, NaN when there are none (numpy would warn)."""
    a = np.asarray(values, dtype=float).ravel()
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


def _nanmax(values: ArrayLike) -> float:
    """Max of the non-NaN values, NaN when there are none (numpy would warn)."""
    a = np.asarray(values, dtype=float).ravel()
    a = a[~np.isnan(a)]
    return float(a.max()) if a.size else math.nan


def _nanmean_rows(m: np.ndarray) -> np.ndarray:
    """Row-wise mean of non-NaN entries; NaN for rows with none."""
    valid = ~np.isnan(m)
    counts = valid.sum(axis=1)
    sums = np.where(valid, m, 0.0).sum(axis=1)
    out = np.full(m.shape[0], math.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def _as_matrix(R: ArrayLike) -> np.ndarray:
    """Check that R is a square float matrix (the accuracy matrix)."""
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"accuracy matrix must be square, got shape {m.shape}")
    return m


# --------------------------------------------------------------------------------------------
# End-of-experience metrics (from the accuracy matrix)
# --------------------------------------------------------------------------------------------


def accuracy_matrix(table: pd.DataFrame, num_tasks: int | None = None) -> np.ndarray:
    """``R[i, j]``: accuracy on task j from the boundary evaluation at the end of experience i.

    Built from the ``boundary`` rows only, so the periodic evaluations never leak into the
    end-of-task metrics. Entries not evaluated are NaN: the upper triangle with seen-task
    evaluation, and whole rows of experiences that never finished.
    """
    t = prepare_table(table)
    T = infer_num_tasks(t) if num_tasks is None else int(num_tasks)
    R = np.full((T, T), math.nan)
    b = t.loc[t["boundary"]]
    rows = b["experience"].to_numpy()
    cols = b["eval_task"].to_numpy()
    keep = (rows < T) & (cols < T)
    R[rows[keep], cols[keep]] = b["accuracy"].to_numpy()[keep]
    return R


def initial_accuracies(table: pd.DataFrame, num_tasks: int | None = None) -> np.ndarray:
    """``b_j``: accuracy on task j at random initialisation (the ``initial`` evaluation).

    Only task 0 is evaluated there unless ``eval.tasks=all``; other entries are NaN, which makes
    :func:`forward_transfer` NaN rather than silently wrong.
    """
    t = prepare_table(table)
    T = infer_num_tasks(t) if num_tasks is None else int(num_tasks)
    b = np.full(T, math.nan)
    init = t.loc[t["initial"] & (t["eval_task"] < T)]
    b[init["eval_task"].to_numpy()] = init["accuracy"].to_numpy()
    return b


def average_accuracy(R: ArrayLike, k: int | None = None) -> float:
    """``ACC_k = mean_{j<=k} R[k, j]`` (macro over seen tasks), after experience k (default: last).

    Macro averaging weighs each task equally whatever its test size, matching Mammoth/CLArena;
    Avalanche's stream accuracy is sample-weighted and differs when task sizes differ.
    """
    m = _as_matrix(R)
    T = m.shape[0]
    if T == 0:
        return math.nan
    k = T - 1 if k is None else int(k)
    if not 0 <= k < T:
        raise ValueError(f"k must be in [0, {T - 1}], got {k}")
    return _nanmean(m[k, : k + 1])


def average_incremental_accuracy(R: ArrayLike) -> float:
    """``(1/T) sum_k ACC_k`` (iCaRL): rewards being good early in the stream too, not only at the end."""
    m = _as_matrix(R)
    return _nanmean([average_accuracy(m, k) for k in range(m.shape[0])])


def backward_transfer(R: ArrayLike) -> float:
    """GEM BWT: ``mean_{i<T-1} (R[T-1, i] - R[i, i])``; negative means forgetting. NaN if T < 2."""
    m = _as_matrix(R)
    T = m.shape[0]
    if T < 2:
        return math.nan
    idx = np.arange(T - 1)
    return _nanmean(m[T - 1, idx] - m[idx, idx])


def forward_transfer(R: ArrayLike, b: ArrayLike | None) -> float:
    """GEM FWT: ``mean_{i>=1} (R[i-1, i] - b_i)``, accuracy on a task just before training on it
    minus its random-init accuracy.

    Needs future-task evaluation (``eval.tasks=all``) and the initial evaluation; without them
    the entries are NaN and so is the result (never a number computed from missing data). In a
    class-incremental stream the number is not transfer (:data:`FWT_UNDEFINED`); :func:`summarize`
    reports it as undefined there.
    """
    m = _as_matrix(R)
    T = m.shape[0]
    if T < 2 or b is None:
        return math.nan
    bv = np.asarray(b, dtype=float).ravel()
    if bv.size < T:
        raise ValueError(f"b must have one entry per task ({T}), got {bv.size}")
    idx = np.arange(1, T)
    return _nanmean(m[idx - 1, idx] - bv[idx])


FWT_UNDEFINED: dict[str, str] = {
    "class_incremental": "undefined in class-incremental streams: a head never trained on a task's classes "
                         "predicts them at random while a trained head never predicts unseen classes, so "
                         "R[i-1, i] - b[i] is negative by construction, whatever the representation transfers",
}
"""Scenarios in which GEM's FWT does not measure transfer, with the reason :func:`summarize` reports."""


def forgetting(R: ArrayLike, k: int | None = None) -> float:
    """Chaudhry et al. (2018) forgetting ``F_k`` after experience k (default: last).

    ``f_j = max_{j<=l<k} R[l, j] - R[k, j]`` for each task ``j < k``; ``F_k = mean_j f_j``.
    The maximum runs over rows ``l >= j`` only: with future-task evaluation ``R[l, j]`` for
    ``l < j`` is the accuracy *before* task j was learned, which is not knowledge that can be
    forgotten (with seen-task evaluation those entries are NaN and the two readings agree).
    NaN when ``k < 1``.
    """
    m = _as_matrix(R)
    T = m.shape[0]
    k = T - 1 if k is None else int(k)
    if T == 0 or k < 1:
        return math.nan
    if k >= T:
        raise ValueError(f"k must be in [0, {T - 1}], got {k}")
    drops = [_nanmax(m[j:k, j]) - m[k, j] for j in range(k)]
    return _nanmean(drops)


# --------------------------------------------------------------------------------------------
# Continual (per-evaluation) metrics: min-ACC, WC-ACC
# --------------------------------------------------------------------------------------------


def _running_min_after_boundary(
    times: np.ndarray, acc: np.ndarray, ends: Mapping[int, int]
) -> np.ndarray:
    """``M[r, i] = min_{t_i < n <= times[r]} acc(i, n)`` (NaN before any such evaluation).

    Tasks without a boundary have not finished training and stay NaN.
    """
    out = np.full(acc.shape, math.nan)
    for task, t_end in ends.items():
        if task >= acc.shape[1]:
            continue
        col = np.where(times > t_end, acc[:, task], math.nan)
        out[:, task] = pd.Series(col).cummin().ffill().to_numpy(float)
    return out


def min_acc_curve(table: pd.DataFrame) -> pd.Series:
    """min-ACC at every evaluation time (De Lange et al., ICLR 2023).

    At time t while training experience k: mean over previous tasks ``i < k`` of the minimum
    accuracy of task i over evaluations strictly after the end of its training, up to t. NaN
    while there is no previous task. Indexed by ``global_iter``.
    """
    t = prepare_table(table)
    if len(t) == 0:
        return pd.Series([], dtype=float, name="min_acc")
    T = infer_num_tasks(t)
    times, exp_at, acc = _evaluation_grid(t, T)
    mins = _running_min_after_boundary(times, acc, boundary_iters(t).to_dict())
    previous = np.arange(T)[None, :] < exp_at[:, None]
    curve = _nanmean_rows(np.where(previous, mins, math.nan))
    return pd.Series(curve, index=pd.Index(times, name="global_iter"), name="min_acc")


def min_acc(table: pd.DataFrame) -> float:
    """Final min-ACC: the value of :func:`min_acc_curve` at the last evaluation (end of stream).

    Averages tasks ``0..K-1`` for a stream whose last experience is K. NaN with one experience.
    """
    curve = min_acc_curve(table)
    return float(curve.iloc[-1]) if len(curve) else math.nan


def wc_acc_curve(table: pd.DataFrame) -> pd.Series:
    """WC-ACC at every evaluation time: ``(1/k) A(E_k, f_t) + (1 - 1/k) min-ACC(t)``.

    k is the 1-based count of the experience being trained (``experience + 1``) and
    ``A(E_k, f_t)`` the current accuracy on that experience's task. For k = 1 it is the current
    accuracy. NaN when the current task was not evaluated at t, or when ``k > 1`` and no previous
    task has a min-ACC value yet (the formula, unlike a plain mean, needs both terms).
    """
    t = prepare_table(table)
    if len(t) == 0:
        return pd.Series([], dtype=float, name="wc_acc")
    T = infer_num_tasks(t)
    times, exp_at, acc = _evaluation_grid(t, T)
    current = acc[np.arange(len(times)), exp_at]
    k = exp_at.astype(float) + 1.0
    mins = min_acc_curve(t).to_numpy(float)
    with np.errstate(invalid="ignore"):
        wc = np.where(k == 1.0, current, current / k + (1.0 - 1.0 / k) * mins)
    return pd.Series(wc, index=pd.Index(times, name="global_iter"), name="wc_acc")


def wc_acc(table: pd.DataFrame) -> float:
    """Final WC-ACC: :func:`wc_acc_curve` at the last evaluation (end of the stream)."""
    curve = wc_acc_curve(table)
    return float(curve.iloc[-1]) if len(curve) else math.nan


# --------------------------------------------------------------------------------------------
# Windowed forgetting / plasticity
# --------------------------------------------------------------------------------------------


def max_windowed_change(values: ArrayLike, window: int, drop: bool = True) -> float:
    """Running maximum over a FIFO window of ``window`` evaluations of the largest in-window change.

    ``drop=True``: ``max_{m<n, n-m<window} (a_m - a_n)`` (forgetting); ``drop=False``: the largest
    rise ``a_n - a_m`` (plasticity). Every pair inside some window of ``w`` consecutive
    evaluations has ``n - m <= w - 1``, so the running maximum over all window positions equals
    the maximum over those lags, computed in ``O(len * w)`` without a Python loop over windows.
    Floored at 0 like the official code (its running maximum starts at 0), so a curve that only
    rises has 0 windowed forgetting. NaN values (missing evaluations) are skipped.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 (a drop needs two evaluations), got {window}")
    a = np.asarray(values, dtype=float).ravel()
    a = a[~np.isnan(a)]
    sign = 1.0 if drop else -1.0
    best = 0.0
    for lag in range(1, min(window, a.size)):
        best = max(best, float(np.max(sign * (a[:-lag] - a[lag:]))))
    return best


def _task_sequences(t: pd.DataFrame, include_current: bool) -> dict[int, np.ndarray]:
    """Accuracy sequence (time order) of each task that windowed metrics average over.

    ``include_current=False``: tasks whose training ended before the last experience, each from
    its boundary evaluation ``t_i`` on (the learned state is the window's first reference).
    ``include_current=True`` (official code): every seen task including the one being trained,
    with all its evaluations since it was first seen (``experience >= i``).
    """
    if len(t) == 0:
        return {}
    last_exp = int(t["experience"].max())
    if include_current:
        seen = t.loc[t["experience"] >= t["eval_task"]]
        return {int(task): g["accuracy"].to_numpy(float) for task, g in seen.groupby("eval_task")}
    out: dict[int, np.ndarray] = {}
    for task, t_end in boundary_iters(t).items():
        if task >= last_exp:
            continue
        g = t.loc[(t["eval_task"] == task) & (t["global_iter"] >= t_end)]
        out[int(task)] = g["accuracy"].to_numpy(float)
    return out


def windowed_forgetting_per_task(
    table: pd.DataFrame, window: int = 10, include_current: bool = True, drop: bool = True
) -> pd.Series:
    """``WF_i^w`` for each task averaged by :func:`windowed_forgetting` (indexed by task)."""
    seqs = _task_sequences(prepare_table(table), include_current)
    values = {task: max_windowed_change(a, window, drop) for task, a in seqs.items() if a.size}
    return pd.Series(values, dtype=float, name=f"{'WF' if drop else 'WP'}{window}")


def windowed_forgetting(table: pd.DataFrame, window: int = 10, include_current: bool = True) -> float:
    """``WF^w`` (De Lange et al. 2023): mean over tasks of the largest accuracy drop seen inside a
    FIFO window of the last ``window`` evaluations of that task, maximised over training.

    Default ``include_current=True`` is the paper's WF^w as its code averages it: every tracked
    task, the one being trained included, over all its evaluations since it was first seen.
    ``False`` is a variant (``summary.json``: ``wf<w>_finished_tasks``): tasks whose training
    ended before the last experience, each from its own boundary on, which measures forgetting
    of learned tasks only. The window counts evaluations, so WF^w depends on the evaluation
    cadence. NaN when no task qualifies.
    """
    return _nanmean(windowed_forgetting_per_task(table, window, include_current, drop=True).to_numpy())


def windowed_plasticity(table: pd.DataFrame, window: int = 10, include_current: bool = True) -> float:
    """``WP^w``: as :func:`windowed_forgetting` with the largest in-window *rise* (recovery speed)."""
    return _nanmean(windowed_forgetting_per_task(table, window, include_current, drop=False).to_numpy())


# --------------------------------------------------------------------------------------------
# Stability gap
# --------------------------------------------------------------------------------------------


def gap_tolerance(acc_at_boundary: float, n: int, se_multiplier: float = DEFAULT_SE_MULTIPLIER) -> float:
    """``se_multiplier`` binomial standard errors of an accuracy measured on ``n`` samples, at least
    one sample (``1/n``): ``max(z * sqrt(p (1 - p) / n), 1 / n)`` with ``p = acc_at_boundary``.

    A fixed tolerance does not fit every subset: 0.01 is two samples of a 200-sample task and
    ten of a 1000-sample one. The floor keeps a task at 0 % or 100 %, whose standard error is 0,
    from counting a one-sample change as a gap.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    p = min(max(float(acc_at_boundary), 0.0), 1.0)
    return max(se_multiplier * math.sqrt(p * (1.0 - p) / n), 1.0 / n)


def gap_statistics(
    rel_iters: ArrayLike, accs: ArrayLike, acc_at_boundary: float, tolerance: float
) -> dict[str, Any]:
    """Depth and recovery of one previous task's curve during one experience.

    ``rel_iters`` are iterations after the boundary (> 0), ``accs`` the accuracies there, in time
    order. ``depth = max(acc_at_boundary - min(accs), 0)``; ``iter_of_min`` is the first
    iteration reaching the minimum. A gap exists when ``depth > tolerance``; it is recovered at
    the first evaluation *after the minimum* with ``acc >= acc_at_boundary - tolerance``
    (``recovery_iters`` counts from the boundary, NaN if never). Without a gap, recovery is 0:
    the task never left the tolerance band, so there was nothing to recover from.
    """
    it = np.asarray(rel_iters, dtype=float).ravel()
    a = np.asarray(accs, dtype=float).ravel()
    if a.size == 0 or a.size != it.size:
        raise ValueError("rel_iters and accs must be non-empty and of equal length")
    j = int(np.argmin(a))
    depth = max(float(acc_at_boundary) - float(a[j]), 0.0)
    has_gap = depth > tolerance + _EPS
    if not has_gap:
        recovered, recovery = True, 0.0
    else:
        back = np.nonzero(a[j:] >= acc_at_boundary - tolerance - _EPS)[0]
        recovered = bool(back.size)
        recovery = float(it[j + back[0]]) if recovered else math.nan
    return {
        "min_acc": float(a[j]),
        "depth": depth,
        "iter_of_min": float(it[j]),
        "has_gap": has_gap,
        "recovered": recovered,
        "recovery_iters": recovery,
    }


def split_drop(acc_at_boundary: float, min_acc: float, acc_at_end: float) -> tuple[float, float]:
    """The drop ``acc_at_boundary - min_acc`` split into ``(transient, permanent)``.

    ``permanent = max(acc_at_boundary - acc_at_end, 0)``: what is still lost at the end of the
    experience; ``transient = depth - permanent``: what was lost and won back. Both are
    non-negative and sum to the depth (``acc_at_end`` is itself a point of the curve, so it is
    never below the minimum). NaN when the experience has no end evaluation.
    """
    if math.isnan(acc_at_end):
        return math.nan, math.nan
    depth = max(acc_at_boundary - min_acc, 0.0)
    permanent = min(max(acc_at_boundary - acc_at_end, 0.0), depth)
    return depth - permanent, permanent


def stability_gap(table: pd.DataFrame, tolerance: float | None = DEFAULT_TOLERANCE,
                  se_multiplier: float = DEFAULT_SE_MULTIPLIER) -> pd.DataFrame:
    """One row per (boundary into experience k >= 1, previous task i < k) with data.

    ``acc_at_boundary`` is task i's accuracy at the boundary evaluation of experience k-1
    (``boundary_iter``); the curve is every evaluation of task i during experience k (up to and
    including its own boundary evaluation); see :func:`gap_statistics` for depth and recovery.
    ``acc_at_end`` is the accuracy at the end of experience k; the depth splits into the part won
    back by then (``transient``) and the part still lost (``permanent``), see :func:`split_drop`.

    ``tolerance``: ``None`` (default) uses :func:`gap_tolerance` of each case's subset size and
    boundary accuracy; a number fixes it. ``at_chance`` marks a task already at chance at the
    boundary (``acc_at_boundary <= chance + tolerance``): it has nothing left to lose, so its flat
    curve would read as stability; :func:`summarize_gaps` leaves these cases out. Depth is only as
    fine as the evaluation cadence: with evaluation at boundaries only it equals plain forgetting
    over one experience.
    """
    t = prepare_table(table)
    ends = boundary_iters(t)
    rows: list[dict[str, Any]] = []
    for k in sorted(int(e) for e in t["experience"].unique()):
        if k < 1 or (k - 1) not in ends.index:
            continue
        t_b = int(ends[k - 1])
        at_b = t.loc[t["boundary"] & (t["experience"] == k - 1)].groupby("eval_task").last()
        during = t.loc[(t["experience"] == k) & (t["global_iter"] > t_b)]
        for task in range(k):
            seg = during.loc[during["eval_task"] == task]
            if task not in at_b.index or seg.empty:
                continue
            start = at_b.loc[task]
            acc_b = float(start["accuracy"])
            tol = gap_tolerance(acc_b, int(start["n"]), se_multiplier) if tolerance is None else float(tolerance)
            chance = float(start["chance"])
            stats = gap_statistics(seg["global_iter"].to_numpy() - t_b, seg["accuracy"].to_numpy(), acc_b, tol)
            end = seg.loc[seg["boundary"], "accuracy"]
            acc_end = float(end.iloc[-1]) if len(end) else math.nan
            transient, permanent = split_drop(acc_b, stats["min_acc"], acc_end)
            rows.append(
                {
                    "experience": k,
                    "task": task,
                    "boundary_iter": t_b,
                    "acc_at_boundary": acc_b,
                    "chance": chance,
                    "tolerance": tol,
                    "at_chance": bool(acc_b <= chance + tol + _EPS),  # False when chance is unknown (NaN)
                    **stats,
                    "acc_at_end": acc_end,
                    "transient": transient,
                    "permanent": permanent,
                    "n_evals": len(seg),
                }
            )
    return pd.DataFrame(rows, columns=list(GAP_COLUMNS))


def summarize_gaps(gaps: pd.DataFrame) -> dict[str, float]:
    """Aggregate a :func:`stability_gap` frame over the cases not already at chance.

    ``depth_mean``/``depth_max``, and the split of the mean depth into ``transient_mean`` (won
    back by the end of the experience) and ``permanent_mean`` (still lost), over those cases;
    ``recovered_frac`` among cases with a gap (depth > tolerance) and ``recovery_iters_mean``
    over those that recovered, so gap-free cases (recovery 0) do not dilute the recovery time.
    ``n_at_chance`` counts the cases left out. NaN where nothing qualifies.
    """
    at_chance = gaps["at_chance"].astype(bool) if len(gaps) else pd.Series([], dtype=bool)
    cases = gaps.loc[~at_chance] if len(gaps) else gaps
    gapped = cases.loc[cases["has_gap"].astype(bool)] if len(cases) else cases
    recovered = gapped.loc[gapped["recovered"].astype(bool)] if len(gapped) else gapped
    return {
        "depth_mean": _nanmean(cases["depth"].to_numpy(float)),
        "depth_max": _nanmax(cases["depth"].to_numpy(float)),
        "transient_mean": _nanmean(cases["transient"].to_numpy(float)),
        "permanent_mean": _nanmean(cases["permanent"].to_numpy(float)),
        "recovery_iters_mean": _nanmean(recovered["recovery_iters"].to_numpy(float)),
        "recovered_frac": float(len(recovered) / len(gapped)) if len(gapped) else math.nan,
        "n_cases": len(cases),
        "n_gaps": len(gapped),
        "n_at_chance": int(at_chance.sum()),
    }


def stability_gap_summary(table: pd.DataFrame, tolerance: float | None = DEFAULT_TOLERANCE,
                          se_multiplier: float = DEFAULT_SE_MULTIPLIER) -> dict[str, float]:
    """:func:`summarize_gaps` of :func:`stability_gap` for the table."""
    return summarize_gaps(stability_gap(table, tolerance, se_multiplier))


# --------------------------------------------------------------------------------------------
# Run summary
# --------------------------------------------------------------------------------------------


def json_ready(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain Python scalars with NaN/inf as ``None``, so ``json.dumps(..., allow_nan=False)`` works."""
    out: dict[str, Any] = {}
    for key, v in values.items():
        if isinstance(v, (bool, np.bool_)):
            out[key] = bool(v)
        elif isinstance(v, (int, np.integer)):
            out[key] = int(v)
        elif isinstance(v, (float, np.floating)):
            out[key] = float(v) if math.isfinite(float(v)) else None
        else:
            out[key] = v
    return out


def summarize(
    table: pd.DataFrame,
    tolerance: float | None = DEFAULT_TOLERANCE,
    windows: Iterable[int] = (10, 100),
    scenario: str | None = None,
    se_multiplier: float = DEFAULT_SE_MULTIPLIER,
) -> dict[str, Any]:
    """Final metrics of a run, ready for ``summary.json`` (NaN -> None).

    ``wf<w>``/``wp<w>`` are De Lange et al.'s WF^w/WP^w (every tracked task);
    ``wf<w>_finished_tasks``/``wp<w>_finished_tasks`` the variant over tasks whose training ended,
    from their boundary on. ``scenario`` (a :class:`clplat.stream.Scenario` value) marks FWT
    undefined where it cannot measure transfer (``fwt_undefined`` gives the reason). The
    stability-gap tolerance rule is recorded with the numbers; cadence and subset size belong to
    the config.
    """
    t = prepare_table(table)
    R = accuracy_matrix(t)
    b = initial_accuracies(t, R.shape[0])
    gaps = summarize_gaps(stability_gap(t, tolerance, se_multiplier))
    fwt_undefined = FWT_UNDEFINED.get(scenario or "")
    out: dict[str, Any] = {
        "avg_acc": average_accuracy(R),
        "avg_incremental_acc": average_incremental_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": math.nan if fwt_undefined else forward_transfer(R, b),
        "forgetting": forgetting(R),
        "min_acc": min_acc(t),
        "wc_acc": wc_acc(t),
    }
    if fwt_undefined:
        out["fwt_undefined"] = fwt_undefined
    for w in windows:
        out[f"wf{w}"] = windowed_forgetting(t, w, include_current=True)
        out[f"wp{w}"] = windowed_plasticity(t, w, include_current=True)
        out[f"wf{w}_finished_tasks"] = windowed_forgetting(t, w, include_current=False)
        out[f"wp{w}_finished_tasks"] = windowed_plasticity(t, w, include_current=False)
    out.update({f"sg_{key}": value for key, value in gaps.items()})
    out.update(
        {
            "sg_tolerance": f"{se_multiplier:g} standard errors, at least 1/n" if tolerance is None else float(tolerance),
            "num_tasks": int(R.shape[0]),
            "num_experiences_finished": int(len(boundary_iters(t))),
            "num_evaluations": int(t["global_iter"].nunique()),
            "final_global_iter": int(t["global_iter"].max()) if len(t) else 0,
        }
    )
    return json_ready(out)


__all__ = [
    "TABLE_COLUMNS",
    "GAP_COLUMNS",
    "DEFAULT_TOLERANCE",
    "DEFAULT_SE_MULTIPLIER",
    "FWT_UNDEFINED",
    "prepare_table",
    "infer_num_tasks",
    "boundary_iters",
    "accuracy_matrix",
    "initial_accuracies",
    "average_accuracy",
    "average_incremental_accuracy",
    "backward_transfer",
    "forward_transfer",
    "forgetting",
    "min_acc_curve",
    "min_acc",
    "wc_acc_curve",
    "wc_acc",
    "max_windowed_change",
    "windowed_forgetting_per_task",
    "windowed_forgetting",
    "windowed_plasticity",
    "gap_tolerance",
    "gap_statistics",
    "split_drop",
    "stability_gap",
    "summarize_gaps",
    "stability_gap_summary",
    "json_ready",
    "summarize",
]
