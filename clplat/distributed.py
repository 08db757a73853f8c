"""Multi-process (DDP) support: which runs may use it, and the few collectives clplat needs.

A run with ``trainer.devices > 1`` trains with Lightning's ``ddp`` strategy: the first ``fit``
re-launches the command line once per extra rank (Lightning's subprocess launcher, which under
Hydra passes the parent's ``hydra.run.dir``), so every rank runs the same stream loop on the
same config and meets the others in the same collectives. ``ddp_spawn`` is refused: it runs
every ``fit`` in fresh processes and hands back only the weights, so a replay buffer or any
other strategy state would be lost at every experience.

What differs per rank is the data each rank trains on (``shard``: a disjoint slice of every
global batch) and the strategy's own state (a rank's replay buffer holds what that rank saw).
The evaluation is split between ranks and summed (``all_reduce_sum``), so every rank ends an
evaluation with the same numbers. Only rank 0 writes the run directory.

Rank and world size are read from the trainer once it exists. Before that (run directory,
loggers) ``launch_rank`` reads ``LOCAL_RANK``, the variable Lightning's launcher sets for the
processes it starts (the launching process is rank 0); clplat runs on one node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from clplat import config_dir
from clplat.choices import PROCESS_GROUP_BACKENDS, TRAINER_STRATEGIES
from clplat.errors import ConfigError

if TYPE_CHECKING:
    from clplat.hooks import Hooks

CONF_DIR = config_dir()


def launch_rank() -> int:
    """This process's rank before the trainer exists: Lightning's launcher sets ``LOCAL_RANK``."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def planned_world_size(trainer_cfg: Mapping[str, Any]) -> int:
    """How many processes the trainer config asks for (one node): ``devices`` as an int or a list.

    ``auto``/``-1`` mean one process on CPU (Lightning's CPU accelerator uses one device for
    them) and every visible GPU otherwise.
    """
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices == "auto" or devices == -1:
        return 1 if trainer_cfg.get("accelerator", "cpu") == "cpu" else max(1, torch.cuda.device_count())
    if isinstance(devices, int) and not isinstance(devices, bool):
        return devices
    if isinstance(devices, str):  # "0,1": GPU ids
        return len([d for d in devices.split(",") if d.strip()])
    return len(list(devices))


def ddp_capable_strategies(conf_dir: Path = CONF_DIR) -> list[str]:
    """Names of the strategy configs whose class declares ``supports_ddp`` (read, not hard-coded)."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    names = []
    for path in sorted((conf_dir / "strategy").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        try:
            if target and getattr(get_object(target), "supports_ddp", False):
                names.append(path.stem)
        except Exception:  # noqa: BLE001 - a broken option is reported when selected, not here
            continue
    return names


def check_ddp_support(trainer_cfg: Mapping[str, Any], hooks: "Hooks") -> int:
    """Refuse, with one line, a multi-process run of a strategy (or plugin) that does not declare
    ``supports_ddp``; returns the world size.
    (``trainer.strategy`` and the backend are checked by ``clplat.config.validate_config``.)"""
    world = planned_world_size(trainer_cfg)
    if world > 1 and not hooks.supports_ddp:
        allowed = ", ".join(ddp_capable_strategies())
        reason = hooks.ddp_refusal
        raise ConfigError("trainer.devices", trainer_cfg.get("devices"),
                          f"strategy {hooks.name!r} does not support multi-process (ddp) training"
                          + (f" ({reason})" if reason else "")
                          + f"; use trainer.devices=1, or one of the strategies that do: {allowed} (no plugins)")
    return world


def lightning_strategy(trainer_cfg: Mapping[str, Any]) -> Any:
    """The ``strategy`` argument of ``lightning.Trainer``: a name, or a ``DDPStrategy`` with a backend."""
    name = trainer_cfg.get("strategy", "auto")
    backend = trainer_cfg.get("process_group_backend")
    if backend is None or planned_world_size(trainer_cfg) <= 1:
        return name
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(process_group_backend=backend)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the running process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks in place (a no-op in a single process)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shard(index: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s part of one global batch: every ``world_size``-th sample from ``rank``.

    Parts are disjoint and together make the batch. A batch with fewer samples than ranks (the
    tail of a pass) is padded by repeating samples, as ``DistributedSampler`` does, so every rank
    always has a non-empty batch and takes the same number of steps.
    """
    if world_size == 1:
        return index
    if len(index) < world_size:
        index = index.repeat((world_size + len(index) - 1) // len(index))
    return index[rank::world_size]


def split_count(total: int, rank: int, world_size: int) -> int:
    """Rank ``rank``'s share of ``total`` items (shares differ by at most one, summing to ``total``)."""
    return total // world_size + (1 if rank < total % world_size else 0)


__all__ = ["TRAINER_STRATEGIES", "PROCESS_GROUP_BACKENDS", "launch_rank", "planned_world_size",
           "ddp_capable_strategies", "check_ddp_support", "lightning_strategy", "world",
           "all_reduce_sum", "barrier", "shard", "split_count"]
