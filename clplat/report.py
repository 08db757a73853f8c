"""``clplat-report PATH``: the comparison table and plots of a run or a multirun directory.

Groups finished runs by the overrides that differ between them (seeds excluded) and reports,
over each group's runs, the number of values, mean ± std, the 95 % Student-t interval of the
mean and the per-seed values of the headline metrics — final and average incremental accuracy,
forgetting, BWT, FWT (where defined), min-ACC, WC-ACC, WF10/WP10, stability-gap depth and recovery,
wall time — and of the run's resources (memory, compute
counts) when its ``summary.json`` has them. ``--baseline GROUP`` adds the paired difference of
every other group to that one over the seeds both have, with its interval and whether it
excludes 0. Writes ``report.md`` and ``report.csv`` (``<metric>_n/_mean/_std/_ci_low/_ci_high/
_per_seed`` columns, for scripts; ``report_paired.csv`` with ``--baseline``) next to the runs,
plus two comparison figures — average accuracy vs iteration and a zoom on every
boundary, one curve per group with a band over seeds — and prints the Markdown. Failed jobs of
a sweep (their ``error.txt``) are listed, so a table with a missing seed does not pass unseen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clplat.analysis.runs import (
    aggregate,
    collect_runs,
    find_failed_jobs,
    group_label_values,
    paired_differences,
    paired_markdown,
    per_seed_markdown,
    seed_warning,
    shared_settings,
    swept_keys,
    to_markdown,
    with_config_values,
)


def _failures_markdown(path: Path, out: Path) -> str:
    failed = find_failed_jobs(path)
    if not failed:
        return ""
    lines = ["", f"**{len(failed)} failed job(s)** (traceback in each directory's `error.txt`):", ""]
    for job in failed:
        where = job.job_dir.relative_to(out) if job.job_dir.is_relative_to(out) else job.job_dir
        lines.append(f"- `{where}`: {job.message}" + (f" ({job.slurm})" if job.slurm else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clplat-report", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run directory or a multirun directory")
    parser.add_argument("--by", nargs="*", default=None,
                        help="group by these keys: overrides or any config key such as optimizer.lr (default: the "
                             "overrides that differ between runs)")
    parser.add_argument("--baseline", default=None, metavar="GROUP",
                        help="add paired differences of every group to this one (a group label of the "
                             "table, e.g. naive; 'key=value, key=value' when grouping by several keys)")
    parser.add_argument("--no-write", action="store_true", help="print only; write no report files")
    parser.add_argument("--no-plots", action="store_true", help="write the table only, no figures")
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"path={str(args.path)!r} does not exist")
    runs = collect_runs(args.path)
    if runs.empty:
        failed = find_failed_jobs(args.path)
        detail = f"; {len(failed)} failed job(s), e.g. {failed[0].job_dir}: {failed[0].message}" if failed else ""
        parser.error(f"path={str(args.path)!r} holds no finished run (no summary.json below it){detail}")
    group_by = args.by if args.by else swept_keys(runs)
    try:
        runs = with_config_values(runs, group_by)  # --by may name any setting, overridden or not
        table = aggregate(runs, group_by)
    except KeyError as err:
        parser.error(str(err.args[0]))
    paired = None
    if args.baseline is not None:
        groups = group_label_values(runs, group_by)
        if args.baseline not in groups:
            parser.error(f"--baseline {args.baseline!r} is not a group of this report; "
                         f"the groups are: {', '.join(map(repr, groups))}")
        paired = paired_differences(runs, group_by, args.baseline)
    out = args.path if args.path.is_dir() else args.path.parent
    markdown = to_markdown(table, group_by)
    shared = {k: v for k, v in shared_settings(runs).items() if k not in group_by}
    if shared:
        markdown += "\n\nShared by every run: " + ", ".join(f"`{k}={v}`" for k, v in shared.items())
    warning = seed_warning(runs, group_by)
    if warning:
        markdown += "\n\n" + warning
    per_seed = per_seed_markdown(runs, group_by)
    if per_seed:
        markdown += "\n\nPer seed (every run's value):\n\n" + per_seed
    if paired is not None:
        markdown += (f"\n\nPaired differences vs `{args.baseline}` (group − baseline over the seeds both "
                     "have; significant when the 95 % CI excludes 0):\n\n" + paired_markdown(paired, group_by))
    markdown += _failures_markdown(args.path, out)
    written: list[Path] = []
    if not args.no_write:
        (out / "report.md").write_text(markdown + "\n")
        table.to_csv(out / "report.csv", index=False)
        written += [out / "report.md", out / "report.csv"]
        if paired is not None:
            paired.to_csv(out / "report_paired.csv", index=False)
            written.append(out / "report_paired.csv")
        else:  # a paired table of an earlier --baseline would no longer match report.md
            (out / "report_paired.csv").unlink(missing_ok=True)
        if not args.no_plots:
            from clplat.analysis.sweep_plots import save_sweep_plots  # matplotlib only when drawing

            written += list(save_sweep_plots(runs, out, group_by).values())
    print(f"{len(runs)} runs under {args.path}, grouped by {', '.join(group_by)} "
          "(mean ± std [95 % CI of the mean] over each group's runs)\n")
    print(markdown)
    if written:
        print("\nwrote " + ", ".join(str(p.relative_to(out)) if p.is_relative_to(out) else str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
