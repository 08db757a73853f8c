"""Every recorded accuracy describes the model that exists at that step.

For every strategy and plugin, at three cadences (every step, a divisor of the experience length,
a non-divisor):

- each boundary row equals an independent re-scoring of the checkpoint saved at that boundary
  (the model after ``after_experience``), computed here from the stream's test tensors without
  the evaluator;
- the end-of-experience results (accuracy matrix, ACC, BWT, forgetting) are identical whatever
  the cadence, for the same seed.

A further test pins the periodic rows to the model *after* every hook of their step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clplat.checkpointing import checkpoint_path
from clplat.experiment import build_stream, run_experiment
from clplat.loading import module_from_checkpoint
from tests.conftest import CONF_DIR, TINY, compose_config

ITERATIONS = 6  # optimizer steps per experience (TINY)
CADENCES = {"dense": 1, "divisor": 3, "non_divisor": 4}

# cheap settings for the methods that run extra passes; everything else runs at its defaults
CHEAP = {
    "ewc": ["strategy.fisher_samples=8"],
    "ewc_online": ["strategy.fisher_samples=8"],
    "kfpf": ["strategy.iterations=3", "strategy.batch_size=8"],
    "sharp": ["backbone.num_layers=2", "strategy.selection_samples=64", "strategy.phases=2"],
    "hypernet": ["strategy.chunk_size=2000"],
    "lwf": ["strategy.warmup_batch_size=16"],
}
PLUGIN_CHEAP = {
    "refresh": ["plugin.refresh.fisher_samples=8"],
    "fpf": ["plugin.fpf.iterations=3", "plugin.fpf.batch_size=8"],
}


def _cases() -> dict[str, list[str]]:
    """Every strategy and every plugin of conf/ (a new one is tested without editing this file)."""
    cases = {}
    for path in sorted((CONF_DIR / "strategy").glob("*.yaml")):
        name = path.stem
        cases[name] = [f"strategy={name}", *CHEAP.get(name, [])]
    for path in sorted((CONF_DIR / "plugin").glob("*.yaml")):
        name = path.stem
        cases[f"replay+{name}"] = ["strategy=replay", f"plugin=[{name}]", *PLUGIN_CHEAP.get(name, [])]
    # FPF's default fine-tunes after the last experience only; this one fine-tunes at every boundary
    cases["replay+fpf_every_experience"] = [*cases["replay+fpf"], "plugin.fpf.when=every_experience"]
    return cases


CASES = _cases()


def rescore_checkpoint(cfg, ckpt: dict, experience: int) -> list[int]:
    """Correct predictions per seen task of the model in ``ckpt``, rebuilt from the config alone.

    Independent of the evaluator: the test samples are the subset indices recorded in the
    checkpoint, read from the stream's own test tensors, predicted in one pass per task.
    """
    stream = build_stream(cfg)
    module = module_from_checkpoint(cfg, ckpt)
    evaluator_state = next(state for key, state in ckpt["callbacks"].items() if "ContinualEvaluator" in key)
    correct = []
    with torch.inference_mode():
        for exp in stream.experiences[: experience + 1]:
            index = torch.tensor(evaluator_state["subset_indices"][exp.index], dtype=torch.long)
            logits = module.strategy.predict(exp.test.x[index], exp.test.task[index])
            correct.append(int((logits.argmax(1) == exp.test.y[index]).sum()))
    return correct


def run_case(tmp_path: Path, case: str, cadence: int) -> Path:
    run_dir = tmp_path / f"{case}_{cadence}"
    cfg = compose_config([*TINY, *CASES[case], f"eval.every_n_iters={cadence}", "plots=false",
                          "trainer.checkpoint=true"], run_dir)
    run_experiment(cfg)
    return run_dir


@pytest.mark.parametrize("case", CASES)
def test_boundary_rows_are_the_checkpointed_model_at_every_cadence(tmp_path, case):
    boundary_tables = {}
    for name, cadence in CADENCES.items():
        run_dir = run_case(tmp_path, case, cadence)
        cfg = compose_config([*TINY, *CASES[case], f"eval.every_n_iters={cadence}"], run_dir)
        table = pd.read_csv(run_dir / "metrics.csv")
        boundary = table.loc[table["boundary"]]
        for k in sorted(boundary["experience"].unique()):
            ckpt = torch.load(checkpoint_path(run_dir, int(k)), map_location="cpu", weights_only=False)
            recorded = boundary.loc[boundary["experience"] == k].sort_values("eval_task")["correct"].tolist()
            assert recorded == rescore_checkpoint(cfg, ckpt, int(k)), (case, name, int(k))
        boundary_tables[name] = boundary[["experience", "eval_task", "correct", "n", "loss"]].reset_index(drop=True)
    reference = boundary_tables["dense"]
    for name, frame in boundary_tables.items():
        pd.testing.assert_frame_equal(frame, reference, check_exact=True, obj=f"{case} boundary rows at {name}")


def test_periodic_rows_see_the_model_after_every_hook_of_their_step(tmp_path):
    """k-FPF fine-tunes inside ``after_optimizer_step``: the periodic evaluation at a trigger step
    must describe the fine-tuned model."""
    overrides = [*TINY, "strategy=kfpf", *CHEAP["kfpf"], "strategy.every_n_steps=3", "plots=false"]
    run_experiment(compose_config([*overrides, "eval.every_n_iters=3"], tmp_path / "every3"))
    run_experiment(compose_config([*overrides, "eval.every_n_iters=null"], tmp_path / "boundary_only"))
    periodic = pd.read_csv(tmp_path / "every3" / "metrics.csv")
    boundary_only = pd.read_csv(tmp_path / "boundary_only" / "metrics.csv")
    # k-FPF triggers at steps 3, 6, 9, ...: every boundary (6, 12, ...) is a trigger step. A
    # boundary-only run evaluates once at each boundary, after the trigger's fine-tuning; the
    # periodic evaluation at that same step (the first row there; k-FPF's after_experience leaves
    # the weights alone, so it is also the boundary row) must have seen the same model.
    # The loss tells any change of the weights, where a count of correct predictions may not.
    rows = periodic.loc[~periodic["initial"] & (periodic["global_iter"] % ITERATIONS == 0)]
    got = rows.groupby(["global_iter", "eval_task"])[["correct", "loss"]].first()
    assert len(got) == 15  # 5 boundaries, 1 + 2 + ... + 5 seen tasks
    expected = boundary_only.loc[boundary_only["boundary"]].set_index(["global_iter", "eval_task"])
    np.testing.assert_array_equal(got.to_numpy(), expected.loc[got.index, ["correct", "loss"]].to_numpy())
