"""Statistics over seeds: mean, std, a 95 % confidence interval, and the paired difference.

A report compares groups of runs that differ in one setting and repeat it over a few seeds.
With 3 to 5 seeds the normal quantile 1.96 understates the uncertainty badly (the Student-t
quantile with 4 degrees of freedom is 2.78), so every interval here uses the t quantile with
``n - 1`` degrees of freedom. Two groups run on the same seeds share their stream order, data
split and initialisation draws, so their difference is judged *per seed* (a paired test): the
seed-to-seed spread common to both cancels and a small but consistent improvement shows.

Pure functions of plain numbers: no pandas, no run directories, so they are checked against
hand-computed values (``tests/test_stats.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping

CONFIDENCE = 0.95
"""Two-sided level of every interval in a report."""
CLAIM_SEEDS = 5
"""Seeds a claim about a difference needs (the report warns below it)."""


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value ``t_{(1+confidence)/2, df}`` (2.776445 for df=4).

    Exact (``scipy.stats.t.ppf``), not a table: any number of seeds gets its own quantile.
    ``NaN`` for ``df < 1``, where the interval is undefined.
    """
    if df < 1:
        return math.nan
    from scipy.stats import t  # imported on use: scipy.stats takes a noticeable time to load

    return float(t.ppf(0.5 + confidence / 2.0, df))


def _finite(value: Any) -> float | None:
    """``value`` as a float, or ``None`` for a missing value (``None``, NaN, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample std and 95 % t interval of one metric over a group's seeds.

    ``n`` counts the values that were present (a metric missing in a run does not count), so a
    reader sees when an interval rests on fewer seeds than the group has runs. With ``n == 1``
    the std and the interval are ``NaN`` (undefined), never 0: one seed says nothing about
    the spread.
    """

    n: int
    mean: float
    std: float
    half_width: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def summarize_seeds(values: Iterable[Any], confidence: float = CONFIDENCE) -> SeedSummary:
    """Mean, std (``ddof=1``), ``n`` and the half-width ``t_{0.975, n-1} * std / sqrt(n)``.

    ``None``/NaN values are skipped. No value at all gives ``n=0`` and NaN everywhere.
    """
    present = [v for v in (_finite(x) for x in values) if v is not None]
    n = len(present)
    if n == 0:
        return SeedSummary(0, math.nan, math.nan, math.nan)
    mean = math.fsum(present) / n
    if n == 1:
        return SeedSummary(1, mean, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in present) / (n - 1))
    return SeedSummary(n, mean, std, t_quantile(n - 1, confidence) * std / math.sqrt(n))


@dataclass(frozen=True)
class PairedDifference(SeedSummary):
    """``a - b`` over the seeds both have a value for: the ``SeedSummary`` of the differences.

    ``significant`` is ``True`` only when the interval is defined (``n >= 2``) and excludes 0;
    an interval that contains 0 means the data do not show a difference at this level (not
    that there is none). ``seeds`` lists the shared seeds used.
    """

    significant: bool
    seeds: tuple[Hashable, ...]

    @property
    def defined(self) -> bool:
        """Whether there is an interval at all (2 or more shared seeds)."""
        return self.n >= 2


def paired_difference(a_by_seed: Mapping[Hashable, Any], b_by_seed: Mapping[Hashable, Any],
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """The paired difference ``a[s] - b[s]`` over the seeds ``s`` both mappings hold a value for.

    A seed missing from either side, or whose value is ``None``/NaN on either side, is left
    out (unpaired values carry no information about the difference). The interval is the
    one-sample t interval of the differences, ``t_{0.975, n-1} * std / sqrt(n)``.
    """
    seeds = []
    diffs = []
    for seed, a_value in a_by_seed.items():
        if seed not in b_by_seed:
            continue
        a, b = _finite(a_value), _finite(b_by_seed[seed])
        if a is None or b is None:
            continue
        seeds.append(seed)
        diffs.append(a - b)
    summary = summarize_seeds(diffs, confidence)
    significant = summary.n >= 2 and not (summary.low <= 0.0 <= summary.high)
    return PairedDifference(summary.n, summary.mean, summary.std, summary.half_width, bool(significant),
                            tuple(seeds))
