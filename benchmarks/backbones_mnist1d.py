"""Joint MNIST-1D test accuracy of every backbone, trained by the platform itself.

Each backbone is trained by ``clplat-train`` with the joint strategy on Split MNIST-1D -- all five
experiences' training data at once, i.e. plain 10-class MNIST-1D (4000 train / 1000 test, length
40, 1 feature) -- and the run's final ``avg_acc`` (test accuracy, averaged over the five 2-class
tasks) is reported next to the MNIST-1D paper's GRU (91%, Greydanus 2020, arXiv:2011.14439).
Each backbone keeps its own defaults (``conf/backbone/<name>.yaml``); the training setting is
pinned (``SETTING``: Adam lr 3e-3, batch 64) rather than taken from the platform's defaults, so
the table stays one experiment when those defaults change. The runs go one after another, in
fresh processes, exactly as::

    clplat-train stream=split_mnist1d strategy=joint backbone=<name> trainer.epochs=<N> eval=boundary \
        logger=none trainer.checkpoint=false print_summary=false optimizer=adam optimizer.lr=0.003 \
        trainer.batch_size=64 seed=0 [EXTRA] hydra.run.dir=<dir>/<name>

with ``[EXTRA]`` from ``EXTRA_OVERRIDES`` (CPU-time choices that leave the model unchanged).

Results are merged into the JSON file (one entry per backbone), so backbones can be run in
separate invocations (each under a few minutes) without losing the others.

Usage::

    python benchmarks/backbones_mnist1d.py [--backbones gru mingru ...] [--epochs 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("gru", "mgu", "indrnn", "mingru", "minlstm", "lru", "mamba", "para_gru")
PAPER_GRU_ACC = 0.91  # MNIST-1D paper, GRU (Greydanus 2020, Table/Figure of baselines)
TARGET = 0.80
# Overrides that change CPU time only, never the function computed (none needed at present: e.g.
# Mamba's ``scan_backend=auto`` runs the fused CPU kernel, the fastest backend on CPU).
EXTRA_OVERRIDES: dict[str, list[str]] = {}
# The training setting every row was measured in (20 epochs = 1260 steps at batch 64).
SETTING = ["optimizer=adam", "optimizer.lr=0.003", "trainer.batch_size=64"]


def overrides(name: str, epochs: int, seed: int, run_dir: Path) -> list[str]:
    return [
        "stream=split_mnist1d", "strategy=joint", f"backbone={name}", f"trainer.epochs={epochs}",
        "eval=boundary", "logger=none", "trainer.checkpoint=false", "print_summary=false", *SETTING,
        f"seed={seed}", *EXTRA_OVERRIDES.get(name, []), f"hydra.run.dir={run_dir}",
    ]


def train(name: str, epochs: int, seed: int, threads: int, base: Path) -> dict:
    """One ``clplat-train`` run; returns the numbers of its ``summary.json``."""
    run_dir = base / name
    cli = Path(sys.executable).with_name("clplat-train")
    args = overrides(name, epochs, seed, run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.run([str(cli), *args], cwd=base, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"clplat-train failed for {name} (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "test_acc": summary["avg_acc"],
        "params_backbone": summary["params"]["backbone"],
        "global_iters": summary["global_iters"],
        "wall_time_s": round(wall, 1),
        "overrides": args[:-1],
        "meets_target": summary["avg_acc"] >= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backbones_mnist1d.json")
    args = parser.parse_args()

    payload = json.loads(args.out.read_text()) if args.out.exists() else {}
    payload.update({"paper_gru_acc": PAPER_GRU_ACC, "target": TARGET, "torch": torch.__version__,
                    "threads": args.threads})
    results = payload.setdefault("results", {})
    with tempfile.TemporaryDirectory(prefix="clplat_mnist1d_") as tmp:
        for name in args.backbones:
            res = train(name, args.epochs, args.seed, args.threads, Path(tmp))
            res["epochs"] = args.epochs
            res["command"] = "python " + " ".join(["benchmarks/backbones_mnist1d.py", "--backbones", name,
                                                   "--epochs", str(args.epochs), "--seed", str(args.seed),
                                                   "--threads", str(args.threads)])
            results[name] = res
            print(f"{name:>10}: test acc {res['test_acc']:.4f} (paper GRU {PAPER_GRU_ACC:.2f}; "
                  f"{'meets' if res['meets_target'] else 'below'} {TARGET:.0%}), {res['params_backbone']} params, "
                  f"{res['wall_time_s']:.0f} s", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
