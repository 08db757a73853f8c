"""Statistics over seeds (``clplat.analysis.stats``) against hand-computed numbers, and the
statistics of ``clplat-report``: CI columns, per-seed values, the paired table vs a baseline,
resource columns, the seed warning and the bad-baseline error.

The sweeps here are only ``summary.json`` + ``.hydra/overrides.yaml`` files written by hand (no
metrics.csv, no training; the report runs with ``--no-plots``), so every number is known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from clplat.analysis import collect_runs, swept_keys
from clplat.analysis.stats import paired_difference, summarize_seeds, t_quantile
from clplat.report import main as report_main

NAN = float("nan")


# -- the pure functions ---------------------------------------------------------------------------

def test_t_quantile_matches_the_tables():
    # two-sided 95 %: t_{0.975, df} from any t table
    assert t_quantile(1) == pytest.approx(12.706205, abs=1e-6)
    assert t_quantile(2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(4) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(30) == pytest.approx(2.042272, abs=1e-6)
    assert math.isnan(t_quantile(0))


def test_summarize_five_seeds_by_hand():
    s = summarize_seeds([0.80, 0.82, 0.78, 0.84, 0.76])
    # mean = 4.00 / 5 = 0.80
    # deviations 0, .02, -.02, .04, -.04 -> squares sum .0040; / (n-1=4) = .0010; std = sqrt(.001) = 0.031623
    # se = 0.031623 / sqrt(5) = 0.014142; half-width = t_{0.975,4} * se = 2.776445 * 0.014142 = 0.039265
    assert s.n == 5
    assert s.mean == pytest.approx(0.80, abs=1e-12)
    assert s.std == pytest.approx(0.031623, abs=1e-6)
    assert s.half_width == pytest.approx(0.039265, abs=1e-6)
    assert (s.low, s.high) == pytest.approx((0.760735, 0.839265), abs=1e-6)


def test_summarize_two_seeds_and_missing_values():
    # [1, 3]: mean 2, std sqrt(((-1)^2 + 1^2) / 1) = 1.414214, se = 1.414214 / sqrt(2) = 1,
    # half-width = t_{0.975,1} * 1 = 12.706205
    s = summarize_seeds([1.0, 3.0])
    assert (s.n, s.mean, s.std, s.half_width) == pytest.approx((2, 2.0, 1.414214, 12.706205), abs=1e-6)
    # None and NaN are skipped and not counted: [0.5, 0.7] -> mean .6, std .141421, se .1, hw 1.270620
    s = summarize_seeds([0.5, None, NAN, 0.7])
    assert (s.n, s.mean, s.std, s.half_width) == pytest.approx((2, 0.6, 0.141421, 1.270620), abs=1e-6)


def test_one_seed_has_no_interval_and_no_seed_has_nothing():
    s = summarize_seeds([0.9])
    assert s.n == 1 and s.mean == 0.9
    assert math.isnan(s.std) and math.isnan(s.half_width) and math.isnan(s.low)  # undefined, never 0
    s = summarize_seeds([None, NAN])
    assert s.n == 0 and math.isnan(s.mean) and math.isnan(s.half_width)


def test_paired_difference_significant_by_hand():
    a = {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.84, 4: 0.76, 5: 0.99}   # seed 5 has no partner: left out
    b = {0: 0.75, 1: 0.78, 2: 0.74, 3: 0.78, 4: 0.73, 6: 0.10}   # seed 6 neither
    d = paired_difference(a, b)
    # differences .05 .04 .04 .06 .03: mean .044; deviations .006 -.004 -.004 .016 -.014,
    # squares sum .00052; / 4 = .00013; std = .011402; se = .011402 / sqrt(5) = .005099;
    # half-width = 2.776445 * .005099 = .014157 -> CI [.029843, .058157], excludes 0
    assert d.n == 5 and d.seeds == (0, 1, 2, 3, 4)
    assert d.mean == pytest.approx(0.044, abs=1e-9)
    assert d.std == pytest.approx(0.011402, abs=1e-6)
    assert (d.low, d.high) == pytest.approx((0.029843, 0.058157), abs=1e-6)
    assert d.significant and d.defined


def test_paired_difference_not_significant_by_hand():
    a = {0: 0.77, 1: 0.77, 2: 0.77, 3: 0.76, 4: 0.74}
    b = {0: 0.75, 1: 0.78, 2: 0.74, 3: 0.78, 4: 0.73}
    d = paired_difference(a, b)
    # differences .02 -.01 .03 -.02 .01: mean .006; deviations .014 -.016 .024 -.026 .004,
    # squares sum .00172; / 4 = .00043; std = .020736; se = .009274;
    # half-width = 2.776445 * .009274 = .025748 -> CI [-.019748, .031748], contains 0
    assert d.mean == pytest.approx(0.006, abs=1e-9)
    assert d.std == pytest.approx(0.020736, abs=1e-6)
    assert (d.low, d.high) == pytest.approx((-0.019748, 0.031748), abs=1e-6)
    assert not d.significant


def test_paired_difference_skips_missing_values_and_needs_two_seeds():
    # seed 1 is NaN on one side, seed 2 None on the other: only seeds 0 and 3 pair
    # differences .1, .3: mean .2, std .141421, se .1, half-width 12.706205 * .1 = 1.270620
    d = paired_difference({0: 0.5, 1: NAN, 2: 0.4, 3: 0.9}, {0: 0.4, 1: 0.3, 2: None, 3: 0.6})
    assert d.n == 2 and d.seeds == (0, 3)
    assert (d.mean, d.half_width) == pytest.approx((0.2, 1.270620), abs=1e-6)
    assert not d.significant  # [-1.07, 1.47] contains 0
    one = paired_difference({0: 0.9, 1: 0.8}, {0: 0.1, 2: 0.1})
    assert one.n == 1 and one.mean == pytest.approx(0.8) and math.isnan(one.low)
    assert not one.significant and not one.defined  # one pair: no interval, no claim
    assert paired_difference({}, {0: 1.0}).n == 0


# -- clplat-report on a hand-written sweep ---------------------------------------------------------

#: final average accuracy per strategy and seed (replay - naive: significant; ewc - naive: not)
AVG_ACC = {
    "naive": {0: 0.75, 1: 0.78, 2: 0.74, 3: 0.78, 4: 0.73},
    "replay": {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.84, 4: 0.76},
    "ewc": {0: 0.77, 1: 0.77, 2: 0.77, 3: 0.76, 4: 0.74},
}


def write_summary(job: Path, strategy: str, seed: int, summary: dict) -> None:
    """A finished run as the report reads it: summary.json and Hydra's overrides.yaml."""
    (job / ".hydra").mkdir(parents=True)
    (job / "summary.json").write_text(json.dumps({"strategy": strategy, "stream": "synthetic", "seed": seed,
                                                  **summary}))
    (job / ".hydra" / "overrides.yaml").write_text(f"- strategy={strategy}\n- seed={seed}\n- trainer.iterations=20\n")


@pytest.fixture
def stats_sweep(tmp_path: Path) -> Path:
    """naive/replay/ewc x seeds 0-4; replay's forgetting is missing for seed 4; resources on every run."""
    root = tmp_path / "sweep"
    num = 0
    for strategy, by_seed in AVG_ACC.items():
        for seed, acc in by_seed.items():
            forgetting = None if (strategy, seed) == ("replay", 4) else 0.1 + 0.01 * seed
            resources = {"memory_bytes": 1_000_000 + 1000 * seed, "optimizer_steps": 100, "device": "cpu",
                         "cuda": False}
            write_summary(root / f"{num}_seed={seed},strategy={strategy}", strategy, seed,
                          {"avg_acc": acc, "forgetting": forgetting, "wall_time_s": 10.0, "resources": resources})
            num += 1
    return root


def _row(lines: list[str], prefix: str) -> str:
    found = [line for line in lines if line.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


def test_report_shows_intervals_per_seed_values_and_resources(stats_sweep: Path, capsys):
    runs = collect_runs(stats_sweep)
    assert swept_keys(runs) == ["strategy"]  # resource columns are not grouping keys
    assert report_main([str(stats_sweep), "--no-plots"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()

    table = pd.read_csv(stats_sweep / "report.csv").set_index("strategy")
    assert table.index.tolist() == ["ewc", "naive", "replay"] and table.runs.tolist() == [5, 5, 5]
    replay = table.loc["replay"]
    # the hand-computed example above: 0.80, std 0.031623, CI [0.760735, 0.839265]
    assert (replay.avg_acc_n, replay.avg_acc_mean, replay.avg_acc_std) == pytest.approx((5, 0.80, 0.031623), abs=1e-6)
    assert (replay.avg_acc_ci_low, replay.avg_acc_ci_high) == pytest.approx((0.760735, 0.839265), abs=1e-6)
    assert replay.avg_acc_per_seed == "0:0.8 1:0.82 2:0.78 3:0.84 4:0.76"
    # forgetting missing for seed 4: 4 values .10 .11 .12 .13 -> mean .115, std .012910,
    # half-width t_{0.975,3} (3.182446) * .012910 / 2 = .020543
    assert replay.forgetting_n == 4 and replay.forgetting_mean == pytest.approx(0.115)
    assert (replay.forgetting_ci_low, replay.forgetting_ci_high) == pytest.approx((0.094457, 0.135543), abs=1e-6)
    assert replay.forgetting_per_seed == "0:0.1 1:0.11 2:0.12 3:0.13 4:nan"
    # no run has a BWT: n = 0, no interval
    assert replay.bwt_n == 0 and math.isnan(replay.bwt_mean) and math.isnan(replay.bwt_ci_low)
    # resources: numeric entries only (device and the cuda flag are not columns), averaged like metrics
    assert "resources.device" not in table.columns and "resources.cuda_mean" not in table.columns
    assert replay["resources.memory_bytes_mean"] == pytest.approx(1_002_000)
    assert replay["resources.optimizer_steps_std"] == 0.0

    header = lines[lines.index(next(line for line in lines if line.startswith("| strategy |")))]
    # a metric no run has (BWT here) gets no column
    assert header.startswith("| strategy | runs | final acc | forgetting | wall time (s) |")
    assert header.endswith("| memory_bytes | optimizer_steps |")
    row = _row(lines, "| replay | 5 |")
    assert "| 0.800 ± 0.032 [0.761, 0.839] |" in row
    assert "| 0.115 ± 0.013 [0.094, 0.136] (n=4) |" in row  # rests on 4 seeds of 5
    assert "| 1,002,000 ± 1,581 [1,000,037, 1,003,963] |" in row
    assert "BWT" not in header
    assert "claims need 5 seeds" not in out  # every group has 5

    # per seed: one row per metric and group, one column per seed
    assert _row(lines, "| metric | strategy |") == "| metric | strategy | seed 0 | seed 1 | seed 2 | seed 3 | seed 4 |"
    assert _row(lines, "| final acc | replay |") == "| final acc | replay | 0.800 | 0.820 | 0.780 | 0.840 | 0.760 |"
    assert _row(lines, "| forgetting | replay |").endswith("| 0.130 | n/a |")
    assert not any(line.startswith("| BWT |") for line in lines)  # no run has it
    assert "Paired differences" not in out and not (stats_sweep / "report_paired.csv").exists()
    assert (stats_sweep / "report.md").read_text().strip() in out


def test_report_paired_differences_against_a_baseline(stats_sweep: Path, capsys):
    # lwf shares only seed 0 with naive (its other seed is 7): no interval for it
    write_summary(stats_sweep / "15_seed=0,strategy=lwf", "lwf", 0, {"avg_acc": 0.70})
    write_summary(stats_sweep / "16_seed=7,strategy=lwf", "lwf", 7, {"avg_acc": 0.72})
    assert report_main([str(stats_sweep), "--no-plots", "--baseline", "naive"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()

    assert _row(lines, "| metric | strategy | shared seeds |") == (
        "| metric | strategy | shared seeds | mean diff ± std | 95 % CI | verdict |")
    # hand-computed above: replay - naive = +.044 ± .011402, CI [.029843, .058157]
    assert _row(lines, "| final acc | replay | 5 |") == (
        "| final acc | replay | 5 | +0.044 ± 0.011 | [+0.030, +0.058] | significant |")
    # ewc - naive = +.006 ± .020736, CI [-.019748, .031748]
    assert _row(lines, "| final acc | ewc | 5 |") == (
        "| final acc | ewc | 5 | +0.006 ± 0.021 | [-0.020, +0.032] | not significant |")
    assert _row(lines, "| final acc | lwf | 1 |") == (
        "| final acc | lwf | 1 | -0.050 | n/a | n/a (needs >= 2 shared seeds) |")
    # replay's forgetting pairs over the 4 seeds it has; the per-seed columns include lwf's seed 7
    assert _row(lines, "| forgetting | replay | 4 |") == (  # same values as naive: diff 0, CI [0, 0]
        "| forgetting | replay | 4 | +0.000 ± 0.000 | [+0.000, +0.000] | not significant |")
    assert _row(lines, "| metric | strategy | seed 0 |").endswith("| seed 4 | seed 7 |")
    assert _row(lines, "| final acc | lwf | 0.700 |") == "| final acc | lwf | 0.700 | – | – | – | – | 0.720 |"
    # one line, after the table, for the group below 5 seeds
    warning, = [line for line in lines if "claims need 5 seeds" in line]
    assert "lwf (2)" in warning and "naive" not in warning

    paired = pd.read_csv(stats_sweep / "report_paired.csv")
    acc = paired.loc[paired.metric == "avg_acc"].set_index("group")
    assert acc.index.tolist() == ["ewc", "lwf", "replay"] and set(paired.baseline) == {"naive"}
    assert acc.loc["replay", "mean_diff"] == pytest.approx(0.044)
    assert (acc.loc["replay", "ci_low"], acc.loc["replay", "ci_high"]) == pytest.approx((0.029843, 0.058157), abs=1e-6)
    assert acc.significant.to_dict() == {"ewc": False, "lwf": False, "replay": True}
    assert acc.loc["replay", "seeds"] == "0 1 2 3 4" and acc.loc["lwf", "n"] == 1

    assert report_main([str(stats_sweep), "--no-plots"]) == 0  # without --baseline: no stale paired table
    assert not (stats_sweep / "report_paired.csv").exists() and "Paired" not in (stats_sweep / "report.md").read_text()


def test_a_bad_baseline_is_one_error_and_writes_nothing(stats_sweep: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(stats_sweep), "--baseline", "joint"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if "error" in line]
    assert error_lines == ["clplat-report: error: --baseline 'joint' is not a group of this report; "
                           "the groups are: 'ewc', 'naive', 'replay'"]
    assert not list(stats_sweep.glob("report*"))


def test_baseline_with_several_grouping_keys(tmp_path: Path, capsys):
    # two keys swept: a group's label is "key=value, key=value", and --baseline takes it whole
    for num, (strategy, size, seed) in enumerate(
            (s, b, seed) for s in ("der", "replay") for b in (50, 200) for seed in (0, 1)):
        job = tmp_path / f"{num}"
        write_summary(job, strategy, seed, {"avg_acc": 0.5 + size / 1000 + (0.1 if strategy == "der" else 0.0)
                                            + 0.01 * seed})
        (job / ".hydra" / "overrides.yaml").write_text(
            f"- strategy={strategy}\n- strategy.buffer_size={size}\n- seed={seed}\n")
    with pytest.raises(SystemExit):
        report_main([str(tmp_path), "--no-write", "--baseline", "50"])
    assert ("the groups are: 'strategy=der, strategy.buffer_size=200', 'strategy=der, strategy.buffer_size=50', "
            "'strategy=replay, strategy.buffer_size=200', 'strategy=replay, strategy.buffer_size=50'"
            in capsys.readouterr().err)
    assert report_main([str(tmp_path), "--no-write", "--baseline", "strategy=replay, strategy.buffer_size=50"]) == 0
    # der/200 - replay/50 = +0.250 on both seeds: std 0, the interval [0.25, 0.25] excludes 0
    assert ("| final acc | strategy=der, strategy.buffer_size=200 | 2 | +0.250 ± 0.000 | [+0.250, +0.250] "
            "| significant |") in capsys.readouterr().out
