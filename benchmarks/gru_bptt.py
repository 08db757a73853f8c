"""Where clplat's hand-written GRU pass beats ``nn.GRU`` on the CPU: a (batch, hidden) grid.

``GRULayer(implementation="auto")`` picks the hand-written forward/backward of
``clplat.backbones.gru_bptt`` on the CPU for ``batch * hidden <= 4096`` (and for inference at 16
units whatever the batch); this script measures the crossover that rule comes from. For every
(batch, hidden) it times, interleaved over ``--reps`` repetitions, a training pass (forward,
last-step pooling, backward) and an inference pass (``torch.no_grad``) of one GRU layer on a
``(batch, T, 1)`` input (MNIST-1D's shape at ``T=40``) with ``nn.GRU`` and with the hand-written
pass on the same parameters, and prints the medians and ``nn.GRU time / hand-written time``
(> 1: the hand-written pass is faster). Usage::

    python benchmarks/gru_bptt.py [--threads 1] [--reps 5] [--T 40]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clplat.backbones.gru_bptt import gru_sequence  # noqa: E402

GRID = [(64, 16), (128, 16), (256, 16), (512, 16), (1000, 16), (64, 32), (128, 32), (256, 32),
        (32, 128), (64, 64), (128, 64), (64, 96), (64, 128), (1000, 64)]


def timed(fn: Callable[[], object], calls: int) -> float:
    """Milliseconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def measure(batch: int, hidden: int, steps: int, reps: int) -> dict:
    torch.manual_seed(0)
    rnn = nn.GRU(1, hidden, batch_first=True)
    x = torch.randn(batch, steps, 1)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    passes = {
        "train_torch": lambda: rnn(x)[0][:, -1].sum().backward(),
        "train_bptt": lambda: gru_sequence(x, *weights)[:, -1].sum().backward(),
    }

    def inference(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()
        return run

    passes["infer_torch"] = inference(lambda: rnn(x))
    passes["infer_bptt"] = inference(lambda: gru_sequence(x, *weights))
    calls = max(3, 150_000 // (batch * hidden))  # about 10-100 ms of work per timing
    times: dict[str, list[float]] = {name: [] for name in passes}
    for fn in passes.values():
        timed(fn, 2)  # warm-up
    for _ in range(reps):
        for name, fn in passes.items():
            times[name].append(timed(fn, calls))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {"batch": batch, "hidden": hidden, "median_ms": med,
            "train_speedup": med["train_torch"] / med["train_bptt"],
            "infer_speedup": med["infer_torch"] / med["infer_bptt"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gru_bptt.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"one GRU layer, T={args.T}, {args.threads} thread(s); speed-up = nn.GRU time / hand-written time")
    rows = []
    for batch, hidden in GRID:
        row = measure(batch, hidden, args.T, args.reps)
        rows.append(row)
        m = row["median_ms"]
        print(f"B={batch:<5d} H={hidden:<4d} B*H={batch * hidden:<6d} train nn.GRU {m['train_torch']:7.2f} ms, "
              f"hand-written {m['train_bptt']:7.2f} ms ({row['train_speedup']:.2f}x) | inference "
              f"{m['infer_torch']:7.2f} / {m['infer_bptt']:7.2f} ms ({row['infer_speedup']:.2f}x)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"threads": args.threads, "cpu": platform.processor() or platform.machine(),
                                                "torch": torch.__version__},
                                    "T": args.T, "reps": args.reps, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
