"""``clplat-tune``: tune a method on validation data, then evaluate the chosen values on test data.

The protocol of Cha & Cho ("Hyperparameters in Continual Learning: a Reality Check", 2024): a
*tuning phase* searches the method's hyperparameters on one stream and selects on a metric of
its **validation** split; an *evaluation phase* runs the chosen values on the evaluation stream
(another class order, permutation seed or source of the same scenario) and reports its **test**
accuracy. Test data never takes part in a choice::

    clplat-tune studies/ewc --trials 20 --jobs 2 --evaluate stream.order_seed=null \\
        -- strategy=ewc stream=split_mnist1d stream.order_seed=1

Mechanics, each a standard part:

- **Search**: Optuna (TPE) with a journal file in the study directory, so a study killed at any
  point continues where it stopped when the same command runs again (a trial that was running
  is tried again with the same values) and the same trial budget is met for every method.
- **Spaces**: declared next to the defaults in each component's YAML (``search_space``, see
  ``clplat.search_space``); the run's strategy, plugins and optimizer are tuned together.
- **Runs**: every batch of trials (``--batch``, default 8 x ``--jobs``) is one ``clplat-train -m``
  multirun through the chosen Hydra launcher (``joblib`` runs the batch in parallel processes pinned to their cores, ``slurm`` on a
  cluster). A trial's values are a config file ``<study>/tuned/trial_<n>.yaml`` selected with
  ``+tuned=trial_<n>`` on Hydra's search path; the winner is written the same way as
  ``tuned/best.yaml``, so an evaluation run loads it with::

      clplat-train 'hydra.searchpath=[file://<study>]' +tuned=best <evaluation overrides>

Files: ``study.yaml`` (what is tuned, how), ``optuna.journal``, ``trials/`` (the runs),
``trials.csv`` (values and scores), ``tuned/best.yaml``, ``evaluation/`` and ``protocol.md``.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from clplat.cli import fail

TUNING_DEFAULTS = ["plots=false", "print_summary=false", "trainer.checkpoint=false", "logger=none"]
"""Trial runs draw no plots and keep no checkpoints unless the overrides say otherwise."""
DEFAULT_VALIDATION_FRACTION = 0.1
SELECTABLE_METRICS = ("avg_acc", "avg_incremental_acc", "wc_acc", "min_acc", "forgetting", "bwt")
MINIMISED = ("forgetting",)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clplat-tune",
        description="Tune a method's declared search space on validation data (Optuna), then evaluate "
                    "the chosen values on test data. Overrides after the options configure the tuning runs.")
    parser.add_argument("study_dir", type=Path, help="the study's directory (created, or continued)")
    parser.add_argument("--trials", type=int, default=20, help="trial budget (the same for every method compared)")
    parser.add_argument("--jobs", type=int, default=2, help="trials run side by side")
    parser.add_argument("--batch", type=int, default=None, help="trials per launch (default 8 x jobs): each "
                        "launch pays a process start, so short trials want larger batches")
    parser.add_argument("--launcher", default="joblib", help="Hydra launcher of the trial runs (basic, joblib, "
                        "submitit_local, slurm)")
    parser.add_argument("--metric", default="avg_acc", help=f"validation metric selected on: {', '.join(SELECTABLE_METRICS)}")
    parser.add_argument("--seeds", default="0", help="run seeds of every trial (comma-separated; scores are averaged)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of Optuna's TPE sampler")
    parser.add_argument("--startup-trials", type=int, default=None,
                        help="random trials before TPE models the results (default: half the budget, at most "
                             "10, Optuna's own default)")
    parser.add_argument("--evaluate", nargs="*", default=None, metavar="OVERRIDE",
                        help="run the evaluation phase with these overrides on top of the tuning ones "
                             "(e.g. the evaluation stream); none: evaluate on the tuning stream's test data")
    parser.add_argument("--eval-seeds", default="0,1,2,3,4", help="seeds of the evaluation phase")
    parser.add_argument("overrides", nargs="*", help="clplat-train overrides of the tuning runs (after --)")
    argv = list(argv)
    tail: list[str] = []
    if "--" in argv:  # everything after -- is an override (--evaluate takes a list of its own)
        argv, tail = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    args.overrides = [*args.overrides, *tail]
    args.batch = args.batch if args.batch is not None else 8 * args.jobs
    args.startup_trials = (args.startup_trials if args.startup_trials is not None
                           else min(10, max(1, args.trials // 2)))
    for name in ("trials", "jobs", "batch", "startup_trials"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')}={getattr(args, name)} is not valid: must be an integer >= 1")
    if args.metric not in SELECTABLE_METRICS:
        fail(f"--metric={args.metric!r} is not valid: allowed values are {', '.join(SELECTABLE_METRICS)}")
    args.seed_list = _seeds("--seeds", args.seeds)
    args.eval_seed_list = _seeds("--eval-seeds", args.eval_seeds)
    return args


def _seeds(flag: str, text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        fail(f"{flag}={text!r} is not valid: comma-separated integers >= 0")
    return seeds


def tuning_overrides(overrides: list[str]) -> list[str]:
    """The overrides of every trial: selection on validation data, always.

    ``eval.split`` is the tuner's to set; a validation split of 10 % is held out unless the
    overrides choose another fraction. Seeds and the tuned values come from the tuner.
    """
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if "eval.split" in keys:
        fail("eval.split is set by clplat-tune (validation while tuning, test in the evaluation phase); remove it")
    if "seed" in keys:
        fail("seed is set by clplat-tune: use --seeds (tuning) and --eval-seeds (evaluation)")
    out = [*TUNING_DEFAULTS, *overrides, "eval.split=validation"]
    if "validation.fraction" not in keys:
        out.append(f"validation.fraction={DEFAULT_VALIDATION_FRACTION}")
    return out


def check_and_read_space(overrides: list[str]) -> list[Any]:
    """Validate the tuning config like ``clplat-train`` would and return its search space."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from clplat.errors import ConfigError
    from clplat.search_space import run_search_space
    from clplat.preflight import CONF_DIR, preflight

    preflight(overrides)  # exits 2 with one line on a bad override or value
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        dims = run_search_space(cfg)
    except ConfigError as err:
        fail(str(err))
    finally:
        GlobalHydra.instance().clear()
    if not dims:
        fail("nothing to tune: the strategy, plugins and optimizer of these overrides declare no search_space")
    check_no_searched_key_is_fixed(overrides, dims)
    return dims


def check_no_searched_key_is_fixed(overrides: list[str], dims: list[Any]) -> None:
    """A command-line value wins over the tuned values each trial loads, so fixing a searched key
    would make every trial the same run; fixing one means removing it from the search too."""
    searched = {d.key for d in dims}
    for text in overrides:
        key, _, value = text.lstrip("+").partition("=")
        if not text.startswith("~") and key in searched:
            group, leaf = key.rsplit(".", 1)
            fail(f"{key}={value} is not valid: clplat-tune searches {key} and a command-line value would "
                 f"override every trial's; remove it, or fix it and drop it from the search with "
                 f"~{group}.search_space.{leaf}")


def check_study_identity(study_dir: Path, spec: dict[str, Any]) -> None:
    """A study continues only with the settings it started with (else its trials mean nothing)."""
    path = study_dir / "study.yaml"
    if path.is_file():
        before = yaml.safe_load(path.read_text())
        changed = [k for k in spec if k != "trials" and before.get(k) != spec[k]]
        if changed:
            fail(f"study_dir={study_dir} is not valid: it holds a study with other {', '.join(changed)} "
                 f"({', '.join(f'{k}={before.get(k)!r}' for k in changed)}); choose a new directory")
    study_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def write_tuned_config(study_dir: Path, name: str, params: dict[str, Any]) -> Path:
    """``<study>/tuned/<name>.yaml``: the values as a global config ``+tuned=<name>`` loads."""
    nested: dict[str, Any] = {}
    for key, value in params.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = study_dir / "tuned" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# @package _global_\n" + yaml.safe_dump(nested, sort_keys=True))
    return path


def with_study_searchpath(overrides: list[str], study_dir: Path) -> list[str]:
    """``overrides`` with the study folder added to Hydra's search path (where ``+tuned=<trial>``
    is found), after the user's own config folders, so options kept there can be tuned too."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    kept, paths = [], []
    for text in overrides:
        if text.lstrip("+").split("=", 1)[0] == "hydra.searchpath":
            value = OverridesParser.create().parse_overrides([text])[0].value()
            paths += [str(v) for v in (value if isinstance(value, list) else [value])]
        else:
            kept.append(text)
    paths.append(f"file://{study_dir.resolve()}")
    return [*kept, f"hydra.searchpath=[{','.join(paths)}]"]


def launch(study_dir: Path, overrides: list[str], names: list[str], seeds: list[int], launcher: str,
           jobs: int, sweep_dir: Path) -> None:
    """One ``clplat-train -m`` multirun of ``names`` x ``seeds``; failed jobs leave ``error.txt``."""
    command = [sys.executable, "-m", "clplat.train", "-m", *with_study_searchpath(overrides, study_dir),
               f"+tuned={','.join(names)}",
               f"seed={','.join(map(str, seeds))}", f"launcher={launcher}",
               f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra:runtime.choices.tuned}_seed${seed}"]
    if launcher == "joblib":
        command.append(f"hydra.launcher.n_jobs={jobs}")
    subprocess.run(command, check=False)


def score(sweep_dir: Path, name: str, seeds: list[int], metric: str) -> float | None:
    """Mean ``metric`` of a trial's runs; None when a run is missing or did not finish."""
    values = []
    for seed in seeds:
        summary = sweep_dir / f"{name}_seed{seed}" / "summary.json"
        if not summary.is_file():
            return None
        value = json.loads(summary.read_text()).get(metric)
        if value is None or not math.isfinite(float(value)):
            return None
        values.append(float(value))
    return sum(values) / len(values)


INTERRUPTED_FILE = "interrupted_trials.txt"


def interrupted_trials(study_dir: Path) -> set[int]:
    """Trials a kill stopped (recorded as failed in Optuna, but not a result of their values)."""
    path = study_dir / INTERRUPTED_FILE
    return {int(line) for line in path.read_text().split()} if path.is_file() else set()


def run_study(args: argparse.Namespace, overrides: list[str], dims: list[Any]) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir: Path = args.study_dir
    storage = JournalStorage(JournalFileBackend(str(study_dir / "optuna.journal")))
    direction = "minimize" if args.metric in MINIMISED else "maximize"
    study = optuna.create_study(study_name="clplat", storage=storage, load_if_exists=True, direction=direction,
                                # constant liar: trials asked together (one batch) spread out instead of
                                # piling onto the same promising point
                                sampler=optuna.samplers.TPESampler(seed=args.sampler_seed, constant_liar=True,
                                                                   n_startup_trials=args.startup_trials))
    sweep_dir = study_dir / "trials"
    interrupted = interrupted_trials(study_dir)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed batch
        value = score(sweep_dir, f"trial_{trial.number}", args.seed_list, args.metric)
        if value is not None:
            study.tell(trial.number, value)
            continue
        # not a result of its values: tried again under a new number, and not counted
        interrupted.add(trial.number)
        (study_dir / INTERRUPTED_FILE).write_text("".join(f"{n}\n" for n in sorted(interrupted)))
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)
    while True:
        done = [t for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.number not in interrupted]
        remaining = args.trials - len(done)
        if remaining <= 0:
            break
        batch = [study.ask() for _ in range(min(args.batch, remaining))]
        names = []
        for trial in batch:
            params = {dim.key: dim.suggest(trial) for dim in dims}
            trial.set_user_attr("overrides", params)
            names.append(f"trial_{trial.number}")
            write_tuned_config(study_dir, names[-1], params)
        print(f"clplat-tune: trials {', '.join(names)} ({len(done)}/{args.trials} done)", flush=True)
        launch(study_dir, overrides, names, args.seed_list, args.launcher, args.jobs, sweep_dir)
        for trial, name in zip(batch, names):
            value = score(sweep_dir, name, args.seed_list, args.metric)
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
    return study


def write_trials(study: Any, path: Path, metric: str) -> None:
    from optuna.trial import TrialState

    interrupted = interrupted_trials(path.parent)
    rows = [t for t in study.get_trials(deepcopy=False) if t.number not in interrupted]
    keys = sorted({k for t in rows for k in t.user_attrs.get("overrides", {})})
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "state", f"validation_{metric}", *keys])
        for t in rows:
            values = t.user_attrs.get("overrides", {})
            writer.writerow([t.number, t.state.name, "" if t.state != TrialState.COMPLETE else t.value,
                             *[json.dumps(values.get(k)) for k in keys]])


def evaluate(args: argparse.Namespace, base: list[str]) -> Path:
    """The evaluation phase: the chosen values on the evaluation stream's test data, every seed.

    A run that a kill left unfinished is started again; finished ones are kept.
    """
    study_dir: Path = args.study_dir
    sweep_dir = study_dir / "evaluation"
    todo = []
    for seed in args.eval_seed_list:
        run = sweep_dir / f"best_seed{seed}"
        if (run / "summary.json").is_file():
            continue
        if run.exists():
            shutil.rmtree(run)
        todo.append(seed)
    overrides = [*[o for o in base if not o.startswith(("eval.split=", "validation.fraction="))],
                 *(args.evaluate or []), "eval.split=test", "validation.fraction=0"]
    if todo:
        print(f"clplat-tune: evaluation phase, seeds {','.join(map(str, todo))}", flush=True)
        launch(study_dir, overrides, ["best"], todo, args.launcher, args.jobs, sweep_dir)
    return sweep_dir


def write_protocol(args: argparse.Namespace, study: Any, overrides: list[str], eval_dir: Path | None) -> Path:
    """``protocol.md``: both phases side by side, so a result is never quoted without its selection."""
    best = study.best_trial
    lines = ["# Tuning protocol", "",
             f"- tuning runs: `{' '.join(overrides)}`",
             f"- selected on: validation `{args.metric}` (mean over seeds {args.seeds}), "
             f"{args.trials} trials, Optuna TPE ({args.startup_trials} random startup trials, sampler seed "
             f"{args.sampler_seed})",
             f"- chosen (trial {best.number}, validation {args.metric} {best.value:.4f}): "
             + ", ".join(f"`{k}={v}`" for k, v in best.user_attrs.get("overrides", {}).items()),
             "- load them: `clplat-train 'hydra.searchpath=[file://"
             f"{args.study_dir.resolve()}]' +tuned=best ...`"]
    if eval_dir is not None:
        from clplat.analysis.runs import collect_runs

        runs = collect_runs(eval_dir)
        values = runs["avg_acc"].astype(float) if len(runs) else []
        lines += [f"- evaluation runs: `{' '.join(args.evaluate or [])}` (test data, seeds {args.eval_seeds})",
                  "- evaluation test avg_acc: " + ", ".join(f"{v:.4f}" for v in values)
                  + (f" (mean {sum(values) / len(values):.4f} over {len(values)} seeds)" if len(values) else ""),
                  f"- per-run results: `clplat-report {eval_dir}`"]
    path = args.study_dir / "protocol.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = tuning_overrides(list(args.overrides))
    dims = check_and_read_space(overrides)
    spec = {"overrides": list(args.overrides), "metric": args.metric, "seeds": args.seed_list,
            "space": [vars(d) | {"choices": list(d.choices) if d.choices else None} for d in dims],
            "sampler_seed": args.sampler_seed, "startup_trials": args.startup_trials, "trials": args.trials}
    check_study_identity(args.study_dir, spec)
    with (args.study_dir / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fail(f"study_dir={args.study_dir} is not valid: another clplat-tune is running on it")
        study = run_study(args, overrides, dims)
        write_trials(study, args.study_dir / "trials.csv", args.metric)
        if not any(t.state.name == "COMPLETE" for t in study.trials):
            fail(f"every trial failed: see {args.study_dir / 'trials' / 'failed_jobs.txt'}", code=1)
        write_tuned_config(args.study_dir, "best", study.best_trial.user_attrs["overrides"])
        eval_dir = evaluate(args, overrides) if args.evaluate is not None else None
        protocol = write_protocol(args, study, overrides, eval_dir)
    print(f"clplat-tune: best trial {study.best_trial.number}: validation {args.metric} "
          f"{study.best_trial.value:.4f}; {protocol}", flush=True)


if __name__ == "__main__":
    main()
