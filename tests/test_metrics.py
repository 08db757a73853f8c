"""Metrics against small tables whose expected values are computed by hand (in the comments).

Accuracies are multiples of 1/100 with n = 100, so ``correct / n`` reproduces them exactly and
every expected number below can be checked on paper.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from clplat.evaluation.metrics import (
    GAP_COLUMNS,
    accuracy_matrix,
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    boundary_iters,
    forgetting,
    forward_transfer,
    gap_statistics,
    gap_tolerance,
    initial_accuracies,
    json_ready,
    max_windowed_change,
    min_acc,
    min_acc_curve,
    prepare_table,
    split_drop,
    stability_gap,
    stability_gap_summary,
    summarize,
    wc_acc,
    wc_acc_curve,
    windowed_forgetting,
    windowed_forgetting_per_task,
    windowed_plasticity,
)

N = 100


def make_table(records: list[tuple[int, int, int, float, bool]]) -> pd.DataFrame:
    """Rows ``(global_iter, experience, eval_task, accuracy, boundary)``; iteration 0 is initial."""
    rows = []
    for it, exp, task, acc, boundary in records:
        correct = int(round(acc * N))
        rows.append(
            {
                "global_iter": it,
                "experience": exp,
                "eval_task": task,
                "correct": correct,
                "n": N,
                "loss": 1.0 - acc,
                "accuracy": correct / N,
                "boundary": boundary,
                "initial": it == 0,
            }
        )
    return pd.DataFrame(rows)


def table_from_matrix(R: np.ndarray, b: np.ndarray, iters_per_exp: int = 10, seed: int = 0) -> pd.DataFrame:
    """A table whose boundary rows hold R and initial rows hold b, with noise rows in between.

    Periodic rows get random accuracies so the round-trip test shows they never leak into R.
    Entries of R/b that are NaN are simply not evaluated.
    """
    rng = np.random.default_rng(seed)
    T = R.shape[0]
    recs: list[tuple[int, int, int, float, bool]] = []
    recs += [(0, 0, j, float(b[j]), False) for j in range(T) if not np.isnan(b[j])]
    for i in range(T):
        start = i * iters_per_exp
        for it in range(start + 1, start + iters_per_exp):
            recs += [(it, i, j, float(rng.integers(0, N + 1)) / N, False) for j in range(T)]
        end = start + iters_per_exp
        recs += [(end, i, j, float(R[i, j]), True) for j in range(T) if not np.isnan(R[i, j])]
    return make_table(recs)


# A 3-task accuracy matrix with future-task evaluation (upper triangle present).
R3 = np.array(
    [
        [0.90, 0.10, 0.12],
        [0.95, 0.80, 0.15],
        [0.60, 0.75, 0.85],
    ]
)
B3 = np.array([0.10, 0.11, 0.09])


# --------------------------------------------------------------------------------------------
# Accuracy matrix and end-of-task metrics
# --------------------------------------------------------------------------------------------


def test_accuracy_matrix_round_trips_and_ignores_periodic_rows() -> None:
    table = table_from_matrix(R3, B3)
    np.testing.assert_allclose(accuracy_matrix(table), R3)
    np.testing.assert_allclose(initial_accuracies(table), B3)
    assert list(boundary_iters(table)) == [10, 20, 30]


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_matrix_round_trip_random(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    T = int(rng.integers(1, 6))
    R = rng.integers(0, N + 1, size=(T, T)) / N
    if seed % 2:  # seen-task evaluation only: the upper triangle is not evaluated
        R[np.triu_indices(T, k=1)] = np.nan
    b = rng.integers(0, N + 1, size=T) / N
    table = table_from_matrix(R, b, iters_per_exp=int(rng.integers(1, 5)), seed=seed)
    # Shuffling the rows must not matter: metrics sort by time themselves.
    table = table.sample(frac=1.0, random_state=seed)
    np.testing.assert_allclose(accuracy_matrix(table), R, equal_nan=True)
    np.testing.assert_allclose(initial_accuracies(table), b)


def test_average_accuracies() -> None:
    # ACC_0 = 0.90; ACC_1 = (0.95 + 0.80) / 2 = 0.875; ACC_2 = (0.60 + 0.75 + 0.85) / 3 = 0.733333
    assert average_accuracy(R3) == pytest.approx(2.20 / 3)
    assert average_accuracy(R3, k=0) == pytest.approx(0.90)
    assert average_accuracy(R3, k=1) == pytest.approx(0.875)
    # AIA = (0.90 + 0.875 + 0.733333) / 3 = 2.508333 / 3 = 0.836111
    assert average_incremental_accuracy(R3) == pytest.approx((0.90 + 0.875 + 2.20 / 3) / 3)
    with pytest.raises(ValueError):
        average_accuracy(R3, k=3)


def test_backward_transfer_gem() -> None:
    # BWT = ((R20 - R00) + (R21 - R11)) / 2 = ((0.60 - 0.90) + (0.75 - 0.80)) / 2 = -0.175
    assert backward_transfer(R3) == pytest.approx(-0.175)


def test_forward_transfer_gem() -> None:
    # FWT = ((R01 - b1) + (R12 - b2)) / 2 = ((0.10 - 0.11) + (0.15 - 0.09)) / 2 = 0.025
    assert forward_transfer(R3, B3) == pytest.approx(0.025)


def test_forward_transfer_is_nan_without_future_evaluation() -> None:
    R = R3.copy()
    R[np.triu_indices(3, k=1)] = np.nan
    b = np.array([0.10, np.nan, np.nan])  # initial evaluation of seen tasks only
    assert math.isnan(forward_transfer(R, b))
    assert math.isnan(forward_transfer(R3, None))


def test_forgetting_chaudhry() -> None:
    # task 0: max(R00, R10) - R20 = 0.95 - 0.60 = 0.35 (the peak is after positive transfer)
    # task 1: max(R11) - R21 = 0.80 - 0.75 = 0.05
    # F = (0.35 + 0.05) / 2 = 0.20   (differs from -BWT = 0.175 because of the peak)
    assert forgetting(R3) == pytest.approx(0.20)
    # F_1 after experience 1: task 0: R00 - R10 = 0.90 - 0.95 = -0.05
    assert forgetting(R3, k=1) == pytest.approx(-0.05)


def test_forgetting_ignores_future_task_entries() -> None:
    R = R3.copy()
    R[0, 1] = 0.99  # accuracy on task 1 before it was learned: not knowledge to forget
    # task 1 still uses R11 only: 0.80 - 0.75 = 0.05; F = (0.35 + 0.05) / 2 = 0.20
    assert forgetting(R) == pytest.approx(0.20)


def test_single_experience_end_metrics_are_nan() -> None:
    R = np.array([[0.7]])
    assert average_accuracy(R) == pytest.approx(0.7)
    assert average_incremental_accuracy(R) == pytest.approx(0.7)
    assert math.isnan(backward_transfer(R))
    assert math.isnan(forgetting(R))
    assert math.isnan(forward_transfer(R, [0.1]))


def test_missing_evaluations_are_skipped_not_zero() -> None:
    R = np.array([[0.9, np.nan], [np.nan, 0.8]])  # task 0 not evaluated at the end of exp 1
    assert average_accuracy(R) == pytest.approx(0.8)  # mean over the evaluated seen task
    assert math.isnan(backward_transfer(R))  # its only term is missing
    assert math.isnan(forgetting(R))


def test_accuracy_matrix_of_unfinished_run_has_nan_last_row() -> None:
    table = make_table([(0, 0, 0, 0.1, False), (5, 0, 0, 0.9, True), (7, 1, 0, 0.5, False), (7, 1, 1, 0.4, False)])
    R = accuracy_matrix(table)
    assert R.shape == (2, 2)
    assert R[0, 0] == pytest.approx(0.9)
    assert np.isnan(R[1]).all()


# --------------------------------------------------------------------------------------------
# A hand-made dense run: 3 experiences of 4 iterations, evaluated every 2 iterations, seen tasks
# --------------------------------------------------------------------------------------------

#   iter  exp  task0  task1  task2   boundary
#     0    0   0.10                  initial
#     2    0   0.50
#     4    0   0.80                  end of exp 0  (t_0 = 4)
#     6    1   0.40   0.50
#     8    1   0.60   0.90           end of exp 1  (t_1 = 8)
#    10    2   0.30   0.70   0.60
#    12    2   0.65   0.85   0.95    end of exp 2  (t_2 = 12)
RUN = make_table(
    [
        (0, 0, 0, 0.10, False),
        (2, 0, 0, 0.50, False),
        (4, 0, 0, 0.80, True),
        (6, 1, 0, 0.40, False),
        (6, 1, 1, 0.50, False),
        (8, 1, 0, 0.60, True),
        (8, 1, 1, 0.90, True),
        (10, 2, 0, 0.30, False),
        (10, 2, 1, 0.70, False),
        (10, 2, 2, 0.60, False),
        (12, 2, 0, 0.65, True),
        (12, 2, 1, 0.85, True),
        (12, 2, 2, 0.95, True),
    ]
)


def test_run_accuracy_matrix() -> None:
    expected = np.array([[0.80, np.nan, np.nan], [0.60, 0.90, np.nan], [0.65, 0.85, 0.95]])
    np.testing.assert_allclose(accuracy_matrix(RUN), expected, equal_nan=True)
    assert boundary_iters(RUN).to_dict() == {0: 4, 1: 8, 2: 12}


def test_min_acc_final() -> None:
    # task 0 after t_0 = 4: 0.40, 0.60, 0.30, 0.65 -> 0.30 ; task 1 after t_1 = 8: 0.70, 0.85 -> 0.70
    # min-ACC = (0.30 + 0.70) / 2 = 0.50   (task 2 is the current task at the end: excluded)
    assert min_acc(RUN) == pytest.approx(0.50)


def test_min_acc_curve() -> None:
    # iter 0..4: experience 0, no previous task -> NaN
    # iter 6: task 0 min over {6} = 0.40 ; iter 8: min over {6, 8} = 0.40 (boundary of exp 0 excluded)
    # iter 10: task 0 -> 0.30, task 1 (after 8) -> 0.70 -> 0.50 ; iter 12: 0.30, 0.70 -> 0.50
    curve = min_acc_curve(RUN)
    assert list(curve.index) == [0, 2, 4, 6, 8, 10, 12]
    np.testing.assert_allclose(
        curve.to_numpy(), [np.nan, np.nan, np.nan, 0.40, 0.40, 0.50, 0.50], equal_nan=True
    )


def test_wc_acc_final_and_curve() -> None:
    # final: k = 3, current acc (task 2 at iter 12) = 0.95 ; 0.95/3 + (2/3)*0.50 = 0.316667 + 0.333333 = 0.65
    assert wc_acc(RUN) == pytest.approx(0.65)
    # iter 0, 2, 4: k = 1 -> current accuracy 0.10, 0.50, 0.80
    # iter 6:  0.50/2 + 0.40/2 = 0.45        iter 8:  0.90/2 + 0.40/2 = 0.65
    # iter 10: 0.60/3 + (2/3)*0.50 = 0.533333 iter 12: 0.65
    np.testing.assert_allclose(
        wc_acc_curve(RUN).to_numpy(), [0.10, 0.50, 0.80, 0.45, 0.65, 0.60 / 3 + 1 / 3, 0.65]
    )


def test_min_and_wc_acc_single_experience() -> None:
    single = RUN.loc[RUN["experience"] == 0]
    assert math.isnan(min_acc(single))
    assert wc_acc(single) == pytest.approx(0.80)  # k = 1: the current accuracy


# --------------------------------------------------------------------------------------------
# Windowed forgetting
# --------------------------------------------------------------------------------------------


def test_max_windowed_change_window_semantics() -> None:
    a = [0.90, 0.85, 0.80, 0.75, 0.70]
    # window 2 (lag 1): largest drop 0.05 ; window 3 (lags 1, 2): 0.90 - 0.80 = 0.10
    # window 10 (all pairs): 0.90 - 0.70 = 0.20
    assert max_windowed_change(a, 2) == pytest.approx(0.05)
    assert max_windowed_change(a, 3) == pytest.approx(0.10)
    assert max_windowed_change(a, 10) == pytest.approx(0.20)
    # plasticity of a falling curve is 0 (floored like the official running max starting at 0)
    assert max_windowed_change(a, 3, drop=False) == 0.0
    assert max_windowed_change([0.5], 3) == 0.0
    with pytest.raises(ValueError):
        max_windowed_change(a, 1)


def test_max_windowed_change_matches_fifo_simulation() -> None:
    """The lag formulation equals the literal FIFO-window running maximum of the definition."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.random(int(rng.integers(1, 30)))
        w = int(rng.integers(2, 8))
        best = 0.0
        for n in range(len(a)):
            win = a[max(0, n - w + 1) : n + 1]
            drops = [win[p] - win[q] for p in range(len(win)) for q in range(p + 1, len(win))]
            best = max([best, *drops])
        assert max_windowed_change(a, w) == pytest.approx(best)


def test_windowed_forgetting_previous_tasks_only() -> None:
    # include_current=False: tasks 0 and 1, each from its boundary evaluation on
    # task 0 (iter >= 4): 0.80, 0.40, 0.60, 0.30, 0.65
    #   window 3: lag-1 drops 0.40, -0.20, 0.30, -0.35 ; lag-2 drops 0.20, 0.10, -0.05 -> 0.40
    #   window 10: 0.80 - 0.30 = 0.50
    # task 1 (iter >= 8): 0.90, 0.70, 0.85 -> lag-1 0.20, -0.15 ; lag-2 0.05 -> 0.20 (both windows)
    # WF^3 = (0.40 + 0.20) / 2 = 0.30 ; WF^10 = (0.50 + 0.20) / 2 = 0.35
    per_task = windowed_forgetting_per_task(RUN, window=3, include_current=False)
    assert per_task.to_dict() == pytest.approx({0: 0.40, 1: 0.20})
    assert windowed_forgetting(RUN, window=3, include_current=False) == pytest.approx(0.30)
    assert windowed_forgetting(RUN, window=10, include_current=False) == pytest.approx(0.35)


def test_windowed_forgetting_including_current_task() -> None:
    # include_current=True: every seen task, all evaluations since first seen
    # task 0: 0.10, 0.50, 0.80, 0.40, 0.60, 0.30, 0.65 -> window 3: max(0.80-0.40, 0.80-0.60, 0.60-0.30) = 0.40
    # task 1: 0.50, 0.90, 0.70, 0.85 -> 0.90 - 0.70 = 0.20
    # task 2: 0.60, 0.95 -> only a rise -> 0
    # WF^3 = (0.40 + 0.20 + 0.0) / 3 = 0.20   (De Lange et al.'s average: the default)
    assert windowed_forgetting(RUN, window=3) == pytest.approx(0.20)
    assert windowed_forgetting(RUN, window=3, include_current=True) == pytest.approx(0.20)


def test_windowed_plasticity() -> None:
    # task 0 (iter >= 4): 0.80, 0.40, 0.60, 0.30, 0.65 -> rises: 0.20, 0.35 (lag 1), 0.05 (lag 2) -> 0.35
    # task 1 (iter >= 8): 0.90, 0.70, 0.85 -> 0.15 ; WP^3 = (0.35 + 0.15) / 2 = 0.25
    assert windowed_plasticity(RUN, window=3, include_current=False) == pytest.approx(0.25)
    # every tracked task (default): task 0 0.10, 0.50, 0.80, 0.40, 0.60, 0.30, 0.65 -> lag 2 0.10 -> 0.80: 0.70
    # task 1 0.50, 0.90, 0.70, 0.85 -> 0.40 ; task 2 0.60, 0.95 -> 0.35 ; WP^3 = 1.45 / 3
    assert windowed_plasticity(RUN, window=3) == pytest.approx(1.45 / 3)


def test_windowed_forgetting_single_experience_is_nan() -> None:
    single = RUN.loc[RUN["experience"] == 0]
    assert math.isnan(windowed_forgetting(single, window=3, include_current=False))
    # the paper's average still has the current task: 0.10, 0.50, 0.80 only rises -> 0
    assert windowed_forgetting(single, window=3) == 0.0


# --------------------------------------------------------------------------------------------
# Stability gap
# --------------------------------------------------------------------------------------------

# Two experiences: exp 0 ends at iter 5 with task 0 at 0.90; exp 1 evaluated every iteration.
#   iter      6     7     8     9    10    11    12    13    14    15
#   task 0  0.60  0.40  0.30  0.50  0.70  0.85  0.89  0.92  0.91  0.90
# min 0.30 at iter 8 -> iter_of_min 3, depth 0.90 - 0.30 = 0.60 ;
# back within 0.01 (>= 0.89) first at iter 12 -> recovery_iters 7.
DIP = [0.60, 0.40, 0.30, 0.50, 0.70, 0.85, 0.89, 0.92, 0.91, 0.90]
GAP_RUN = make_table(
    [(0, 0, 0, 0.05, False)]
    + [(it, 0, 0, 0.10 * it + 0.40, it == 5) for it in range(1, 6)]  # 0.50 .. 0.90 while learning
    + [(6 + r, 1, 0, acc, r == 9) for r, acc in enumerate(DIP)]
    + [(6 + r, 1, 1, 0.50, r == 9) for r in range(10)]
)


def test_stability_gap_dip_and_recovery() -> None:
    gaps = stability_gap(GAP_RUN, tolerance=0.01)
    assert list(gaps.columns) == list(GAP_COLUMNS)
    assert len(gaps) == 1  # one boundary, one previous task (task 1 is current: not a row)
    row = gaps.iloc[0]
    assert (row["experience"], row["task"], row["boundary_iter"]) == (1, 0, 5)
    assert row["acc_at_boundary"] == pytest.approx(0.90)
    assert row["min_acc"] == pytest.approx(0.30)
    assert row["depth"] == pytest.approx(0.60)
    assert row["iter_of_min"] == 3
    assert bool(row["has_gap"]) and bool(row["recovered"])
    assert row["recovery_iters"] == 7
    assert row["acc_at_end"] == pytest.approx(0.90)
    assert row["transient"] == pytest.approx(0.60) and row["permanent"] == 0.0  # all of it won back
    assert row["n_evals"] == 10
    assert row["tolerance"] == 0.01 and not row["at_chance"] and math.isnan(row["chance"])  # no chance column


def test_stability_gap_default_tolerance_is_two_standard_errors() -> None:
    # p = 0.90 on n = 100: 2 * sqrt(0.9 * 0.1 / 100) = 0.06 ; back within (>= 0.84) at iter 11 -> 6
    row = stability_gap(GAP_RUN).iloc[0]
    assert row["tolerance"] == pytest.approx(0.06)
    assert row["recovery_iters"] == 6


def test_stability_gap_tolerance_changes_recovery() -> None:
    # tolerance 0.05: back within (>= 0.85) first at iter 11 -> 6 iterations
    assert stability_gap(GAP_RUN, tolerance=0.05).iloc[0]["recovery_iters"] == 6
    # tolerance 0.0: needs >= 0.90 again: 0.92 at iter 13 -> 8 iterations
    assert stability_gap(GAP_RUN, tolerance=0.0).iloc[0]["recovery_iters"] == 8


def test_stability_gap_on_dense_run() -> None:
    # boundary 0->1 (t=4): task 0 from 0.80: 0.40 (+2), 0.60 (+4) -> depth 0.40 at +2, never >= 0.79
    # boundary 1->2 (t=8): task 0 from 0.60: 0.30 (+2), 0.65 (+4) -> depth 0.30 at +2, recovered at +4
    #                      task 1 from 0.90: 0.70 (+2), 0.85 (+4) -> depth 0.20 at +2, 0.85 < 0.89: not
    gaps = stability_gap(RUN, tolerance=0.01)
    assert gaps[["experience", "task"]].to_numpy().tolist() == [[1, 0], [2, 0], [2, 1]]
    np.testing.assert_allclose(gaps["depth"], [0.40, 0.30, 0.20])
    np.testing.assert_allclose(gaps["iter_of_min"], [2, 2, 2])
    np.testing.assert_allclose(gaps["recovery_iters"], [np.nan, 4, np.nan], equal_nan=True)
    np.testing.assert_allclose(gaps["acc_at_end"], [0.60, 0.65, 0.85])
    # with tolerance 0.05, 0.85 >= 0.90 - 0.05 holds (exactly, despite float rounding) -> +4
    assert stability_gap(RUN, tolerance=0.05).iloc[2]["recovery_iters"] == 4


def test_stability_gap_summary() -> None:
    # depths 0.40, 0.30, 0.20 -> mean 0.30, max 0.40 ; 3 gaps, 1 recovered (after 4 iterations)
    s = stability_gap_summary(RUN, tolerance=0.01)
    assert s["depth_mean"] == pytest.approx(0.30)
    assert s["depth_max"] == pytest.approx(0.40)
    assert s["recovery_iters_mean"] == pytest.approx(4.0)
    assert s["recovered_frac"] == pytest.approx(1 / 3)
    assert (s["n_cases"], s["n_gaps"]) == (3, 3)
    # ends 0.60 (from 0.80), 0.65 (from 0.60), 0.85 (from 0.90): permanent 0.20, 0, 0.05 ;
    # transient = depth - permanent = 0.20, 0.30, 0.15
    assert s["permanent_mean"] == pytest.approx(0.25 / 3) and s["transient_mean"] == pytest.approx(0.65 / 3)


def test_stability_gap_summary_with_standard_error_tolerance() -> None:
    # tolerances: task 0 from 0.80 -> 2 * 0.04 = 0.08 ; task 0 from 0.60 -> 2 * sqrt(0.0024) = 0.098 ;
    # task 1 from 0.90 -> 0.06: 0.85 >= 0.84 now counts as recovered at +4
    gaps = stability_gap(RUN)
    np.testing.assert_allclose(gaps["tolerance"], [0.08, 2 * math.sqrt(0.0024), 0.06])
    np.testing.assert_allclose(gaps["recovery_iters"], [np.nan, 4, 4], equal_nan=True)
    s = stability_gap_summary(RUN)
    assert s["recovered_frac"] == pytest.approx(2 / 3) and s["recovery_iters_mean"] == pytest.approx(4.0)


def test_gap_tolerance_scales_with_the_standard_error_and_never_drops_below_one_sample() -> None:
    assert gap_tolerance(0.9, 100) == pytest.approx(0.06)  # 2 * sqrt(0.09 / 100)
    assert gap_tolerance(0.5, 1000) == pytest.approx(2 * math.sqrt(0.25 / 1000))  # 0.0316
    assert gap_tolerance(1.0, 200) == pytest.approx(1 / 200)  # SE 0: one sample
    assert gap_tolerance(0.9, 100, se_multiplier=1.0) == pytest.approx(0.03)
    with pytest.raises(ValueError):
        gap_tolerance(0.5, 0)


def test_split_drop_into_transient_and_permanent() -> None:
    assert split_drop(0.90, 0.30, 0.85) == pytest.approx((0.55, 0.05))  # depth 0.60
    assert split_drop(0.90, 0.30, 0.95) == pytest.approx((0.60, 0.0))  # ends above the boundary value
    assert split_drop(0.90, 0.95, 0.95) == (0.0, 0.0)  # no drop at all
    assert all(math.isnan(v) for v in split_drop(0.9, 0.3, math.nan))


def test_tasks_at_chance_at_the_boundary_are_left_out() -> None:
    # class-IL naive: task 0 at 0.00 when experience 1 ends (chance 1/4): it cannot drop further,
    # and its flat curve during experience 2 must not count as a stable, gap-free case.
    table = make_table([
        (0, 0, 0, 0.5, False), (2, 0, 0, 0.95, True),
        (3, 1, 0, 0.30, False), (3, 1, 1, 0.50, False), (4, 1, 0, 0.00, True), (4, 1, 1, 0.90, True),
        (5, 2, 0, 0.00, False), (5, 2, 1, 0.20, False), (5, 2, 2, 0.5, False),
        (6, 2, 0, 0.00, True), (6, 2, 1, 0.00, True), (6, 2, 2, 0.95, True),
    ])
    table["chance"] = np.where(table["experience"] == 0, 0.5, np.where(table["experience"] == 1, 0.25, 1 / 6))
    gaps = stability_gap(table)
    assert gaps["at_chance"].tolist() == [False, True, False]  # (1, 0), (2, 0), (2, 1)
    s = stability_gap_summary(table)
    # kept: task 0 into exp 1 (0.95 -> 0.00: depth 0.95, all permanent) and task 1 into exp 2
    # (0.90 -> 0.00: depth 0.90, all permanent)
    assert s["n_at_chance"] == 1 and s["n_cases"] == 2
    assert s["depth_mean"] == pytest.approx(0.925) and s["permanent_mean"] == pytest.approx(0.925)
    assert s["transient_mean"] == 0.0


def test_gap_statistics_without_gap_and_recovery_before_min() -> None:
    # depth 0.50 - 0.495 = 0.005 <= 0.01: no gap, nothing to recover from
    s = gap_statistics([1, 2, 3], [0.52, 0.495, 0.51], 0.50, tolerance=0.01)
    assert not s["has_gap"] and s["recovered"] and s["recovery_iters"] == 0.0
    assert s["depth"] == pytest.approx(0.005) and s["iter_of_min"] == 2
    # accuracy above the boundary value never dips: depth clipped at 0
    assert gap_statistics([1], [0.7], 0.5, tolerance=0.01)["depth"] == 0.0
    # within tolerance before the minimum does not count as recovery
    s = gap_statistics([1, 2, 3], [0.95, 0.30, 0.50], 0.90, tolerance=0.01)
    assert s["has_gap"] and not s["recovered"] and math.isnan(s["recovery_iters"])


def test_stability_gap_single_experience_is_empty() -> None:
    single = RUN.loc[RUN["experience"] == 0]
    gaps = stability_gap(single)
    assert gaps.empty and list(gaps.columns) == list(GAP_COLUMNS)
    s = stability_gap_summary(single)
    assert math.isnan(s["depth_mean"]) and math.isnan(s["recovered_frac"]) and s["n_cases"] == 0


# --------------------------------------------------------------------------------------------
# Table handling and the run summary
# --------------------------------------------------------------------------------------------


def test_prepare_table_derives_accuracy_and_coerces_flags() -> None:
    raw = RUN.drop(columns=["accuracy"]).astype({"boundary": str, "initial": str})
    t = prepare_table(raw)
    np.testing.assert_allclose(t["accuracy"], RUN["correct"] / RUN["n"])
    assert t["boundary"].dtype == bool and t["boundary"].sum() == 6
    with pytest.raises(ValueError, match="eval_task"):
        prepare_table(RUN.drop(columns=["eval_task"]))


def test_a_prepared_table_passes_through_and_a_shuffled_subset_is_prepared_again() -> None:
    t = prepare_table(RUN)
    assert prepare_table(t) is t
    subset = t.loc[t["eval_task"] == 1].iloc[::-1]  # inherits the mark, not the order or index
    again = prepare_table(subset)
    assert again is not subset and again["global_iter"].is_monotonic_increasing
    assert list(again.index) == list(range(len(subset)))


def test_summarize_values_and_json() -> None:
    s = summarize(RUN, windows=(3, 10))
    # avg_acc = (0.65 + 0.85 + 0.95) / 3 = 0.816667 ; bwt = ((0.65-0.80) + (0.85-0.90)) / 2 = -0.10
    # forgetting: task 0 max(0.80, 0.60) - 0.65 = 0.15, task 1 0.90 - 0.85 = 0.05 -> 0.10
    assert s["avg_acc"] == pytest.approx(2.45 / 3)
    # AIA = (0.80 + (0.60+0.90)/2 + 0.816667) / 3 = (0.80 + 0.75 + 0.816667) / 3
    assert s["avg_incremental_acc"] == pytest.approx((0.80 + 0.75 + 2.45 / 3) / 3)
    assert s["bwt"] == pytest.approx(-0.10)
    assert s["forgetting"] == pytest.approx(0.10)
    assert s["fwt"] is None  # seen-task evaluation only
    assert s["min_acc"] == pytest.approx(0.50) and s["wc_acc"] == pytest.approx(0.65)
    # WF^w/WP^w as De Lange et al. average them (every tracked task): WF^3 0.20 (above), WF^10:
    # task 0 0.80 - 0.30, task 1 0.90 - 0.70, task 2 0 -> 0.70 / 3 ; WP^3 1.45 / 3
    assert s["wf3"] == pytest.approx(0.20) and s["wf10"] == pytest.approx(0.70 / 3)
    assert s["wp3"] == pytest.approx(1.45 / 3)
    # the finished-tasks variant under its own name
    assert s["wf3_finished_tasks"] == pytest.approx(0.30) and s["wf10_finished_tasks"] == pytest.approx(0.35)
    assert s["wp3_finished_tasks"] == pytest.approx(0.25)
    assert s["sg_depth_mean"] == pytest.approx(0.30) and s["sg_depth_max"] == pytest.approx(0.40)
    assert s["sg_recovery_iters_mean"] == pytest.approx(4.0) and s["sg_n_gaps"] == 3
    assert s["sg_tolerance"] == "2 standard errors, at least 1/n" and s["num_tasks"] == 3
    assert s["num_evaluations"] == 7 and s["final_global_iter"] == 12
    json.dumps(s, allow_nan=False)


def test_summarize_default_keys_and_single_experience() -> None:
    s = summarize(RUN.loc[RUN["experience"] == 0])
    for key in ("avg_acc", "avg_incremental_acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc",
                "wf10", "wf100", "sg_depth_mean", "sg_depth_max", "sg_recovery_iters_mean"):
        assert key in s
    assert s["avg_acc"] == pytest.approx(0.80) and s["wc_acc"] == pytest.approx(0.80)
    assert s["bwt"] is None and s["forgetting"] is None and s["min_acc"] is None
    assert s["wf10"] == 0.0 and s["wf10_finished_tasks"] is None and s["sg_depth_mean"] is None
    json.dumps(s, allow_nan=False)


def test_summarize_with_future_tasks_has_fwt() -> None:
    s = summarize(table_from_matrix(R3, B3))
    assert s["fwt"] == pytest.approx(0.025) and "fwt_undefined" not in s
    assert summarize(table_from_matrix(R3, B3), scenario="task_incremental")["fwt"] == pytest.approx(0.025)
    assert s["bwt"] == pytest.approx(-0.175) and s["forgetting"] == pytest.approx(0.20)


def test_fwt_is_undefined_in_class_incremental_streams() -> None:
    s = summarize(table_from_matrix(R3, B3), scenario="class_incremental")
    assert s["fwt"] is None and "negative by construction" in s["fwt_undefined"]
    json.dumps(s, allow_nan=False)


def test_json_ready() -> None:
    out = json_ready({"a": np.float32(0.5), "b": float("nan"), "c": np.int64(3), "d": np.bool_(True)})
    assert out == {"a": 0.5, "b": None, "c": 3, "d": True}
    assert type(out["c"]) is int and type(out["d"]) is bool
