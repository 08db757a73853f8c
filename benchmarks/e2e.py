"""End-to-end cost of a continual-learning run: clplat vs a minimal hand-written PyTorch loop.

The same experiment — Split MNIST-1D, 5 experiences, a GRU, batch 64, a fixed number of
iterations per experience, evaluation every ``n`` iterations on ``subset`` test samples of every
seen task — run two ways in one process, interleaved over several repetitions:

- ``clplat``: ``run_experiment`` on the composed config (Lightning Trainer, evaluator callback,
  strategy hooks, results table, metrics.csv per boundary; no plots/logger/checkpoints);
- ``minimal``: the floor — the same data tensors, the same model and optimizer, the same
  batches, the same evaluation arithmetic, written as a bare loop.

Prints medians and the clplat/minimal ratio, and the final average accuracy of both, and writes
JSON. Example::

    python benchmarks/e2e.py --hidden 16 128 --every 10 1 --strategies naive replay --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clplat.backbones import GRUBackbone  # noqa: E402
from clplat.buffers import ReplayBuffer  # noqa: E402
from clplat.heads import SingleHead  # noqa: E402


def compose(hidden: int, every: int, strategy: str, iters: int, subset: int, run_dir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=[
            f"strategy={strategy}", f"backbone.hidden_size={hidden}", f"trainer.iterations={iters}",
            "trainer.batch_size=64", f"eval.every_n_iters={every}", f"eval.subset_size={subset}",
            "logger=none", "trainer.checkpoint=false", "print_summary=false", f"run_dir={run_dir}",
            "seed=0",
        ])


def run_clplat(cfg) -> tuple[float, float]:
    import contextlib
    import io

    from clplat.experiment import run_experiment

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run_experiment(cfg).summary
    return time.perf_counter() - start, summary["avg_acc"]


def run_minimal(stream, hidden: int, every: int, strategy: str, iters: int, subset: int) -> tuple[float, float]:
    """The floor: the same arithmetic as clplat, nothing else."""
    start = time.perf_counter()
    torch.manual_seed(0)
    backbone = GRUBackbone(stream.input_shape[1], hidden)
    head = SingleHead(hidden, stream.num_classes)
    params = list(backbone.parameters()) + list(head.parameters())
    buffer = ReplayBuffer(500, generator=torch.Generator().manual_seed(1)) if strategy == "replay" else None
    xs, ys, offsets = [], [], [0]
    for exp in stream:  # fixed subsets, stacked once
        idx = torch.randperm(len(exp.test), generator=torch.Generator().manual_seed(exp.index))[:subset]
        xs.append(exp.test.x[idx]); ys.append(exp.test.y[idx]); offsets.append(offsets[-1] + len(idx))
    x_eval, y_eval = torch.cat(xs), torch.cat(ys)
    task_eval = torch.cat([torch.full((offsets[k + 1] - offsets[k],), k) for k in range(len(stream))])

    def evaluate(seen: int) -> list[float]:
        backbone.eval()
        with torch.inference_mode():
            end = offsets[seen]
            logits = head(backbone(x_eval[:end]))
            hits = torch.zeros(seen).index_add_(0, task_eval[:end], (logits.argmax(1) == y_eval[:end]).float())
            F.cross_entropy(logits, y_eval[:end], reduction="none")
        backbone.train()
        return (hits / torch.tensor([offsets[k + 1] - offsets[k] for k in range(seen)])).tolist()

    evaluate(1)
    step = 0
    for exp in stream:
        optimizer = torch.optim.Adam(params, lr=0.003)
        x, y, t = exp.train.x, exp.train.y, exp.train.task
        gen = torch.Generator().manual_seed(exp.index)
        order, pos = torch.randperm(len(x), generator=gen), 0
        for _ in range(iters):
            if pos >= len(x):
                order, pos = torch.randperm(len(x), generator=gen), 0
            index = order[pos:pos + 64]; pos += 64
            xb, yb = x[index], y[index]
            if buffer is not None and not buffer.is_empty:
                memory = buffer.sample(64)
                xb, yb = torch.cat([xb, memory["x"]]), torch.cat([yb, memory["y"]])
            loss = F.cross_entropy(head(backbone(xb)), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if buffer is not None:
                buffer.add(x[index], y[index], t[index])
            step += 1
            if step % every == 0:
                evaluate(exp.index + 1)
        accs = evaluate(exp.index + 1)
    return time.perf_counter() - start, sum(accs) / len(accs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--every", type=int, nargs="+", default=[10, 1])
    parser.add_argument("--strategies", nargs="+", default=["naive", "replay"])
    parser.add_argument("--iters", type=int, default=100, help="iterations per experience")
    parser.add_argument("--subset", type=int, default=200, help="test samples per task")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "e2e.json")
    args = parser.parse_args()

    from clplat.experiment import build_stream

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stream = build_stream(compose(16, 10, "naive", 1, 1, Path(tmp) / "probe"))
        for hidden in args.hidden:
            for every in args.every:
                for strategy in args.strategies:
                    times = {"clplat": [], "minimal": []}
                    accs = {}
                    for rep in range(args.reps):  # interleaved: both see the same machine state
                        cfg = compose(hidden, every, strategy, args.iters, args.subset, Path(tmp) / f"r{len(results)}_{rep}")
                        t, accs["clplat"] = run_clplat(cfg)
                        times["clplat"].append(t)
                        t, accs["minimal"] = run_minimal(stream, hidden, every, strategy, args.iters, args.subset)
                        times["minimal"].append(t)
                    med = {k: statistics.median(v) for k, v in times.items()}
                    row = {"hidden": hidden, "every_n_iters": every, "strategy": strategy,
                           "median_s": med, "ratio": med["clplat"] / med["minimal"], "avg_acc": accs, "times": times}
                    results.append(row)
                    print(f"GRU-{hidden:<4d} every {every:<3d} {strategy:<7s} clplat {med['clplat']:6.2f}s  "
                          f"minimal {med['minimal']:6.2f}s  ratio {row['ratio']:.2f}x  "
                          f"acc clplat {accs['clplat']:.3f} minimal {accs['minimal']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"threads": torch.get_num_threads()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
