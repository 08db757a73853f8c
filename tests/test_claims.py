"""benchmarks/claims.py: verdicts from paired differences, read from study folders laid out as
``clplat-tune`` writes them (the tuning and evaluation pipeline itself is tests/test_leaderboard.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def claims():
    spec = importlib.util.spec_from_file_location("claims", ROOT / "benchmarks" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["claims"] = module
    spec.loader.exec_module(module)
    return module


def write_runs(study: Path, values: list[float], **extra: float) -> None:
    for seed, value in enumerate(values):
        run = study / "evaluation" / f"best_seed{seed}"
        run.mkdir(parents=True)
        summary = {"seed": seed, "avg_acc": value, "resources": {"optimizer_steps": 100, "memory_bytes": 8800}}
        summary.update({k: v + 0.01 * seed for k, v in extra.items()})
        (run / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("treatment, direction, expected", [
    ([0.80, 0.82, 0.79, 0.81, 0.83], +1, "reproduced"),        # +0.10 on every seed
    ([0.60, 0.62, 0.59, 0.61, 0.63], +1, "contradicted"),      # -0.10 on every seed
    ([0.60, 0.62, 0.59, 0.61, 0.63], -1, "reproduced"),        # the paper claims lower
    ([0.75, 0.67, 0.74, 0.66, 0.73], +1, "not reproduced (difference not significant)"),
    # equivalence claims: the whole interval within +-0.02 of the control, or below -0.02
    ([0.705, 0.715, 0.695, 0.705, 0.735], 0, "reproduced (interval within ±0.02)"),
    ([0.60, 0.62, 0.59, 0.61, 0.63], 0, "contradicted (worse by more than 0.02)"),
    ([0.75, 0.67, 0.74, 0.66, 0.73], 0, "not reproduced (interval not within ±0.02)"),
    ([0.80, 0.82, 0.79, 0.81, 0.83], 0, "not reproduced (interval not within ±0.02)"),
])
def test_a_claims_verdict_follows_the_paired_interval(claims, tmp_path, treatment, direction, expected):
    claim = claims.Claim("m", "paper", "claim", claims.CLASSIL, claims.Method("t", []), claims.Method("c", []),
                         direction=direction)
    study = tmp_path / claims.lb.slug(claims.CLASSIL.name)
    write_runs(study / "t", treatment)
    write_runs(study / "c", [0.70, 0.72, 0.69, 0.71, 0.73])
    row = claims.claim_row(claim, tmp_path).split(" | ")
    assert row[-1].rstrip(" |") == expected
    assert "t 0." in row[4] and "100 steps" in row[5]


def test_unrun_claims_say_so(claims, tmp_path):
    assert all(claims.claim_row(c, tmp_path).endswith("| not run |") for c in claims.CLAIMS if not c.untestable)


def test_an_untestable_claim_gives_its_reason_and_is_never_run(claims, tmp_path, monkeypatch):
    claim = next(c for c in claims.CLAIMS if c.untestable)
    assert claims.claim_row(claim, tmp_path).endswith(f"| {claim.untestable} |  | not testable here |")
    started = []
    monkeypatch.setattr(claims.lb, "run_method", lambda out, scenario, method, args: started.append(method.name))
    args = claims.parse_args(["--out", str(tmp_path), "--write", str(tmp_path / "claims.md")])
    claims.build(args, [claim])
    assert started == []


def test_the_stability_gap_claim_reads_the_class_il_and_domain_il_boards(claims, tmp_path):
    by_kind = {s.kind: tmp_path / claims.lb.slug(s.name) for s in claims.lb.SCENARIOS}
    write_runs(by_kind["class-IL"] / "replay", [0.8] * 5, sg_transient_mean=0.1, sg_permanent_mean=0.05,
               sg_depth_mean=0.15)
    write_runs(by_kind["class-IL"] / "ewc", [0.2] * 5, sg_transient_mean=-0.02, sg_permanent_mean=0.9,
               sg_depth_mean=0.9)
    write_runs(by_kind["domain-IL"] / "ewc", [0.7] * 5, sg_transient_mean=-0.02, sg_permanent_mean=-0.02,
               sg_depth_mean=0.0)
    rows = {(row.split(" | ")[2], row.split(" | ")[3]): row for row in claims.stability_gap_rows(tmp_path)}
    assert len(rows) == 2 * len(claims.STABILITY_GAP_METHODS)

    def row(method: str, kind: str) -> str:
        return next(r for (claim, setting), r in rows.items() if f"({method})" in claim and f"{kind})" in setting)

    assert row("replay", "class-IL").endswith("| reproduced |")
    assert "transient 0.120" in row("replay", "class-IL") and "permanent 0.070" in row("replay", "class-IL")
    assert row("ewc", "class-IL").endswith("what is lost at the boundary is not won back |")
    assert row("ewc", "domain-IL").endswith("no significant drop |")
    assert row("lwf", "class-IL").endswith("| not run |") and row("replay", "domain-IL").endswith("| not run |")


def test_a_claim_reads_the_leaderboards_runs_of_a_row_it_shares_and_runs_only_the_others(claims, tmp_path,
                                                                                          monkeypatch):
    board, out = tmp_path / "board", tmp_path / "claims"
    fpf = next(c for c in claims.CLAIMS if c.method == "fpf")  # replay+fpf vs replay, class-IL
    scenario = claims.lb.slug(fpf.scenario.name)
    write_runs(board / scenario / "replay+fpf", [0.80, 0.82, 0.79, 0.81, 0.83])
    write_runs(board / scenario / "replay", [0.70, 0.72, 0.69, 0.71, 0.73])
    assert claims.claim_row(fpf, out, board).endswith("| reproduced |")
    assert claims.claim_row(fpf, out).endswith("| not run |")  # without the board: its own (empty) folder

    ran = []
    monkeypatch.setattr(claims.lb, "run_method", lambda o, scenario, method, args: ran.append((o, method.name)))
    rnn = next(c for c in claims.CLAIMS if c.treatment is not None and c.treatment.name == "hypernet_rnn")
    args = claims.parse_args(["--out", str(out), "--board", str(board), "--write", str(tmp_path / "claims.md")])
    claims.build(args, [fpf, rnn])
    assert ran == [(out, "hypernet_rnn")]  # hypernet (the control) and both FPF rows are leaderboard rows


def test_every_claim_tunes_what_it_searches(claims):
    """``clplat-tune`` accepts every study of the claims: no recipe or method fixes a key of the
    method's own search space (a command-line value wins over each trial's, making all trials one run)."""
    from clplat.tune import check_and_read_space

    studies = {(c.scenario.name, m.name): (c.scenario, m)
               for c in claims.CLAIMS if not c.untestable for m in (c.treatment, c.control)}
    for scenario, method in studies.values():
        assert check_and_read_space(claims.lb.tuning_overrides(scenario, method)), (scenario.name, method.name)
