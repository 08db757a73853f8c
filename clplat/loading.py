"""A run's model at any experience, rebuilt from its checkpoint, ready for inference and probing.

Every boundary checkpoint (``checkpoints/exp_<k>.ckpt``) carries the run's resolved config, so the
network and the strategy (whose state can matter for prediction: a hypernetwork's task
embeddings, SHARP's masks and memories) are rebuilt exactly as the run built them, and the
weights and the strategy's state are loaded into them. Checkpoints hold only tensors and plain
containers, so ``torch.load`` opens them with its default ``weights_only=True``.

    from clplat import load_run
    run = load_run("runs/2026-12-06/10-00-00_split_mnist1d_replay")
    model = run.model(experience=2)          # ContinualModule in eval mode
    logits = model.strategy.predict(x, task) # what the evaluator scored
    # or, from the file alone:
    model = ContinualModule.load_from_checkpoint(".../checkpoints/exp_2.ckpt")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

if TYPE_CHECKING:
    from clplat.module import ContinualModule


def model_from_checkpoint(path: str | Path, map_location: Any = "cpu") -> "ContinualModule":
    """The ``ContinualModule`` saved in a boundary checkpoint, with its strategy's state, in eval mode."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    meta = checkpoint.get("clplat") or {}
    if "config" not in meta:
        raise ValueError(f"{path} has no run config (written by an older clplat, or not a clplat checkpoint)")
    module = module_from_checkpoint(OmegaConf.create(meta["config"]), checkpoint)
    if isinstance(map_location, (str, torch.device)):
        module.to(map_location)
    return module


def module_from_checkpoint(cfg: Any, checkpoint: dict[str, Any]) -> "ContinualModule":
    """Build the run's module from ``cfg`` and load a loaded checkpoint's weights and strategy
    state into it (eval mode): the one way a saved model is rebuilt."""
    from clplat.experiment import build_hooks, build_module, build_stream

    stream = build_stream(cfg)
    hooks = build_hooks(cfg)
    module = build_module(cfg, stream, hooks)
    hooks.setup(module, stream)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module.eval()


__all__ = ["model_from_checkpoint", "module_from_checkpoint"]
