"""Does a refactoring change results? Every strategy and plugin run at one seed on two commits.

Each commit is checked out into a temporary git worktree; every ``conf/strategy`` config (and
each plugin on top of replay) runs there with the same small, fixed budget and seed. The two runs
are compared on every evaluation row (``metrics.csv``: correct counts and losses per task and
step) and on the headline metrics. A row reads ``identical`` or names what differs by how much;
a refactoring that should not change results prints ``identical`` on every row (or each
difference gets its reason).

    python benchmarks/same_results.py --before HEAD~3 --after HEAD
    python benchmarks/same_results.py --before main --after HEAD --only replay ewc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BUDGET = ["stream.source.num_samples=500", "backbone.hidden_size=16", "trainer.iterations=12", "trainer.batch_size=16",
          "eval.every_n_iters=4", "eval.subset_size=60", "logger=none", "plots=false", "trainer.checkpoint=false",
          "print_summary=false", "seed=0"]
#: methods whose defaults need a larger model or another stream to run at all
EXTRA = {"sharp": ["backbone.num_layers=2"]}
METRICS = ("avg_acc", "forgetting", "bwt", "min_acc", "wc_acc")


def methods(checkout: Path) -> dict[str, list[str]]:
    found = {p.stem: [f"strategy={p.stem}", *EXTRA.get(p.stem, [])] for p in sorted((checkout / "conf" / "strategy").glob("*.yaml"))}
    found.update({f"replay+{p.stem}": ["strategy=replay", f"plugin=[{p.stem}]"]
                  for p in sorted((checkout / "conf" / "plugin").glob("*.yaml"))})
    return found


def run(checkout: Path, overrides: list[str], out: Path) -> Path | None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-m", "clplat.train", *BUDGET, *overrides, f"hydra.run.dir={out}"],
                            cwd=checkout, env=env, capture_output=True, text=True)
    return out if result.returncode == 0 and (out / "summary.json").is_file() else None


def compare(before: Path | None, after: Path | None) -> str:
    """``identical`` when every evaluation row (correct counts and losses of every task at every
    evaluated step) and the headline metrics agree; else what differs."""
    import pandas as pd

    if before is None or after is None:
        return "failed on " + " and ".join(n for n, s in (("before", before), ("after", after)) if s is None)
    differences = []
    a, b = (pd.read_csv(run / "metrics.csv") for run in (before, after))
    if a.shape != b.shape or not a.equals(b):
        if a.shape == b.shape:
            worst = (a["accuracy"] - b["accuracy"]).abs().max()
            differences.append(f"evaluation rows differ (max |accuracy diff| {worst:.4f})")
        else:
            differences.append(f"evaluation rows {len(a)} -> {len(b)}")
    sa, sb = (json.loads((run / "summary.json").read_text()) for run in (before, after))
    differences += [f"{m} {sa[m]:.4f} -> {sb[m]:.4f}" for m in METRICS
                    if isinstance(sa.get(m), float) and isinstance(sb.get(m), float) and sa[m] != sb[m]]
    return "identical" if not differences else "; ".join(differences)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision")
    parser.add_argument("--after", default="HEAD", help="a git revision (default HEAD)")
    parser.add_argument("--only", nargs="*", help="only these methods (names as printed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="same_results_") as tmp:
        trees = {}
        for label in ("before", "after"):
            trees[label] = Path(tmp) / label
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(trees[label]), getattr(args, label)],
                           cwd=ROOT, check=True)
        try:
            todo = {name: o for name, o in methods(trees["after"]).items() if not args.only or name in args.only}
            print(f"{'method':<22} result ({args.before} -> {args.after}, seed 0)")
            for name, overrides in todo.items():
                results = [run(trees[label], overrides, Path(tmp) / "runs" / label / name) for label in ("before", "after")]
                print(f"{name:<22} {compare(*results)}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
