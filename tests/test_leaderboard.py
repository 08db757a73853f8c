"""The leaderboard pipeline at a tiny budget: tuning, evaluation, the table with CIs and paired tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_leaderboard():
    spec = importlib.util.spec_from_file_location("leaderboard", ROOT / "benchmarks" / "leaderboard.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["leaderboard"] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_a_small_board_tunes_evaluates_and_compares(tmp_path):
    lb = load_leaderboard()
    scenario = lb.Scenario("class-IL: tiny", ["stream=split_mnist1d", "stream.n_experiences=2",
                                              "stream.classes_per_experience=5"],
                           tuning=["stream.order_seed=1"], evaluation=["stream.order_seed=null"],
                           memory_budget_bytes=20 * 176)
    methods = [lb.Method("naive", ["strategy=naive"]), lb.Method("replay", ["strategy=replay"])]
    board = tmp_path / "board.md"
    args = lb.parse_args(["--out", str(tmp_path / "out"), "--small", "--trials", "1", "--jobs", "1",
                          "--launcher", "basic", "--eval-seeds", "0,1", "--write", str(board)])
    lb.build(args, [scenario], methods)
    text = board.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith(("| naive", "| replay"))}
    assert set(rows) == {"naive", "replay"}
    assert rows["naive"][1] == "2" and "[" in rows["naive"][2]  # 2 seeds: mean [CI]
    assert "significant" in rows["naive"][3] and rows["replay"][3] == "baseline"
    assert 0.0 <= float(rows["naive"][6]) <= 1.0  # the tuning phase's validation accuracy, reported beside
    assert rows["replay"][7] == f"{20 * 176:,}"  # the buffer holds exactly the budget
    assert "Cost: 6 runs" in text  # per method 1 trial + 2 evaluation seeds
    assert "optimizer.lr=" in rows["naive"][-1]
    # every evaluation run scored test data of the evaluation stream with the tuned values
    for method in ("naive", "replay"):
        for seed in (0, 1):
            summary = json.loads((tmp_path / "out" / "class_il__tiny" / method / "evaluation"
                                  / f"best_seed{seed}" / "summary.json").read_text())
            assert summary["eval"]["split"] == "test" and summary["seed"] == seed


def test_every_row_tunes_what_it_searches():
    """No recipe or method of the board fixes a key of the method's own search space (a
    command-line value wins over each trial's, making all trials one run; ``clplat-tune`` refuses it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from clplat.preflight import CONF_DIR
    from clplat.search_space import run_search_space
    from clplat.tune import check_no_searched_key_is_fixed

    lb = load_leaderboard()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for scenario in lb.SCENARIOS:
                for method in lb.applicable(lb.METHODS, scenario):
                    overrides = lb.tuning_overrides(scenario, method)
                    dims = run_search_space(compose(config_name="train", overrides=overrides))
                    assert dims, (scenario.name, method.name)
                    check_no_searched_key_is_fixed(overrides, dims)
    finally:
        GlobalHydra.instance().clear()
