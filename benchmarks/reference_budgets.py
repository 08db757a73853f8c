"""Reference budgets: does each reference recipe's budget bring ``joint`` close to convergence?

For every reference scenario (the default experiment and the ``conf/experiment/reference_*.yaml``
recipes) this runs ``strategy=joint`` at the recipe's own budget and at a long "converged" budget
(1.8 to 4 times the recipe's), per seed, and reports the gap. On the domain-IL recipe it also runs
``naive`` and ``replay`` at the recipe budget, paired by seed, to show that the stream separates
methods (and ``naive`` on the curriculum). A recipe meets its target when joint at its budget is within 2 points of converged.

Resumable: each run writes into ``<runs>/`` (default ``runs/reference_budgets/``, git-ignored) as ``<scenario>/<method>_<budget>_s<seed>/`` and is skipped
when its ``summary.json`` already exists. Results go to ``benchmarks/results/reference_budgets.json``
and a table is printed. Runs use ``logger=none trainer.checkpoint=false plots=false`` and
boundary-only evaluation (final accuracy only), one process at a time unless ``--jobs 2``::

    OMP_NUM_THREADS=1 python benchmarks/reference_budgets.py --seeds 0 1 2
    python benchmarks/reference_budgets.py --only default classil --seeds 0   # a subset
    python benchmarks/reference_budgets.py --seeds 1 2 --budgets recipe      # more seeds, recipe only
    python benchmarks/reference_budgets.py --report   # table only, JSON rebuilt from the run directories
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (recipe overrides, converged-budget overrides, extra methods at the recipe budget)
SCENARIOS: dict[str, dict] = {
    # `clplat-train` with no experiment: the default budget (trainer/default.yaml)
    "default": {"recipe": [], "converged": ["trainer.epochs=20"], "methods": []},
    "classil": {
        "recipe": ["experiment=reference_classil"],
        "converged": ["trainer.epochs=45"],
        "methods": [],
    },
    "taskil": {
        "recipe": ["experiment=reference_taskil"],
        "converged": ["trainer.epochs=30"],
        "methods": [],
    },
    "domainil": {
        "recipe": ["experiment=reference_domainil"],
        "converged": ["trainer.epochs=45"],
        "methods": ["naive", "replay"],
    },
    "curriculum": {
        "recipe": ["experiment=reference_curriculum"],
        "converged": ["trainer.iterations=1200"],
        "methods": ["naive"],
    },
}
COMMON = ["logger=none", "trainer.checkpoint=false", "plots=false", "eval.every_n_iters=null"]


def run_one(out: Path, overrides: list[str]) -> dict:
    summary = out / "summary.json"
    if not summary.exists():
        cmd = [sys.executable, "-m", "clplat.train", *overrides, *COMMON, f"hydra.run.dir={out}"]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not summary.exists():
            sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
            raise RuntimeError(f"run failed: {' '.join(cmd)}")
        print(f"  done {out.relative_to(out.parents[1])}: {time.time() - t0:.0f} s", flush=True)
    s = json.loads(summary.read_text())
    return {"avg_acc": s["avg_acc"], "global_iters": s["global_iters"], "wall_time_s": s["wall_time_s"],
            "seed": s["seed"], "strategy": s["strategy"], "stream": s["stream"]}


def plan(names: list[str], seeds: list[int], runs: Path) -> list[tuple[str, str, str, int, Path, list[str]]]:
    jobs = []
    for name in names:
        sc = SCENARIOS[name]
        for seed in seeds:
            base = [*sc["recipe"], f"seed={seed}"]
            jobs.append((name, "joint", "recipe", seed, runs / name / f"joint_recipe_s{seed}",
                         [*base, "strategy=joint"]))
            jobs.append((name, "joint", "converged", seed, runs / name / f"joint_converged_s{seed}",
                         [*base, "strategy=joint", *sc["converged"]]))
            for m in sc["methods"]:
                jobs.append((name, m, "recipe", seed, runs / name / f"{m}_recipe_s{seed}",
                             [*base, f"strategy={m}"]))
    return jobs


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def gap_str(gaps: list[float]) -> str:
    if not gaps:
        return "-"
    per_seed = " / ".join(f"{g:+.1f}" for g in gaps)
    return f"{per_seed} ({statistics.mean(gaps):+.1f})" if len(gaps) > 1 else per_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "reference_budgets")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reference_budgets.json")
    ap.add_argument("--budgets", nargs="+", choices=["recipe", "converged"], default=["recipe", "converged"],
                    help="which budgets to run (e.g. recipe only for extra seeds)")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side (at most 2 on 2 cores)")
    ap.add_argument("--report", action="store_true", help="only tabulate runs that already exist")
    args = ap.parse_args()

    jobs = [j for j in plan(args.only, args.seeds, args.runs) if j[2] in args.budgets]
    if args.report:
        jobs = [j for j in jobs if (j[4] / "summary.json").exists()]

    def work(j):
        try:
            return j, run_one(j[4], j[5])
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return j, None

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(work, jobs))

    # merge with earlier results (other scenarios / seeds), keyed by scenario/method/budget/seed;
    # --report rebuilds the file from the run directories alone
    fresh = args.report or not args.out.exists()
    results = {"runs": {}} if fresh else json.loads(args.out.read_text())
    for (name, method, budget, seed, out, overrides), r in done:
        if r is not None:
            results["runs"][f"{name}/{method}/{budget}/s{seed}"] = {
                "scenario": name, "method": method, "budget": budget, "seed": seed,
                "overrides": overrides, **r}
    rows = list(results["runs"].values())
    table = []
    for name in SCENARIOS:
        sub = [r for r in rows if r["scenario"] == name]
        if not sub:
            continue
        rec = {r["seed"]: r for r in sub if r["method"] == "joint" and r["budget"] == "recipe"}
        conv = {r["seed"]: r for r in sub if r["method"] == "joint" and r["budget"] == "converged"}
        paired = sorted(set(rec) & set(conv))
        gaps = [conv[s]["avg_acc"] - rec[s]["avg_acc"] for s in paired]
        line = {
            "scenario": name,
            "stream": next(iter(sub))["stream"],
            "seeds": sorted(rec),
            "joint_recipe": [round(rec[s]["avg_acc"], 4) for s in sorted(rec)],
            "joint_recipe_iters": next(iter(rec.values()))["global_iters"] if rec else None,
            "joint_recipe_wall_s": [round(rec[s]["wall_time_s"], 1) for s in sorted(rec)],
            "joint_converged": [round(conv[s]["avg_acc"], 4) for s in sorted(conv)],
            "joint_converged_iters": next(iter(conv.values()))["global_iters"] if conv else None,
            "gap_points": [round(100 * g, 2) for g in gaps],
            "within_2_points": bool(gaps) and statistics.mean(gaps) <= 0.02,
        }
        for m in SCENARIOS[name]["methods"]:
            mr = {r["seed"]: r for r in sub if r["method"] == m and r["budget"] == "recipe"}
            line[m] = [round(mr[s]["avg_acc"], 4) for s in sorted(mr)]
            line[f"{m}_seeds"] = sorted(mr)
        table.append(line)
    results["table"] = table
    results["machine"] = {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    def per_seed(xs: list[float]) -> str:
        return " / ".join(f"{x:.3f}" for x in xs) if xs else "-"

    print("\n| scenario | stream | joint at recipe, per seed (mean ± sd) | steps | joint converged, per seed (mean ± sd) "
          "| steps | gap, per seed (mean), points | others at recipe, per seed (mean ± sd) |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        others = "; ".join(f"{m} {per_seed(t[m])} ({mean_sd(t[m])})"
                           for m in SCENARIOS[t["scenario"]]["methods"] if t.get(m))
        print(f"| {t['scenario']} | `{t['stream']}` | {per_seed(t['joint_recipe'])} ({mean_sd(t['joint_recipe'])}) "
              f"| {t['joint_recipe_iters'] or '-'} "
              f"| {per_seed(t['joint_converged'])} ({mean_sd(t['joint_converged'])}) | {t['joint_converged_iters'] or '-'} "
              f"| {gap_str(t['gap_points'])} | {others or '-'} |")
    print("seeds: " + ", ".join(f"{t['scenario']} {t['seeds']}" for t in table))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
