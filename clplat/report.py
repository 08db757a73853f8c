"""``clplat-report PATH``: the comparison table of a run or a multirun directory.

Groups finished runs by the overrides that differ between them (seeds excluded) and reports
mean ± std over seeds of the headline metrics; writes ``report.md`` and ``report.csv`` next to
the runs and prints the Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clplat.analysis.runs import aggregate, collect_runs, to_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clplat-report", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run directory or a multirun directory")
    parser.add_argument("--by", nargs="*", default=None,
                        help="group by these override keys (default: the keys that differ)")
    parser.add_argument("--no-write", action="store_true", help="print only; write no report files")
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"path={str(args.path)!r} does not exist")
    runs = collect_runs(args.path)
    if runs.empty:
        parser.error(f"path={str(args.path)!r} holds no finished run (no summary.json below it)")
    table = aggregate(runs, args.by)
    group_by = [c for c in table.columns if c != "runs" and not c.endswith(("_mean", "_std"))]
    markdown = to_markdown(table, group_by)
    if not args.no_write:
        out = args.path if args.path.is_dir() else args.path.parent
        (out / "report.md").write_text(markdown + "\n")
        table.to_csv(out / "report.csv", index=False)
    print(f"{len(runs)} runs under {args.path}\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
