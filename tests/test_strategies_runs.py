"""The issue-4 methods in real runs: resume equivalence, every scenario, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clplat import experiment

from clplat.experiment import build_hooks, run_experiment
from clplat.stream import Scenario
from tests.conftest import TINY, compose_config
from tests.helpers import assert_resume_matches_uninterrupted, preflight_error, run_cli

ROOT = Path(__file__).resolve().parents[1]

# cheap settings: a handful of Fisher samples, short rehearsal and fine-tuning
CHEAP = {
    "ewc": ["strategy.fisher_samples=8"],
    "ewc_online": ["strategy.fisher_samples=8"],
    "power_law": ["strategy.buffer_size=100", "strategy.batch_size=16"],
    "kfpf": ["strategy.iterations=2", "strategy.batch_size=8"],
    "refresh": ["plugin.refresh.fisher_samples=8"],
    "fpf": ["plugin.fpf.iterations=3", "plugin.fpf.batch_size=8"],
}

# every new method, alone or as plugins on a base, with what it needs to be cheap
CASES = {
    "der": ["strategy=der"],
    "derpp": ["strategy=derpp"],
    "ewc": ["strategy=ewc", *CHEAP["ewc"]],
    "ewc_online": ["strategy=ewc_online", *CHEAP["ewc_online"]],
    "si": ["strategy=si"],
    "lwf": ["strategy=lwf"],
    "agem": ["strategy=agem"],
    "power_law": ["strategy=power_law", *CHEAP["power_law"]],
    "power_law_after_task": ["strategy=power_law", "strategy.when=after_task", "strategy.reset_recency=true",
                             "strategy.rehearsal_fraction=0.5", *CHEAP["power_law"]],
    "kfpf": ["strategy=kfpf", *CHEAP["kfpf"]],
    "kfpf_kd_auto": ["strategy=kfpf", "strategy.loss=kd", "strategy.modules=auto", *CHEAP["kfpf"]],
    "replay+refresh": ["strategy=replay", "plugin=[refresh]", *CHEAP["refresh"]],
    "der+refresh+fpf": ["strategy=der", "plugin=[refresh,fpf]", *CHEAP["refresh"], *CHEAP["fpf"],
                        "plugin.fpf.when=every_experience"],
    "naive+fpf_kd": ["strategy=naive", "plugin=[fpf]", "plugin.fpf.loss=kd", *CHEAP["fpf"]],
}
@pytest.mark.parametrize("case", CASES)
def test_new_strategies_resume_equal_to_an_uninterrupted_run(make_cfg, monkeypatch, case):
    overrides = [*CASES[case], "backbone.dropout=0.2", "backbone.num_layers=2"]  # dropout: global RNG
    assert_resume_matches_uninterrupted(make_cfg, monkeypatch, overrides)  # stopped inside experience 2


def test_power_law_default_trains_every_experience_on_its_own_data_in_class_il(make_cfg, monkeypatch):
    """At the shipped defaults (class-IL split MNIST-1D, a tiny model), every training forward pass
    (the Lightning steps and any step outside them) is counted by the experience it belongs to:
    each experience's steps are half its own samples and half older tasks' (rehearsal_fraction
    1), and each task is learned (no accuracy-matrix diagonal entry near 0). The old default, a
    session on older tasks only after each task with a fresh optimizer, trained 96 own samples
    against 1,000 rehearsed ones and left every diagonal entry after the first at 0."""
    own: dict[int, list[int]] = {}  # experience -> [own samples, all samples, steps, steps without own]
    build = experiment.build_module

    def recording_build(cfg, stream, hooks):
        module = build(cfg, stream, hooks)

        def record(mod, args):
            if mod.training and torch.is_grad_enabled():
                k, task = hooks.context.experience.index, args[1]
                counts = own.setdefault(k, [0, 0, 0, 0])
                mine = int((task == k).sum())
                counts[0] += mine
                counts[1] += task.numel()
                counts[2] += 1
                counts[3] += mine == 0

        module.register_forward_pre_hook(record)
        return module

    monkeypatch.setattr(experiment, "build_module", recording_build)
    result = run_experiment(make_cfg("strategy=power_law", "trainer.checkpoint=false", "trainer.iterations=40",
                                        "eval.every_n_iters=40"))
    assert sorted(own) == list(range(5))
    assert own[0][0] == own[0][1]  # nothing to rehearse yet
    for k in range(1, 5):
        mine, total, steps, without = own[k]
        assert steps == 40 and 0.4 < mine / total < 0.6, (k, own[k])
        assert without <= 1, (k, own[k])  # at most a pass's short last batch can miss it
    matrix = np.loadtxt(result.run_dir / "accuracy_matrix.csv", delimiter=",", skiprows=1)
    assert matrix.diagonal().min() > 0.2, matrix


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["split_mnist1d", "split_mnist1d_til", "permuted_mnist1d"])
def test_every_new_method_runs_on_every_scenario(make_cfg, stream):
    for case, overrides in CASES.items():
        result = run_experiment(make_cfg(f"stream={stream}", *overrides, "trainer.checkpoint=false"))
        assert result.summary["num_experiences_finished"] == 5, case


def test_new_methods_declare_every_scenario(tmp_path):
    for case, overrides in CASES.items():
        for part in build_hooks(compose_config(overrides, tmp_path / case)).parts:
            assert set(part.supported_scenarios) == set(Scenario), case


def test_cli_runs_a_base_with_both_plugins(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli(*TINY, "trainer.checkpoint=false", "strategy=replay", "plugin=[refresh,fpf]",
                *CHEAP["refresh"], *CHEAP["fpf"], f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "replay+refresh+fpf"
    # 30 steps, a refresh every second one (the default interval), one unlearning step each
    assert summary["strategy_state"]["fpf_steps"] == 3 and summary["strategy_state"]["refresh_unlearn_steps"] == 15


@pytest.mark.parametrize("argv, message", [
    (["strategy=replay", "plugin=[refresh]", "plugin.refresh.gamma=-1"], "plugin.refresh.gamma=-1 is not valid"),
    (["strategy=power_law", "strategy.schedule=zipf"], "strategy.schedule='zipf' is not valid"),
    (["strategy=naive", "plugin=[fpf]", "plugin.fpf.loss=l2"], "plugin.fpf.loss='l2' is not valid"),
    (["strategy=ewc", "strategy.mode=offline"], "strategy.mode='offline' is not valid"),
    (["-m", "strategy=der", "strategy.alpha=0.1,-2"], "strategy.alpha=-2 is not valid"),
])
def test_cli_preflight_refuses_bad_values_with_one_line(argv, message, capsys):
    assert message in preflight_error(argv, capsys)


def test_cli_multirun_of_every_new_strategy(tmp_path):
    names = "der,derpp,ewc,ewc_online,si,lwf,agem,power_law,kfpf"
    done = run_cli("-m", *TINY, "trainer.checkpoint=false", f"strategy={names}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summaries = sorted((tmp_path / "sweep").rglob("summary.json"))
    assert len(summaries) == 9
    assert {json.loads(p.read_text())["strategy"] for p in summaries} == {
        "der", "derpp", "ewc", "ewc_online", "si", "lwf", "agem", "power_law", "kfpf_ce"}
