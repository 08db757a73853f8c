"""Why SHARP's new classes are not learned on a recurrent backbone: its kNN read three ways.

Trains ``strategy=sharp backbone.num_layers=2`` (the defaults) on the validation split of
Split MNIST-1D, keeping every boundary checkpoint, then scores each experience's validation data
at every boundary with the run's own long-term memory read three ways:

- ``per_class_mask`` (SHARP, the authors' ``NeocortexKNN``): every class compared in the unit
  subspace stable when it was stored (what the run reports);
- ``stable_now``: every class compared in the subspace of the units stable now;
- ``all_units``: every class compared over all top-layer units.

It also prints where the newest task's samples go under SHARP's reading (predicted-class counts).
Re-running continues: the training run is skipped when its last checkpoint exists.

    python benchmarks/sharp_knn_readings.py [--out runs/sharp_knn] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clplat.loading import model_from_checkpoint  # noqa: E402
from clplat.strategies.parts.sharp_memory import knn_log_probs  # noqa: E402

OVERRIDES = ["strategy=sharp", "backbone.num_layers=2", "validation.fraction=0.1", "eval.split=validation",
             "logger=none", "plots=false", "print_summary=false"]


def train(out: Path, seed: int, experiences: int) -> None:
    if (out / "checkpoints" / f"exp_{experiences - 1}.ckpt").is_file():
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "clplat.train", *OVERRIDES, f"seed={seed}", f"hydra.run.dir={out}"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def readings(run: Path, experience: int) -> tuple[dict[str, list[float]], list[int], list[int]]:
    """Per-task validation accuracy under each reading after ``experience``, the predicted-class
    counts of the newest task under SHARP's reading, and each stored class's mask size."""
    module = model_from_checkpoint(run / "checkpoints" / f"exp_{experience}.ckpt")
    sharp = module.strategy
    reps, masks = dict(sharp.ltm.reps), dict(sharp.ltm.masks)
    stable_now = sharp.types[-1] >= 2
    classes = sharp.stream.num_classes
    ways = {"per_class_mask": masks, "stable_now": {c: stable_now for c in reps},
            "all_units": {c: torch.ones_like(stable_now) for c in reps}}
    accuracy: dict[str, list[float]] = {name: [] for name in ways}
    newest: list[int] = []
    with torch.no_grad():
        for index, exp in enumerate(list(sharp.stream)[: experience + 1]):
            z = sharp.features(module.backbone(exp.valid.x))
            for name, mask in ways.items():
                predicted = knn_log_probs(z, reps, mask, sharp.k, classes).argmax(1)
                accuracy[name].append(round(float((predicted == exp.valid.y).float().mean()), 3))
                if name == "per_class_mask" and index == experience:
                    newest = torch.bincount(predicted, minlength=classes).tolist()
    return accuracy, newest, [int(masks[c].sum()) for c in sorted(masks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sharp_knn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    experiences = 5  # split_mnist1d
    run = args.out / f"seed{args.seed}"
    train(run, args.seed, experiences)
    print(f"run {run}: validation accuracy per task after each experience")
    for experience in range(1, experiences):
        accuracy, newest, sizes = readings(run, experience)
        print(f"after experience {experience + 1} of {experiences}: mask size per stored class {sizes}")
        for name, values in accuracy.items():
            print(f"  {name:>15}: {values}")
        print(f"  newest task's samples predicted as (classes 0..): {newest}")


if __name__ == "__main__":
    main()
