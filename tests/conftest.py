"""Shared fixtures: no network, and configs composed exactly as the CLI composes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from clplat import config_dir

CONF_DIR = config_dir()

# A run small enough for a unit test, still exercising every part (5 experiences, periodic and
# boundary evaluation, replay): ~6 iterations per experience on 500 MNIST-1D samples.
TINY = [
    "stream.source.num_samples=500",
    "backbone.hidden_size=16",
    "trainer.iterations=6",
    "trainer.batch_size=16",
    "eval.every_n_iters=2",
    "eval.subset_size=40",
    "logger=none",
    "print_summary=false",
]


# Test tensors are tiny: a second OpenMP thread only adds synchronisation, and on a busy 2-core
# machine every op waits for it (several times slower). Subprocesses (CLI tests) inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def compose_config(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    """The config the CLI would build for ``overrides`` (``run_dir`` replaces Hydra's output dir)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    if run_dir is not None:
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("strategy=naive", tiny=True)`` -> a composed config writing under tmp_path."""
    counter = iter(range(1000))

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_config([*(TINY if tiny else []), *overrides], tmp_path / f"run{next(counter)}")

    return make
