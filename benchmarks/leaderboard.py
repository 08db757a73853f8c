"""The leaderboard: every strategy and plugin combination, tuned by the same protocol, per scenario.

For each reference scenario and each method this runs ``clplat-tune`` (the same trial budget for
every method, selection on the validation split of a *tuning stream*: the scenario with another
class order / permutation / data seed), then the chosen values on the *evaluation stream*'s test
data over 5 seeds, all at one memory budget in bytes for the methods that store data. It then
writes ``docs/leaderboard.md``: per scenario, mean and 95 % CI of the final accuracy and
forgetting, the paired difference to the scenario's baseline over shared seeds (marked "not
significant" when its CI contains 0), memory held, optimizer steps, samples processed and wall
time, and the tuned values.

Everything is resumable: a study continues where it stopped and finished evaluation runs are
kept, so running the same command again after a kill goes on with what is missing.

    python benchmarks/leaderboard.py --out runs/leaderboard                 # the full board
    python benchmarks/leaderboard.py --out /tmp/lb --small --write docs/x.md # a minutes-long check
    python benchmarks/leaderboard.py --out runs/leaderboard --no-run         # the board so far
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clplat.analysis.stats import paired_difference, summarize_seeds  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    """A reference scenario: its recipe, how the tuning stream differs from the evaluation stream,
    the memory budget every buffer gets, and the row every method is compared with."""

    name: str
    recipe: list[str]
    tuning: list[str]
    evaluation: list[str]
    memory_budget_bytes: int
    kind: str = "class-IL"
    baseline: str = "replay"
    eval_every: int = 50
    """The evaluation phase's cadence (the recipe's); tuning runs evaluate at boundaries only,
    since selection reads the final validation accuracy."""


@dataclass(frozen=True)
class Method:
    name: str
    overrides: list[str]
    note: str = ""
    kinds: tuple[str, ...] | None = None
    """Scenario kinds the method supports (None: all)."""


# 500 stored samples of each scenario's stream: input float32 + int64 label + int64 task id
MNIST1D_BUDGET = 500 * (40 * 1 * 4 + 16)   # sequences of 40 steps x 1 feature
DIGITS_BUDGET = 500 * (8 * 8 * 4 + 16)     # 8x8 digits read as 8 rows of 8 pixels
PARITY_BUDGET = 500 * (18 * 1 * 4 + 16)    # 18 bits (2 x N_max, N_max = 9)

# cheapest first, so an interrupted board has whole scenarios to show
SCENARIOS = [
    # fresh sequences: another data seed of the same N-parity curriculum
    Scenario("curriculum: N-parity", ["experiment=reference_curriculum"],
             tuning=["stream.seed=1"], evaluation=["stream.seed=0"],
             memory_budget_bytes=PARITY_BUDGET, kind="curriculum"),
    # the tuning stream rotates by other angles (seeded draws) than the evaluation stream's even steps
    Scenario("domain-IL: rotated digits", ["experiment=reference_domainil"],
             tuning=["stream.rotation_seed=1"], evaluation=["stream.rotation_seed=null"],
             memory_budget_bytes=DIGITS_BUDGET, kind="domain-IL"),
    Scenario("task-IL: split MNIST-1D", ["experiment=reference_taskil"],
             tuning=["stream.order_seed=1"], evaluation=["stream.order_seed=null"],
             memory_budget_bytes=MNIST1D_BUDGET, kind="task-IL"),
    Scenario("class-IL: split MNIST-1D", ["experiment=reference_classil"],
             tuning=["stream.order_seed=1"], evaluation=["stream.order_seed=null"],
             memory_budget_bytes=MNIST1D_BUDGET, kind="class-IL"),
]

METHODS = [
    Method("naive", ["strategy=naive"]),
    Method("joint", ["strategy=joint"], "upper bound: all data at once"),
    Method("cumulative", ["strategy=cumulative"], "stores every sample seen (memory not bounded)"),
    Method("replay", ["strategy=replay"]),
    Method("der", ["strategy=der"]),
    Method("derpp", ["strategy=derpp"]),
    Method("agem", ["strategy=agem"]),
    Method("ewc", ["strategy=ewc"]),
    Method("ewc_online", ["strategy=ewc_online"]),
    Method("si", ["strategy=si"]),
    Method("lwf", ["strategy=lwf"]),
    Method("power_law", ["strategy=power_law"]),
    Method("kfpf", ["strategy=kfpf"]),
    Method("hypernet", ["strategy=hypernet"]),
    # the hypernetwork's uncompressed reference; in class-IL and domain-IL it would need task inference
    Method("separate", ["strategy=separate"], "one network per task; holds T - 1 stored copies", kinds=("task-IL",)),
    # SHARP's kNN memory alone (25 representations of 128 floats per class) exceeds the budget, so it
    # keeps the authors' per-class counts; its memory column shows what that costs
    Method("sharp", ["strategy=sharp", "backbone.num_layers=2", "strategy.memory_bytes=null"],
           "2-layer backbone; the authors' memory (25 activations + 25 representations per class), not the budget",
           kinds=("class-IL",)),
    Method("replay+refresh", ["strategy=replay", "plugin=[refresh]"]),
    Method("derpp+refresh", ["strategy=derpp", "plugin=[refresh]"], "the authors' refresh setting (DER++)"),
    Method("replay+fpf", ["strategy=replay", "plugin=[fpf]"]),
]

SMALL = ["stream.source.num_samples=300", "backbone.hidden_size=8", "trainer.iterations=2", "trainer.epochs=null",
         "trainer.batch_size=16", "eval.subset_size=20"]


@dataclass
class Row:
    method: Method
    runs: list[dict[str, Any]] = field(default_factory=list)
    tuned: dict[str, Any] = field(default_factory=dict)
    validation: float | None = None


def run_method(out: Path, scenario: Scenario, method: Method, args: argparse.Namespace) -> Path:
    study = out / slug(scenario.name) / method.name
    eval_every = 2 if args.small else scenario.eval_every
    command = [sys.executable, "-m", "clplat.tune", str(study), "--trials", str(args.trials),
               "--startup-trials", str(args.startup_trials), "--batch", str(args.batch), "--jobs", str(args.jobs),
               "--launcher", args.launcher, "--eval-seeds", args.eval_seeds,
               "--evaluate", *scenario.evaluation, f"eval.every_n_iters={eval_every}", "--",
               *tuning_overrides(scenario, method, args.small)]
    subprocess.run(command, cwd=ROOT, check=False)
    return study


def tuning_overrides(scenario: Scenario, method: Method, small: bool = False) -> list[str]:
    """What ``clplat-tune`` composes for every trial of this scenario and method."""
    return [*scenario.recipe, *method.overrides, *scenario.tuning,
            f"memory_budget_bytes={scenario.memory_budget_bytes}", *(SMALL if small else []),
            "eval.every_n_iters=null"]


def applicable(methods: list[Method], scenario: Scenario) -> list[Method]:
    return [m for m in methods if m.kinds is None or scenario.kind in m.kinds]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def read_row(study: Path, method: Method) -> Row:
    row = Row(method)
    best = study / "tuned" / "best.yaml"
    if best.is_file():
        import yaml

        def flat(node: Any, prefix: str = "") -> dict[str, Any]:
            if not isinstance(node, dict):
                return {prefix: node}
            out: dict[str, Any] = {}
            for key, value in node.items():
                out.update(flat(value, f"{prefix}.{key}" if prefix else key))
            return out

        row.tuned = flat(yaml.safe_load(best.read_text().split("\n", 1)[1]) or {})
    trials = study / "trials.csv"
    if trials.is_file():
        import csv

        with trials.open() as fh:
            scores = [float(r["validation_avg_acc"]) for r in csv.DictReader(fh) if r["validation_avg_acc"]]
        row.validation = max(scores) if scores else None
    for summary in sorted((study / "evaluation").glob("best_seed*/summary.json")):
        row.runs.append(json.loads(summary.read_text()))
    return row


def by_seed(row: Row, key: str) -> dict[int, Any]:
    def get(summary: dict[str, Any]) -> Any:
        node: Any = summary
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    return {int(s["seed"]): get(s) for s in row.runs}


def cell(values: dict[int, Any], decimals: int = 3) -> str:
    s = summarize_seeds(values.values())
    if s.n == 0:
        return "n/a"
    if s.n == 1:
        return f"{s.mean:.{decimals}f} (1 seed)"
    return f"{s.mean:.{decimals}f} [{s.low:.{decimals}f}, {s.high:.{decimals}f}]"


def mean_of(values: dict[int, Any]) -> str:
    s = summarize_seeds(values.values())
    return "n/a" if s.n == 0 else f"{s.mean:,.0f}"


def scenario_table(scenario: Scenario, rows: list[Row]) -> list[str]:
    baseline = next((r for r in rows if r.method.name == scenario.baseline), None)
    lines = [f"## {scenario.name}", "",
             f"Recipe `{' '.join(scenario.recipe)}`; tuned on `{' '.join(scenario.tuning)}` (validation split), "
             f"evaluated on `{' '.join(scenario.evaluation)}` (test data); memory budget "
             f"{scenario.memory_budget_bytes:,} bytes for every method that stores data.", "",
             f"| method | seeds | final acc [95 % CI] | vs {scenario.baseline} (paired) | forgetting [95 % CI] "
             "| SG depth [95 % CI] | validation acc (tuning) | memory (bytes) | optimizer steps | samples processed "
             "| wall time (s) | tuned values |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ranked = sorted(rows, key=lambda r: -(summarize_seeds(by_seed(r, "avg_acc").values()).mean
                                          if r.runs else -1.0))
    for row in ranked:
        if not row.runs:
            lines.append(f"| {row.method.name} | 0 | not run | | | | | | | | | |")
            continue
        acc = by_seed(row, "avg_acc")
        if baseline is None or row is baseline or not baseline.runs:
            versus = "baseline" if row is baseline else "n/a"
        else:
            d = paired_difference(acc, by_seed(baseline, "avg_acc"))
            versus = (f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] "
                      f"{'significant' if d.significant else 'not significant'}" if d.defined
                      else "n/a (needs >= 2 shared seeds)")
        tuned = ", ".join(f"`{k}={v:.3g}`" if isinstance(v, float) else f"`{k}={v}`" for k, v in row.tuned.items())
        name = row.method.name + (f" ({row.method.note})" if row.method.note else "")
        lines.append(" | ".join([
            f"| {name}", str(len(row.runs)), cell(acc), versus, cell(by_seed(row, "forgetting")),
            cell(by_seed(row, "sg_depth_mean")), "n/a" if row.validation is None else f"{row.validation:.3f}",
            mean_of(by_seed(row, "resources.memory_bytes")), mean_of(by_seed(row, "resources.optimizer_steps")),
            mean_of(by_seed(row, "resources.samples_processed")), cell(by_seed(row, "wall_time_s"), 1),
            tuned]) + " |")
    return lines + [""]


def run_seconds(out: Path, scenario: Scenario, methods: list[Method]) -> tuple[int, float]:
    """Runs kept for a scenario (tuning trials and evaluation runs) and the sum of their wall times."""
    times = [json.loads(p.read_text()).get("wall_time_s") or 0.0
             for m in applicable(methods, scenario)
             for p in (out / slug(scenario.name) / m.name).glob("*/*/summary.json")]
    return len(times), float(sum(times))


def write_board(path: Path, out: Path, scenarios: list[Scenario], methods: list[Method],
                args: argparse.Namespace) -> None:
    lines = ["# Leaderboard", "",
             "Every method tuned by the same protocol (`clplat-tune`, Cha & Cho 2024): "
             f"{args.trials} Optuna trials per method ({args.startup_trials} random, then TPE; batches of "
             f"{args.batch}) on the validation split (10 % of each class's training data) of the tuning stream, "
             "selected on final average accuracy; the chosen values then run on the evaluation stream's test data, seeds "
             f"{args.eval_seeds}. Cells: mean [95 % t interval over seeds]; the paired column is the mean "
             "per-seed difference to the baseline row with its interval, \"not significant\" when the interval "
             "contains 0. Memory is what the method holds beyond the model (buffers, stored logits, Fisher "
             "and anchors, generators; `docs/metrics.md`, Resources); steps and samples include every extra "
             "fine-tuning, rehearsal or unlearning step. Wall time is each run's own measurement with two "
             "runs side by side on 2 cores (and, for the published board, other work on the machine): an "
             "order of magnitude, not a benchmark.", "",
             "SHARP runs in the class-IL scenario only (it refuses streams whose classes repeat); `separate` (one "
             "network per task, the reference of the hypernetwork's compression claim) in the task-IL scenario only.", "",
             f"Produced by `python benchmarks/leaderboard.py --out <dir> --trials {args.trials} --startup-trials "
             f"{args.startup_trials} --batch {args.batch} --jobs {args.jobs}`; a row is \"not run\" until its study "
             "and evaluation runs exist (the command continues where it stopped).", ""]
    for scenario in scenarios:
        rows = [read_row(out / slug(scenario.name) / m.name, m) for m in applicable(methods, scenario)]
        lines += scenario_table(scenario, rows)
        runs, seconds = run_seconds(out, scenario, methods)
        lines += [f"Cost: {runs} runs (tuning and evaluation), {seconds / 3600:.2f} h of run time in all "
                  "(one core each; two jobs side by side take about half that on 2 cores).", ""]
    path.write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where studies and runs are kept (resumable)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--startup-trials", type=int, default=4, help="random trials before TPE takes over")
    parser.add_argument("--batch", type=int, default=4, help="trials per launch (TPE sees each batch's results)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--launcher", default="joblib")
    parser.add_argument("--eval-seeds", default="0,1,2,3,4")
    parser.add_argument("--scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--methods", nargs="*", help="method names (default: all)")
    parser.add_argument("--small", action="store_true", help="tiny budgets: checks the pipeline in minutes")
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "leaderboard.md")
    parser.add_argument("--no-run", action="store_true", help="only write the board from the runs kept so far")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios or slug(s.name) in args.scenarios]
    methods = [m for m in METHODS if not args.methods or m.name in args.methods]
    build(args, scenarios, methods)
    print(f"leaderboard: {args.write}")


def build(args: argparse.Namespace, scenarios: list[Scenario], methods: list[Method]) -> None:
    """Tune and evaluate every (scenario, method) not finished yet, then write the board."""
    for scenario in scenarios if not args.no_run else []:
        for method in applicable(methods, scenario):
            run_method(args.out, scenario, method, args)
    write_board(args.write, args.out, scenarios, methods, args)


if __name__ == "__main__":
    main()
