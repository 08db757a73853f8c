"""What continual evaluation costs: run time vs ``eval.every_n_iters`` and the number of tasks.

For each number of experiences (Split MNIST-1D with 2, 5 or 10 experiences of 5, 2 or 1 classes, a GRU, batch 64) and
each evaluation period (``0`` = at the boundaries only, the cheapest a continual run can be),
clplat and the minimal loop of ``benchmarks/e2e.py`` run interleaved, several repetitions. Printed
per row, from medians:

- ``clplat x``: clplat's time relative to its own boundary-only run (what evaluating this often
  costs on top of training);
- ``eval share``: the part of clplat's time that the extra evaluation takes;
- ``eval s``: the time spent inside evaluation, clocked around clplat's
  ``ContinualEvaluator._evaluate`` (one call per evaluation: the forward pass, the per-task
  counts, the results row) and around the minimal loop's evaluation function (the same forward
  pass and counts), summed over the run;
- ``clplat eval / minimal eval``: the ratio of the two (medians): 1.0 means an evaluation in
  clplat costs exactly its arithmetic. Clocked, not differenced: a difference of two noisy
  totals is mostly noise on a shared machine.

    python benchmarks/eval_overhead.py --tasks 2 5 10 --every 0 100 10 1 --reps 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import ROOT, compose, run_clplat, run_minimal  # noqa: E402

from clplat.evaluation.evaluator import ContinualEvaluator  # noqa: E402


@contextlib.contextmanager
def clocked_evaluations(clock: list[float]) -> Iterator[None]:
    """Add the time of every ``ContinualEvaluator._evaluate`` call to ``clock[0]`` (benchmark-only
    instrumentation: the method is restored on exit)."""
    original = ContinualEvaluator._evaluate

    def timed(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            clock[0] += time.perf_counter() - began

    ContinualEvaluator._evaluate = timed
    try:
        yield
    finally:
        ContinualEvaluator._evaluate = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--every", type=int, nargs="+", default=[0, 100, 10, 1], help="0: boundaries only")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--subset", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_overhead.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    everies = sorted(set(args.every) | {0}, key=lambda e: (e != 0, -e))  # the baseline first

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_tasks in args.tasks:
            times: dict[int, dict[str, list[float]]] = {
                e: {"clplat": [], "minimal": [], "clplat_eval": [], "minimal_eval": []} for e in everies}
            for rep in range(args.reps):  # interleaved over settings and runners
                for every in everies:
                    cfg = compose(args.hidden, every, "naive", args.epochs, args.subset,
                                  Path(tmp) / f"t{n_tasks}_e{every}_r{rep}", n_experiences=n_tasks)
                    clock = [0.0]
                    with clocked_evaluations(clock):
                        times[every]["clplat"].append(run_clplat(cfg)[0])
                    times[every]["clplat_eval"].append(clock[0])
                    clock = [0.0]
                    times[every]["minimal"].append(
                        run_minimal(cfg, args.hidden, every, "naive", args.epochs, args.subset, clock)[0])
                    times[every]["minimal_eval"].append(clock[0])
            med = {e: {k: statistics.median(v) for k, v in d.items()} for e, d in times.items()}
            base = med[0]
            for every in everies:
                m = med[every]
                row = {"tasks": n_tasks, "every_n_iters": every, "median_s": m,
                       "clplat_vs_boundary_only": m["clplat"] / base["clplat"],
                       "eval_share": m["clplat_eval"] / m["clplat"],
                       "eval_cost_ratio": m["clplat_eval"] / m["minimal_eval"], "times": times[every]}
                rows.append(row)
                print(f"{n_tasks:>2d} tasks  every {every or 'boundary':>8}  clplat {m['clplat']:6.2f}s "
                      f"(x{row['clplat_vs_boundary_only']:.2f} of boundary-only, eval {m['clplat_eval']:5.2f}s = "
                      f"{row['eval_share']:5.1%})  minimal {m['minimal']:6.2f}s (eval {m['minimal_eval']:5.2f}s)  "
                      f"clplat eval / minimal eval {row['eval_cost_ratio']:.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "hidden": args.hidden, "epochs": args.epochs,
                                    "subset": args.subset, "reps": args.reps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
