"""clplat-tune: declared search spaces, a study end to end, resuming a killed one, its refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from clplat.errors import ConfigError
from clplat.search_space import node_search_space, parse_dimension, run_search_space, without_search_space
from clplat.tune import check_and_read_space
from clplat.tune import main as tune_main
from tests.conftest import CONF_DIR, compose_config

# what the protocol tunes, per method (issue list); the learning rate comes from the optimizer
EXPECTED = {
    "strategy/ewc": {"ewc_lambda"}, "strategy/ewc_online": {"ewc_lambda"}, "strategy/si": {"c"},
    "strategy/lwf": {"alpha"}, "strategy/der": {"alpha"}, "strategy/derpp": {"alpha", "beta"},
    "strategy/agem": {"replay_batch_size"}, "strategy/replay": {"replay_batch_size"},
    "plugin/refresh": {"gamma", "unlearn_steps", "interval"}, "plugin/fpf": {"modules", "iterations", "lr"},
    "strategy/kfpf": {"k"}, "strategy/hypernet": {"beta", "lr", "chunk_size", "emb_dim"},
    "strategy/sharp": {"temperature", "min_activation_perc", "density"},
    "strategy/power_law": {"exponent", "rehearsal_fraction"},
    "optimizer/adam": {"lr"}, "optimizer/sgd": {"lr"},
}
TINY_TUNING = ["stream.source.num_samples=300", "backbone.hidden_size=8", "trainer.iterations=2",
               "trainer.batch_size=16", "eval.subset_size=20", "stream.n_experiences=2",
               "stream.classes_per_experience=5"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_method_declares_its_search_space_next_to_its_defaults(name):
    node = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    dims = node_search_space(node, name.split("/")[0])
    assert EXPECTED[name] <= {d.key.split(".", 1)[1] for d in dims}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    for dim in dims:  # every range yields a value the component's own key can take
        value = dim.suggest(trial)
        if dim.choices is None:
            assert dim.low <= value <= dim.high
        else:
            assert value in dim.choices
    assert "search_space" not in without_search_space(node)


def test_a_run_config_tunes_strategy_plugins_and_optimizer_together():
    cfg = compose_config(["strategy=replay", "plugin=[refresh]"])
    keys = {d.key for d in run_search_space(cfg)}
    assert keys == {"strategy.replay_batch_size", "plugin.refresh.gamma", "plugin.refresh.unlearn_steps",
                    "plugin.refresh.interval", "optimizer.lr"}


@pytest.mark.parametrize("spec, message", [
    ({"low": 1.0}, "needs numbers low < high"),
    ({"low": 0.0, "high": 1.0, "log": True}, "a log range needs low > 0"),
    ({"choices": []}, "choices must be a non-empty list"),
    ({"low": 1, "high": 2, "scale": 3}, "unknown fields"),
])
def test_a_malformed_range_is_one_clear_line(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_dimension("strategy.x", spec)


def test_a_range_for_an_option_the_component_lacks_is_refused():
    node = OmegaConf.create({"_target_": "x", "alpha": 1.0, "search_space": {"alpah": {"low": 0.1, "high": 1.0}}})
    with pytest.raises(ConfigError, match="strategy has no option 'alpah'"):
        node_search_space(node, "strategy")


def read_trials(study: Path) -> list[dict]:
    with (study / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_a_study_tunes_on_validation_and_evaluates_on_test(tmp_path, capsys):
    study = tmp_path / "study"
    tune_main([str(study), "--trials", "2", "--jobs", "2", "--launcher", "basic", "--eval-seeds", "0",
               "--evaluate", "stream.order_seed=null", "--", "strategy=naive", "stream.order_seed=1", *TINY_TUNING])
    trials = read_trials(study)
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:  # every trial scored the validation split of the tuning stream
        summary = json.loads((study / "trials" / f"trial_{t['trial']}_seed0" / "summary.json").read_text())
        assert summary["eval"]["split"] == "validation"
        assert float(t["validation_avg_acc"]) == pytest.approx(summary["avg_acc"])
    best = max(trials, key=lambda t: float(t["validation_avg_acc"]))
    chosen = yaml.safe_load((study / "tuned" / "best.yaml").read_text())
    assert chosen["optimizer"]["lr"] == pytest.approx(json.loads(best["optimizer.lr"]))
    evaluated = json.loads((study / "evaluation" / "best_seed0" / "summary.json").read_text())
    assert evaluated["eval"]["split"] == "test"
    config = yaml.safe_load((study / "evaluation" / "best_seed0" / "config.yaml").read_text())
    assert config["optimizer"]["lr"] == pytest.approx(chosen["optimizer"]["lr"])
    assert config["stream"]["order_seed"] is None and config["validation"]["fraction"] == 0
    protocol = (study / "protocol.md").read_text()
    assert "validation `avg_acc`" in protocol and "evaluation test avg_acc" in protocol
    # the chosen values load into any run
    cfg = compose_config([f"hydra.searchpath=[file://{study}]", "+tuned=best"])
    assert cfg.optimizer.lr == pytest.approx(chosen["optimizer"]["lr"])


def test_a_killed_study_continues_and_retries_the_interrupted_trial(tmp_path):
    study = tmp_path / "study"
    args = [str(study), "--launcher", "basic", "--jobs", "1", "--", "strategy=naive", *TINY_TUNING]
    tune_main([*args[:1], "--trials", "1", *args[1:]])
    # a kill in the middle of the next batch leaves a trial asked but never told
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study / "optuna.journal")))
    stale = optuna.load_study(study_name="clplat", storage=storage).ask()
    stale_lr = stale.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
    tune_main([*args[:1], "--trials", "2", *args[1:]])
    trials = read_trials(study)
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)  # the stale one is not counted
    assert str(stale.number) not in [t["trial"] for t in trials]
    assert json.loads(trials[-1]["optimizer.lr"]) == pytest.approx(stale_lr)  # retried with its values
    assert (study / "interrupted_trials.txt").read_text().split() == [str(stale.number)]


@pytest.mark.parametrize("extra, message", [
    (["eval.split=test"], "eval.split is set by clplat-tune"),
    (["seed=3"], "seed is set by clplat-tune"),
    (["strategy.nope=1"], "clplat: error:"),
    # a fixed value of a searched key would win over every trial's: all trials the same run
    (["optimizer.lr=0.003"], "optimizer.lr=0.003 is not valid: clplat-tune searches optimizer.lr"),
    (["++optimizer.lr=0.003"], "drop it from the search with ~optimizer.search_space.lr"),
])
def test_tuning_refuses_what_would_select_on_test_data_or_cannot_run(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as stop:
        tune_main([str(tmp_path / "s"), "--", "strategy=naive", *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "s").exists()


def test_a_study_does_not_continue_with_other_settings(tmp_path, capsys):
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump({"overrides": ["strategy=ewc"], "metric": "avg_acc"}))
    with pytest.raises(SystemExit):
        tune_main([str(study), "--", "strategy=naive"])
    assert "holds a study with other overrides" in capsys.readouterr().err


def test_trials_keep_the_users_own_config_folders_on_the_search_path(tmp_path):
    """Options kept in a user's config folder (hydra.searchpath) stay findable in the trial runs."""
    from clplat.tune import with_study_searchpath

    out = with_study_searchpath(["strategy=mine", "hydra.searchpath=[file:///home/me/conf,pkg://mypkg.conf]"],
                                tmp_path)
    assert out == ["strategy=mine", f"hydra.searchpath=[file:///home/me/conf,pkg://mypkg.conf,file://{tmp_path.resolve()}]"]
    assert with_study_searchpath(["seed=1"], tmp_path) == ["seed=1", f"hydra.searchpath=[file://{tmp_path.resolve()}]"]


def test_a_key_fixed_and_dropped_from_the_search_leaves_the_other_dimensions():
    dims = check_and_read_space(["strategy=ewc", "strategy.ewc_lambda=5", "~strategy.search_space.ewc_lambda"])
    assert [d.key for d in dims] == ["optimizer.lr"]
