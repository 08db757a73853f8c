"""Training-step throughput of every backbone against ``nn.GRU`` of the same hidden size.

One training step = forward + backward + Adam step of ``backbone -> Linear head -> cross-entropy``
on a batch ``(B=32, T, 1)``, one layer, ``H=128`` -- the issue's setting. All models of one ``T``
are built in one process and timed *interleaved* (every repeat runs each model once, in turn), so
machine load hits all of them alike; the ratios in the JSON are what to read, the absolute times
move with the load. ``speedup_vs_gru`` > 1 means faster than ``nn.GRU``.

Extra rows: ``gru_bptt`` (the same GRU on clplat's hand-written CPU pass, ``benchmarks/gru_bptt.py``
has its crossover with ``nn.GRU``), ``indrnn_newton`` (IndRNN's parallel mode; the config default is the step loop),
``mamba_ref`` (Mamba on the selective scan's sequential ``reference`` backend instead of ``auto``)
and ``para_gru_seq`` (ParaGRU's sequential mode, the yardstick of its Newton parallel mode).
Every backbone is built with its class defaults except ``num_layers=1`` (the residual blocks of
minGRU/minLSTM/ParaGRU/IndRNN, LRU and Mamba included: one block each). For
``para_gru`` the script also records the Newton iterations per layer and the max |difference|
between the parallel and sequential outputs on the benchmark batch.

Threads: default ``--threads 1``. On a shared 2-core machine, PyTorch's two OpenMP threads wait
for each other at every op; when another process holds a core, a 65K-element multiply was
measured at 12 ms instead of 17 us, which swamps any comparison. One thread is slower but stable.

Usage::

    python benchmarks/backbones.py [--quick] [--threads 1] [--repeats 3] [--T 64 256 1024 4096]

Rows of an existing output file are replaced per ``(T, backbone)`` (others are kept), so long
sequences or slow backbones can be measured in separate invocations; every row's ratio is against
the GRU timed in the same invocation (``gru_median_ms_same_run``), so always include ``gru``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clplat  # noqa: E402, F401 -- before torch: clplat's CPU memory policy (clplat.allocator)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from clplat.backbones import (  # noqa: E402
    GRUBackbone,
    IndRNNBackbone,
    LRUBackbone,
    MambaBackbone,
    MGUBackbone,
    MinGRUBackbone,
    MinLSTMBackbone,
    ParaGRUBackbone,
)
from clplat.allocator import selected_policy  # noqa: E402
from clplat.backbones.base import count_parameters  # noqa: E402

BATCH, HIDDEN, CLASSES = 32, 128, 10
FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "gru": lambda: GRUBackbone(1, HIDDEN, implementation="torch"),  # nn.GRU: every row's yardstick
    "gru_bptt": lambda: GRUBackbone(1, HIDDEN, implementation="bptt"),
    "mgu": lambda: MGUBackbone(1, HIDDEN),
    "indrnn": lambda: IndRNNBackbone(1, HIDDEN, mode="sequential"),
    "indrnn_newton": lambda: IndRNNBackbone(1, HIDDEN, mode="parallel"),
    "mingru": lambda: MinGRUBackbone(1, HIDDEN),
    "minlstm": lambda: MinLSTMBackbone(1, HIDDEN),
    "lru": lambda: LRUBackbone(1, HIDDEN),
    "mamba": lambda: MambaBackbone(1, HIDDEN),
    "mamba_ref": lambda: MambaBackbone(1, HIDDEN, scan_backend="reference"),
    "para_gru": lambda: ParaGRUBackbone(1, HIDDEN, mode="parallel"),
    "para_gru_seq": lambda: ParaGRUBackbone(1, HIDDEN, mode="sequential"),
}
# After its warm-up step a model slower than this gets one timed repeat instead of --repeats.
SLOW_STEP_S = 8.0


class Trainer:
    """One model's training step on a fixed batch: backbone -> linear head -> CE -> Adam."""

    def __init__(self, backbone: nn.Module, T: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, CLASSES)
        self.x = torch.randn(BATCH, T, 1, generator=gen)
        self.y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        self.opt = torch.optim.Adam([*backbone.parameters(), *self.head.parameters()], lr=1e-3)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.head(self.backbone(self.x)), self.y).backward()
        self.opt.step()


def time_once(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def para_gru_parity(model: ParaGRUBackbone, x: torch.Tensor) -> dict:
    """Max |parallel - sequential| over every layer's outputs, and the Newton iterations used."""
    with torch.no_grad():
        par = model.set_mode("parallel").forward_layers(x)
        iterations = model.newton_iterations()
        seq = model.set_mode("sequential").forward_layers(x)
    model.set_mode("parallel")
    return {"max_abs_diff_vs_sequential": max((p - s).abs().max().item() for p, s in zip(par, seq)),
            "newton_iterations": iterations}


def bench_T(T: int, names: list[str], repeats: int) -> dict[str, dict]:
    """Interleaved timings of every model at sequence length ``T``."""
    torch.manual_seed(0)
    trainers = {name: Trainer(FACTORIES[name](), T, seed=T) for name in names}
    results: dict[str, dict] = {}
    times: dict[str, list[float]] = {}
    active = []
    for name, tr in trainers.items():
        warm = time_once(tr.step)
        times[name] = []
        results[name] = {"warmup_ms": warm, "params": count_parameters(tr.backbone)}
        active.append(name)
        if warm > SLOW_STEP_S * 1e3:
            results[name]["capped"] = True
    for r in range(repeats):
        for name in active:
            if results[name].get("capped") and r > 0:
                continue
            times[name].append(time_once(trainers[name].step))
    for name in names:
        ts = times[name]
        results[name].update(median_ms=statistics.median(ts), min_ms=min(ts), repeats=len(ts))
        if name in ("para_gru", "indrnn_newton"):
            cells = trainers[name].backbone.cells()
            results[name]["newton_iterations_last_step"] = [cell.last_newton_info.iterations for cell in cells]
    if "para_gru" in trainers:
        results["para_gru"].update(para_gru_parity(trainers["para_gru"].backbone, trainers["para_gru"].x))
    if "gru" in results:
        base = results["gru"]
        for name, res in results.items():
            res["gru_median_ms_same_run"] = base["median_ms"]
            res["speedup_vs_gru"] = base["median_ms"] / res["median_ms"]
            res["speedup_vs_gru_min"] = base["min_ms"] / res["min_ms"]
    if "para_gru" in results and "para_gru_seq" in results:
        seq, par = results["para_gru_seq"], results["para_gru"]
        par["speedup_vs_sequential"] = seq["median_ms"] / par["median_ms"]
        par["speedup_vs_sequential_min"] = seq["min_ms"] / par["min_ms"]
    return results


def targets(table: dict[str, dict[str, dict]]) -> dict[str, bool | None]:
    """The issue's throughput targets, evaluated on the medians (None: not measured)."""
    out: dict[str, bool | None] = {}
    at_1024 = table.get("1024", {})
    for name in ("mingru", "minlstm", "lru"):
        res = at_1024.get(name)
        out[f"{name}_faster_than_gru_T1024"] = None if res is None else res["speedup_vs_gru"] > 1
    long = [res["para_gru"] for T, res in table.items() if int(T) >= 1024 and "para_gru" in res]
    out["para_gru_parity_1e-4"] = None if not long else all(r["max_abs_diff_vs_sequential"] <= 1e-4 for r in long)
    out["para_gru_faster_than_sequential_T>=1024"] = (
        None if not long or "speedup_vs_sequential" not in long[0] else all(r["speedup_vs_sequential"] > 1 for r in long)
    )
    mamba = at_1024.get("mamba")
    out["mamba_at_least_half_gru_T1024"] = None if mamba is None else mamba["speedup_vs_gru"] >= 0.5
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--backbones", nargs="+", default=list(FACTORIES), choices=list(FACTORIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="T = 64, 256, 1024 and 2 repeats")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/backbones[_quick][_threadsN].json)")
    args = parser.parse_args()
    if args.quick:
        args.T = [T for T in args.T if T <= 1024]
        args.repeats = min(args.repeats, 2)
    torch.set_num_threads(args.threads)
    if args.out is None:
        suffix = ("_quick" if args.quick else "") + ("" if args.threads == 1 else f"_threads{args.threads}")
        args.out = Path(__file__).resolve().parent / "results" / f"backbones{suffix}.json"

    # Results merge into an existing file by T, so long sequences can be run as separate invocations.
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    table: dict[str, dict[str, dict]] = dict(previous.get("results", {}))
    commands = list(previous.get("commands", []))
    header = f"{'T':>5} {'backbone':>14} {'median ms':>10} {'min ms':>9} {'x GRU':>6} {'x GRU(min)':>10}  notes"
    print(header)
    for T in args.T:
        res = bench_T(T, args.backbones, args.repeats)
        table.setdefault(str(T), {}).update(res)
        for name, r in res.items():
            notes = []
            if "newton_iterations_last_step" in r:
                notes.append(f"newton its {r['newton_iterations_last_step']}")
            if "speedup_vs_sequential" in r:
                notes.append(f"x seq {r['speedup_vs_sequential']:.2f}")
            if "max_abs_diff_vs_sequential" in r:
                notes.append(f"|par-seq| {r['max_abs_diff_vs_sequential']:.1e}")
            if r.get("capped"):
                notes.append("1 repeat")
            print(f"{T:>5} {name:>14} {r['median_ms']:>10.1f} {r['min_ms']:>9.1f} "
                  f"{r.get('speedup_vs_gru', float('nan')):>6.2f} {r.get('speedup_vs_gru_min', float('nan')):>10.2f}  "
                  + ", ".join(notes), flush=True)
    table = dict(sorted(table.items(), key=lambda item: int(item[0])))
    summary = targets(table)
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "THP_", "CLPLAT_CPU_MEMORY")) or k.endswith("_NUM_THREADS")}
    commands.append(" ".join([*(f"{k}={v}" for k, v in env.items()), "python", "benchmarks/backbones.py", *sys.argv[1:]]))
    print("targets:", json.dumps(summary))
    payload = {
        "setting": {"batch": BATCH, "hidden": HIDDEN, "input_features": 1, "num_layers": 1,
                    "step": "forward + backward + Adam on backbone -> Linear -> cross-entropy",
                    "timing": "interleaved repeats in one process; ratios = GRU time / model time"},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.uname().processor,
        "cpu_memory_policy": selected_policy(),
        "repeats": args.repeats,
        "commands": commands,
        "results": table,
        "targets": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
