"""Boundary checkpoints and resuming a run from them.

A run saves ``checkpoints/exp_<k>.ckpt`` after experience k's boundary evaluation: model
weights, Lightning's loop counters (so ``global_iter`` continues), the evaluator's results and
subsets, the strategy's state (buffers, generators, ...) and the global RNG states. Everything
else a run uses is either rebuilt deterministically from the config (stream, evaluation subsets,
each experience's shuffling generator) or re-created at every experience anyway (the
optimizer), so resuming from the last boundary reproduces the uninterrupted run exactly: the
work of an interrupted experience is redone, and yields the same numbers.

Under DDP every rank writes its own checkpoint: rank 0 ``exp_<k>.ckpt``, rank r
``exp_<k>.rank<r>.ckpt``. The weights and the evaluator's results are the same on every rank,
but the strategy's state (a rank's replay buffer) and the RNG states are not. A run resumes
from the last experience for which *every* rank's file exists (a kill between two ranks'
writes leaves an incomplete set, which is skipped), each rank loading its own file.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from clplat.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^exp_(\d+)\.ckpt$")


def checkpoint_path(run_dir: Path, experience: int, rank: int = 0) -> Path:
    suffix = "" if rank == 0 else f".rank{rank}"
    return run_dir / CHECKPOINT_DIR / f"exp_{experience}{suffix}.ckpt"


def rng_state() -> dict[str, Any]:
    """The global generators' states in types ``torch.load(weights_only=True)`` reads (numpy's
    key array as a tensor), so a checkpoint opens without unpickling arbitrary objects."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


def save_boundary_checkpoint(trainer: L.Trainer, run_dir: Path, experience: int, meta: dict[str, Any]) -> Path:
    """Write this rank's checkpoint atomically, so a kill during the write leaves the previous ones intact."""
    rank = trainer.global_rank
    path = checkpoint_path(run_dir, experience, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    checkpoint["clplat"] = {**meta, "experience": experience, "rng": rng_state(), "rank": rank,
                            "world_size": trainer.world_size}
    tmp = path.with_suffix(".ckpt.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def latest_checkpoint(run_dir: Path, rank: int = 0, world_size: int = 1) -> tuple[int, Path] | None:
    """The last experience checkpointed by every one of ``world_size`` ranks, and ``rank``'s file."""
    found = []
    for path in (run_dir / CHECKPOINT_DIR).glob("exp_*.ckpt"):
        match = _NAME.match(path.name)
        if match:
            k = int(match.group(1))
            if all(checkpoint_path(run_dir, k, r).is_file() for r in range(1, world_size)):
                found.append(k)
    return (max(found), checkpoint_path(run_dir, max(found), rank)) if found else None


def load_checkpoint(path: Path, expected_hash: str, world_size: int = 1) -> dict[str, Any]:
    """Read a boundary checkpoint, refusing one that is unreadable, from another config or
    from a run on another number of processes."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ConfigError("resume", str(path), f"checkpoint is unreadable ({type(err).__name__}); "
                          "delete it to resume from the previous experience") from None
    meta = checkpoint.get("clplat") if isinstance(checkpoint, dict) else None
    if not meta or "state_dict" not in checkpoint:
        raise ConfigError("resume", str(path), "is not a clplat boundary checkpoint")
    if meta.get("config_hash") != expected_hash:
        raise ConfigError("resume", str(path), f"was written by another configuration (config hash "
                          f"{meta.get('config_hash')}, this run's is {expected_hash})")
    if meta.get("world_size", 1) != world_size:
        raise ConfigError("resume", str(path), f"was written by a run on {meta.get('world_size', 1)} processes, "
                          f"this one has {world_size} (trainer.devices must match)")
    return checkpoint


def restore(trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> int:
    """Load a boundary checkpoint into freshly built objects; returns the next experience index."""
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)  # strategy state
    trainer.fit_loop.load_state_dict(checkpoint["loops"]["fit_loop"])
    for callback in trainer.callbacks:
        state = checkpoint.get("callbacks", {}).get(callback.state_key)
        if state is not None:
            callback.load_state_dict(state)
    set_rng_state(checkpoint["clplat"]["rng"])
    return int(checkpoint["clplat"]["experience"]) + 1
