"""Trials per hour of a tuning batch: one after another (``launcher=basic``) vs in parallel
(``launcher=joblib``, one job per core), measured side by side on the same trial configs.

Both paths go through ``clplat.tune.launch``, exactly as ``clplat-tune`` runs a batch: one
``clplat-train -m`` multirun of ``--trials`` trial configs. Repetitions alternate the two paths
so that a change in the machine's load hits both; the ratio of the medians is printed.

    OMP_NUM_THREADS=1 python benchmarks/tune_throughput.py --trials 16 --reps 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clplat.tune import launch, score, tuning_overrides, write_tuned_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per launch (clplat-tune's default batch at 2 jobs)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs of the joblib path")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tune_throughput.json")
    parser.add_argument("overrides", nargs="*", default=["strategy=replay"],
                        help="the trial runs' overrides (default: replay at the default budget)")
    args = parser.parse_args()
    overrides = tuning_overrides(args.overrides)
    times: dict[str, list[float]] = {"basic": [], "joblib": []}
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp)
        names = [f"trial_{i}" for i in range(args.trials)]
        for i, name in enumerate(names):  # distinct learning rates, as a study's trials would have
            write_tuned_config(study, name, {"optimizer.lr": 0.001 * (1 + i)})
        for rep in range(args.reps):
            for launcher in (("basic", "joblib") if rep % 2 == 0 else ("joblib", "basic")):
                sweep = study / f"{launcher}_{rep}"
                started = time.perf_counter()
                launch(study, overrides, names, [0], launcher, args.jobs, sweep)
                times[launcher].append(time.perf_counter() - started)
                finished = sum(score(sweep, name, [0], "avg_acc") is not None for name in names)
                if finished != len(names):
                    raise SystemExit(f"{launcher}: only {finished} of {len(names)} trials finished")
                print(f"rep {rep} {launcher:6s} {times[launcher][-1]:7.1f} s", flush=True)
    per_hour = {k: 3600 * args.trials / statistics.median(v) for k, v in times.items()}
    ratio = per_hour["joblib"] / per_hour["basic"]
    print(f"trials per hour: basic {per_hour['basic']:.0f}, joblib ({args.jobs} jobs) {per_hour['joblib']:.0f}; "
          f"parallel / sequential = {ratio:.2f}x (medians of {args.reps})")
    args.out.write_text(json.dumps({"trials": args.trials, "jobs": args.jobs, "overrides": args.overrides,
                                    "seconds": times, "trials_per_hour": per_hour, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
