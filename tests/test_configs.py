"""Every option of every config group composes, validates and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from clplat.config import SCHEMAS, WANDB, validate_config
from clplat.experiment import build_backbone, build_hooks, build_optimizer
from clplat.logging import build_loggers, finish_wandb
from tests.conftest import CONF_DIR, compose_config

GROUPS = ["stream", "backbone", "strategy", "optimizer", "trainer", "eval", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


ALL = [(group, name) for group in GROUPS for name in options(group)]


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize("group, name", ALL, ids=[f"{g}={n}" for g, n in ALL])
def test_option_composes_validates_and_instantiates(group, name, tmp_path, monkeypatch):
    cfg = compose_config([f"{group}={name}"], tmp_path / "run")
    if cfg.trainer.accelerator == "gpu":  # valid where a GPU is; this machine may have none
        monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    validate_config(cfg)
    build_hooks(cfg)
    build_optimizer(cfg)
    backbone = build_backbone(cfg, input_size=3)
    assert backbone.out_dim > 0
    if group == "logger":
        loggers = build_loggers(cfg.logger, tmp_path, "test", {"a": 1})
        try:
            kinds = {"csv": [CSVLogger], "wandb": [WandbLogger], "csv_wandb": [CSVLogger, WandbLogger], "none": []}
            assert [type(lg) for lg in loggers] == kinds[name]
        finally:
            finish_wandb(loggers)
    if group == "stream":
        assert cfg.stream._target_.startswith("clplat.streams.")  # built in tests/test_streams.py


def test_default_config_is_the_documented_experiment(tmp_path):
    cfg = compose_config([], tmp_path / "run")
    assert cfg.stream.name == "split_mnist1d" and cfg.strategy._target_ == "clplat.strategies.replay.Replay"
    assert cfg.backbone._target_.endswith("GRUBackbone") and list(cfg.logger) == ["csv"]
    assert Path(CONF_DIR / "train.yaml").exists()


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_the_option_files_declare_exactly_the_schemas_keys(group, tmp_path):
    """Defaults live in the YAML, types and checks in clplat/config.py: the two name the same keys."""
    for name in options(group) if (CONF_DIR / group).is_dir() else [None]:
        cfg = compose_config([f"{group}={name}"] if name else [], tmp_path / "run")
        assert set(cfg[group]) == set(SCHEMAS[group]), f"{group}={name}"
    wandb = compose_config(["logger=wandb"]).logger.wandb
    assert set(wandb) - {"_target_"} == set(WANDB)


def test_plugins_compose_in_the_order_given(tmp_path):
    """``plugin=[b,a]`` builds the run's hooks with b then a (files use ``@package plugin.<name>``)."""
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    for name in ("a", "b"):
        (conf / "plugin" / f"{name}.yaml").write_text(f"# @package plugin.{name}\n_target_: clplat.strategy.Plugin\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["plugin=[b,a]"])
    GlobalHydra.instance().clear()
    assert list(cfg.plugin) == ["b", "a"]
    validate_config(cfg)
    hooks = build_hooks(cfg)
    assert len(hooks.plugins) == 2 and hooks.name == "replay+plugin+plugin"
    assert compose_config([], tmp_path / "r").get("plugin") is None  # no plugins by default
