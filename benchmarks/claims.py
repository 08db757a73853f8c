"""The papers' headline claims, re-tested with the tuning protocol: ``docs/claims.md``.

Each claim compares a *treatment* with a *control* in one scenario: both tuned by ``clplat-tune``
with the same trial budget on the validation split of a tuning stream, then run on the
evaluation stream's test data over 5 seeds (the leaderboard's protocol, ``benchmarks/leaderboard.py``).
The verdict reads the paired difference over shared seeds and its 95 % interval:

- **reproduced**: the interval excludes 0 on the side the paper claims;
- **contradicted**: it excludes 0 on the other side;
- **not reproduced**: it contains 0 (no significant difference in our setting).

A claim of *matching* a control (k-FPF approaches replay; a hypernetwork matches one network per
task) is an equivalence claim: **reproduced** when the whole interval lies within
``EQUIVALENCE_MARGIN`` of 0, **contradicted** when it lies entirely below ``-EQUIVALENCE_MARGIN``
(the treatment is worse by more than the margin), **not reproduced** otherwise.

The stability-gap claim (De Lange et al. 2023: continual evaluation shows a transient drop at
every boundary, for replay, EWC, LwF, ...) reads the class-IL and domain-IL leaderboards' runs:
reproduced for a method when the 95 % interval of its transient part (the drop won back by the
end of the experience) lies above 0.

A treatment or control that is also a leaderboard row (same scenario, same overrides) is read from
the leaderboard's folder (``--board``) rather than run again; run the leaderboard first. Resumable
like the leaderboard: the same command continues where it stopped.

    python benchmarks/claims.py --out runs/claims --board runs/leaderboard     # the full table
    python benchmarks/claims.py --out /tmp/c --small --write /tmp/claims.md      # a minutes-long check
    python benchmarks/claims.py --out runs/claims --board runs/leaderboard --no-run   # the table so far
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load_leaderboard():  # noqa: ANN202 - a script beside this one, not a package
    spec = importlib.util.spec_from_file_location("leaderboard", ROOT / "benchmarks" / "leaderboard.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["leaderboard"] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


lb = _load_leaderboard()
Method, Scenario = lb.Method, lb.Scenario

from clplat.analysis.stats import paired_difference, summarize_seeds  # noqa: E402


@dataclass(frozen=True)
class Claim:
    method: str
    paper: str
    claim: str
    scenario: Scenario
    treatment: Method | None
    control: Method | None
    direction: int = +1
    """+1: the paper claims the treatment's final accuracy is higher than the control's; 0: that
    it matches it (within ``EQUIVALENCE_MARGIN``)."""
    untestable: str | None = None
    """Why the claim cannot be tested in this setting (measured); such a claim is not run."""


# the leaderboard's own scenarios: a claim's method that is also a leaderboard row reads the board's runs
CLASSIL = next(s for s in lb.SCENARIOS if s.kind == "class-IL")
TASKIL = next(s for s in lb.SCENARIOS if s.kind == "task-IL")
# the recipes are the methods' own (experiment=derpp_sgd / refresh_derpp_sgd), on split MNIST-1D
REFRESH_SGD = lb.Scenario("claims: DER++ with SGD (refresh's setting)",
                          ["stream=split_mnist1d", "trainer.epochs=25", "trainer.iterations=null"],
                          tuning=["stream.order_seed=1"], evaluation=["stream.order_seed=null"],
                          memory_budget_bytes=lb.MNIST1D_BUDGET)
# SHARP's phase/epoch schedule (10 phases x 3 epochs per experience) for both rows, at batch 32 with
# Adam: at the authors' batch 256 with Adadelta a Split MNIST-1D experience is 90 steps, and no
# tuning trial learned the first experience (docs/strategies.md, sharp, Budget). The budget is
# SHARP's authors' memory on the 2-layer GRU-128: kNN memory 10 classes x (25 x (4 x 128 + 8) + 128)
# = 131,280 bytes, plus the replay window of 25 activations per class x 2 classes x (40 x 128 + 16)
# = 256,800 bytes; replay gets the same bytes (2,205 raw samples)
SHARP_BUDGET = lb.Scenario("claims: SHARP's phase schedule at batch 32",
                           ["stream=split_mnist1d", "backbone.num_layers=2", "trainer.epochs=30",
                            "trainer.iterations=null", "trainer.batch_size=32", "eval.every_n_iters=50"],
                           tuning=["stream.order_seed=1"], evaluation=["stream.order_seed=null"],
                           memory_budget_bytes=388_080)
# the power-law environment of Gandhi et al.: rehearsal drawn by age from whole training sets
POWER_LAW_ENV = lb.Scenario("claims: power-law environment, permuted MNIST-1D",
                            ["stream=power_law_permuted_mnist1d", "strategy=naive",
                             "trainer.epochs=5", "trainer.iterations=null", "trainer.batch_size=32",
                             "eval.every_n_iters=50"],
                            tuning=["stream.permutation_seed=1"], evaluation=["stream.permutation_seed=0"],
                            memory_budget_bytes=lb.MNIST1D_BUDGET, kind="domain-IL", baseline="uniform")

EQUIVALENCE_MARGIN = 0.02
"""Accuracy difference (2 points) within which a treatment "matches" its control."""

# FPF at a fixed 100 fine-tuning steps (its default), modules fixed, SGD lr tuned: the paper's
# subset (norms, head, biases: 4 % of the GRU's parameters) against the same steps on every parameter
FPF_FIXED_STEPS = ["strategy=replay", "plugin=[fpf]", "~plugin.fpf.search_space.modules",
                   "~plugin.fpf.search_space.iterations"]

CLAIMS = [
    Claim("refresh", "Wang et al., ICLR 2024", "refresh learning improves DER++ (SGD, the authors' optimizer)",
          REFRESH_SGD, Method("derpp+refresh_authors_form", ["experiment=refresh_derpp_sgd"]),
          Method("derpp", ["experiment=derpp_sgd"]),
          untestable="SGD does not train the recurrent backbones on this stream: after 25 epochs of the first "
                     "class-IL experience (2 classes) accuracy stays at 0.49-0.54, the loss at ln 2, for the GRU at "
                     "lr 0.03-3 with or without momentum 0.9 or gradient clipping, and for an LSTM "
                     "(docs/strategies.md, refresh), so the DER++ baseline itself does not learn; the claim is "
                     "tested under Adam with the step scaling in the next row"),
    Claim("refresh", "Wang et al., ICLR 2024", "refresh learning improves DER++ (Adam, our step scaling)", CLASSIL,
          Method("derpp+refresh", ["strategy=derpp", "plugin=[refresh]"]), Method("derpp", ["strategy=derpp"])),
    Claim("fpf", "Zhao et al., ICML 2023", "fine-tuning the forgetting-prone parameters on the buffer improves replay",
          CLASSIL, Method("replay+fpf", ["strategy=replay", "plugin=[fpf]"]), Method("replay", ["strategy=replay"])),
    Claim("fpf", "Zhao et al., ICML 2023",
          "the gain is not just the extra steps on the buffer: 100 steps on the sensitive subset beat 100 on all parameters",
          CLASSIL, Method("replay+fpf_100_steps", FPF_FIXED_STEPS),
          Method("replay+buffer_100_steps", [*FPF_FIXED_STEPS, "plugin.fpf.modules=[backbone,head]"])),
    Claim("kfpf", "Zhao et al., ICML 2023", "k-FPF (no per-step replay) approaches replay's accuracy", CLASSIL,
          Method("kfpf", ["strategy=kfpf"]), Method("replay", ["strategy=replay"]), direction=0),
    Claim("sharp", "Gurbuz et al., 2023", "SHARP beats raw replay at its phase schedule, at equal bytes", SHARP_BUDGET,
          Method("sharp", ["strategy=sharp", "strategy.phases=10"]), Method("replay", ["strategy=replay"])),
    # SHARP keeps 25 items per class (activations to replay, representations for the kNN): replay
    # gets 25 raw samples per class of the stream's 10 (44,000 bytes, far below SHARP's)
    Claim("sharp", "Gurbuz et al., 2023", "SHARP beats raw replay at equal stored samples (25 per class)",
          SHARP_BUDGET, Method("sharp", ["strategy=sharp", "strategy.phases=10"]),
          Method("replay_250", ["strategy=replay", "strategy.memory_bytes=null", "strategy.buffer_size=250"])),
    Claim("hypernet", "von Oswald et al., ICLR 2020", "a task-conditioned hypernetwork beats replay in task-IL",
          TASKIL, Method("hypernet", ["strategy=hypernet"]), Method("replay", ["strategy=replay"])),
    Claim("hypernet", "von Oswald et al., ICLR 2020", "it matches one network per task while compressing", TASKIL,
          Method("hypernet", ["strategy=hypernet"]), Method("separate", ["strategy=separate"]), direction=0),
    Claim("hypernet", "Chandra et al., 2023",
          "an RNN hypernetwork beats the chunked MLP at nearly equal size "
          "(defaults: 50,294 vs 48,444 parameters; tuned sizes in the memory column)",
          TASKIL,
          Method("hypernet_rnn", ["strategy=hypernet", "strategy.kind=rnn"]),
          Method("hypernet", ["strategy=hypernet"])),
    Claim("power_law", "Gandhi et al., 2024", "power-law rehearsal beats uniform rehearsal at equal amount",
          POWER_LAW_ENV, Method("power_law", ["stream.schedule=power_law"]),
          Method("uniform", ["stream.schedule=uniform"])),
    Claim("power_law", "Gandhi et al., 2024", "power-law rehearsal beats exponential rehearsal at equal amount",
          POWER_LAW_ENV, Method("power_law", ["stream.schedule=power_law"]),
          Method("exponential", ["stream.schedule=exponential"])),
]

STABILITY_GAP_METHODS = ("replay", "der", "derpp", "agem", "ewc", "ewc_online", "si", "lwf", "naive")
"""Methods whose leaderboard runs test De Lange et al.'s claim (they report ER, DER, GEM, EWC, SI, LwF)."""
STABILITY_GAP_SCENARIOS = ("class-IL", "domain-IL")
"""Split MNIST-1D (class-IL) and rotated digits (domain-IL, the analogue of their Rotated MNIST)."""


def verdict(difference, direction: int) -> str:  # noqa: ANN001 - a clplat.analysis.stats.PairedDifference
    if not difference.defined:
        return "not run"
    if direction == 0:
        margin = EQUIVALENCE_MARGIN
        if -margin <= difference.low and difference.high <= margin:
            return f"reproduced (interval within ±{margin})"
        if difference.high < -margin:
            return f"contradicted (worse by more than {margin})"
        return f"not reproduced (interval not within ±{margin})"
    if not difference.significant:
        return "not reproduced (difference not significant)"
    return "reproduced" if difference.mean * direction > 0 else "contradicted"


def board_study(scenario: Scenario, method: Method, board: Path | None) -> Path | None:
    """Where the leaderboard keeps this scenario and method, if it is one of its rows (same
    scenario, same overrides): the claim reads those runs instead of repeating them."""
    same = next((m for m in lb.METHODS if m.overrides == method.overrides), None)
    if board is None or scenario not in lb.SCENARIOS or same is None or not lb.applicable([same], scenario):
        return None
    return board / lb.slug(scenario.name) / same.name


def study_dir(scenario: Scenario, method: Method, out: Path, board: Path | None) -> Path:
    return board_study(scenario, method, board) or out / lb.slug(scenario.name) / method.name


def claim_row(claim: Claim, out: Path, board: Path | None = None) -> str:
    cells = [claim.method, claim.paper, claim.claim, f"`{' '.join(claim.scenario.recipe)}`"]
    if claim.untestable:
        return "| " + " | ".join([*cells, claim.untestable, "", "not testable here"]) + " |"
    rows = {m.name: lb.read_row(study_dir(claim.scenario, m, out, board), m)
            for m in (claim.treatment, claim.control)}
    treatment, control = (lb.by_seed(rows[m.name], "avg_acc") for m in (claim.treatment, claim.control))
    d = paired_difference(treatment, control)
    result = (f"{claim.treatment.name} {lb.cell(treatment)} vs {claim.control.name} {lb.cell(control)}; "
              f"difference {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" if d.defined else "not run")
    steps = "; ".join(f"{name}: {lb.mean_of(lb.by_seed(row, 'resources.optimizer_steps'))} steps, "
                      f"{lb.mean_of(lb.by_seed(row, 'resources.memory_bytes'))} bytes" for name, row in rows.items())
    return "| " + " | ".join([*cells, result, steps if d.defined else "", verdict(d, claim.direction)]) + " |"


def stability_gap_verdict(transient, permanent) -> str:  # noqa: ANN001 - clplat.analysis.stats summaries
    """Reproduced when the part of the boundary drop that is won back within the experience is
    above 0 (95 % interval); otherwise say whether the drop stays (forgotten, not a gap) or is absent."""
    if transient.low > 0:
        return "reproduced"
    if permanent.low > 0:
        return "not reproduced (interval contains 0): what is lost at the boundary is not won back"
    return "not reproduced (interval contains 0): no significant drop"


def stability_gap_rows(board: Path | None) -> list[str]:
    """De Lange et al.'s claim on the leaderboard's runs: per scenario and method, the drop of old
    tasks' accuracy after each boundary (depth) split into the part won back by the end of the
    experience (transient, the stability gap) and the part still lost (permanent)."""
    rows = []
    for kind in STABILITY_GAP_SCENARIOS:
        scenario = next(s for s in lb.SCENARIOS if s.kind == kind)
        for name in STABILITY_GAP_METHODS:
            method = next(m for m in lb.METHODS if m.name == name)
            row = lb.read_row(board / lb.slug(scenario.name) / name, method) if board is not None else lb.Row(method)
            transient, permanent, depth = (summarize_seeds(lb.by_seed(row, f"sg_{part}_mean").values())
                                           for part in ("transient", "permanent", "depth"))
            if transient.n < 2:
                result, verdict_text = "not run", "not run"
            else:
                result = ", ".join(f"{label} {s.mean:.3f} [{s.low:.3f}, {s.high:.3f}]" for label, s in
                                   (("transient", transient), ("permanent", permanent), ("depth", depth)))
                verdict_text = stability_gap_verdict(transient, permanent)
            rows.append("| " + " | ".join(["stability gap", "De Lange et al., ICLR 2023",
                                            f"continual evaluation shows a transient drop at boundaries ({name})",
                                            f"`{' '.join(scenario.recipe)}` (leaderboard runs, {kind})", result, "",
                                            verdict_text]) + " |")
    return rows


def write_claims(path: Path, out: Path, board: Path | None, claims: list[Claim], args: argparse.Namespace) -> None:
    lines = ["# Claims re-tested", "",
             "Each row: both methods tuned with the same protocol as the leaderboard (`clplat-tune`, "
             f"{args.trials} trials on the tuning stream's validation split, selected on final average "
             f"accuracy), then run on the evaluation stream's test data, seeds {args.eval_seeds}; cells are "
             "mean [95 % CI]; the difference is paired over shared seeds (treatment minus control). The "
             "verdict rules are in `benchmarks/claims.py`; \"not run\" rows have no finished runs yet.", "",
             f"Produced by `python benchmarks/claims.py --out <dir> --board <leaderboard dir> --trials {args.trials}`.",
             "", "| method | paper | claim | our setting | our result | compute and memory | verdict |",
             "|---|---|---|---|---|---|---|"]
    lines += [claim_row(c, out, board) for c in claims]
    lines += stability_gap_rows(board)
    lines += ["", "Stability-gap rows: after each boundary, an old task's accuracy drops from its value at the "
              "boundary to its minimum during the new experience (*depth*); *transient* is the part won back by "
              "the end of that experience (the stability gap), *permanent* the part still lost (forgetting). "
              "Each is averaged per run over boundaries and the old tasks not already at chance there; cells are "
              "mean [95 % CI] over the leaderboard's 5 evaluation seeds. "
              "`clplat.evaluation.metrics.split_drop` defines the split."]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where studies and runs are kept (resumable)")
    parser.add_argument("--board", type=Path, default=None,
                        help="the leaderboard's --out: its runs serve the claims whose rows it has, and the stability-gap claim")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--startup-trials", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--launcher", default="joblib")
    parser.add_argument("--eval-seeds", default="0,1,2,3,4")
    parser.add_argument("--methods", nargs="*", help="only the claims of these methods (default: all)")
    parser.add_argument("--small", action="store_true", help="tiny budgets: checks the pipeline in minutes")
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "claims.md")
    parser.add_argument("--no-run", action="store_true", help="only write the table from the runs kept so far")
    return parser.parse_args(argv)


def build(args: argparse.Namespace, claims: list[Claim]) -> None:
    done: set[tuple[str, str]] = set()
    for claim in claims if not args.no_run else []:
        if claim.untestable:
            continue
        for method in (claim.treatment, claim.control):
            key = (claim.scenario.name, method.name if method else "")
            if method is None or key in done or board_study(claim.scenario, method, args.board) is not None:
                continue  # a leaderboard row is run by benchmarks/leaderboard.py
            done.add(key)
            lb.run_method(args.out, claim.scenario, method, args)
    write_claims(args.write, args.out, args.board, claims, args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    build(args, [c for c in CLAIMS if not args.methods or c.method in args.methods])
    print(f"claims: {args.write}")


if __name__ == "__main__":
    main()
