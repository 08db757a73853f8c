"""Statistics over seeds (``clplat.analysis.stats``) against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from clplat.analysis.stats import paired_difference, summarize_seeds, t_quantile

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
