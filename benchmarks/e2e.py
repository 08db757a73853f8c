"""End-to-end cost of a continual-learning run: clplat vs a minimal loop vs Avalanche.

The same experiment — Split MNIST-1D, 5 experiences, a GRU, batch 64, ``--epochs`` passes per
experience (a fixed number of iterations: 13 per pass of 800 samples), evaluation every ``n``
iterations on ``--subset`` test samples of every seen task — run three ways in one process,
interleaved over several repetitions (every repetition runs all three back to back, so each sees
the same machine state):

- ``clplat``: ``run_experiment`` on the composed config (Lightning Trainer, evaluator, strategy
  hooks, results table, metrics.csv, summary.json; ``logger=none trainer.checkpoint=false
  plots=false``, ``--plots`` adds the three run plots, a fixed cost per run);
- ``minimal``: the floor — the same data tensors, the same model and optimizer, the same
  batching, the same evaluation arithmetic, written as a bare loop;
- ``avalanche``: Avalanche 0.6 (``avalanche-lib``) ``Naive`` / ``Replay`` (``mem_size`` 500) with
  ``eval_every=n, peval_mode="iteration"`` over a test stream of the same fixed subsets (seen
  tasks only), the same model class, optimizer and data tensors (a benchmark built from them with
  Avalanche's ``class_incremental_benchmark``), an accuracy metric and no loggers.

The minimal loop and Avalanche run without the ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` that importing
Lightning puts into this process's environment: neither imports Lightning on its own, and under
that variable every ``optimizer.step()`` of torch 2.14 on a machine without a GPU loads NVML again
(~0.3 ms per step, see ``clplat.module.skip_graph_capture_check``), a cost they would not pay
as standalone scripts.

``--gru`` picks the GRU all three run (``backbone.implementation``): ``auto``, clplat's default,
uses its hand-written CPU pass where that measured faster than ``nn.GRU`` (a GRU-16 training
batch; GRU-128 at batch 64 stays on ``nn.GRU``), ``torch`` is ``nn.GRU`` everywhere. A faster
model shrinks everyone's arithmetic, so the same framework overhead becomes a larger ratio.

Prints medians, ratios to the minimal loop and final average accuracy of each, and writes JSON
(with the medians of the per-repetition ratios too, ``paired_ratio``).
Only the run is timed (imports and data generation are outside the clock). Example::

    python benchmarks/e2e.py --hidden 16 128 --every 10 1 --strategies naive replay --reps 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clplat import config_dir  # noqa: E402
from clplat.backbones import GRUBackbone  # noqa: E402
from clplat.buffers import ReplayBuffer  # noqa: E402
from clplat.heads import SingleHead  # noqa: E402
from clplat.stream import Stream  # noqa: E402
from clplat.seeds import SeedStream, seeded_generator  # noqa: E402

BATCH = 64
LR = 0.003
BUFFER = 500


def compose(hidden: int, every: int, strategy: str, epochs: int, subset: int, run_dir: Path,
            n_experiences: int = 5, plots: bool = False, gru: str = "auto"):
    """The benchmark's clplat config; ``every=0`` evaluates at the boundaries only."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=[
            f"strategy={strategy}", f"backbone.hidden_size={hidden}", f"trainer.epochs={epochs}",
            f"trainer.batch_size={BATCH}", f"optimizer.lr={LR}", f"eval.every_n_iters={every or 'null'}",
            f"eval.subset_size={subset}", "logger=none", "trainer.checkpoint=false", "print_summary=false",
            f"plots={plots}", f"stream.n_experiences={n_experiences}",
            f"stream.classes_per_experience={10 // n_experiences}", f"run_dir={run_dir}", "seed=0",
            f"backbone.implementation={gru}",
        ] + ([f"strategy.buffer_size={BUFFER}"] if strategy == "replay" else []))


class Model(nn.Module):
    """The GRU backbone and the single head, as clplat builds them (one module for Avalanche);
    ``gru`` is ``backbone.implementation``, the same for all three runners."""

    def __init__(self, stream: Stream, hidden: int, gru: str = "auto"):
        super().__init__()
        self.backbone = GRUBackbone(stream.input_shape[1], hidden, implementation=gru)
        self.head = SingleHead(hidden, stream.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def eval_subsets(stream: Stream, subset: int, seed: int) -> list[torch.Tensor]:
    """The fixed test indices of every task, drawn as clplat's evaluator draws them."""
    return [torch.randperm(len(exp.test), generator=seeded_generator(seed, SeedStream.EVAL_SUBSET, exp.index))[:subset].sort().values
            for exp in stream]


@contextlib.contextmanager
def without_lightning_env():
    """The environment of a script that never imported Lightning (see the module docstring)."""
    saved = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = saved


def run_clplat(cfg) -> tuple[float, float]:
    from clplat.experiment import run_experiment

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run_experiment(cfg).summary
    return time.perf_counter() - start, summary["avg_acc"]


def run_minimal(cfg, hidden: int, every: int, strategy: str, epochs: int, subset: int,
                eval_clock: list[float] | None = None) -> tuple[float, float]:
    """The floor: the same arithmetic as clplat (``every=0``: boundary evaluations only), nothing else.
    Like the other two it starts from the config: generating the data is inside the clock.
    Every random draw comes from the generator clplat uses for it (initialisation after seeding
    the global RNG, each experience's batch order, the buffer's sampling, the evaluation subsets),
    so with the same model the two compute the same numbers and end at the same accuracy.
    ``eval_clock`` (one float) accumulates the time spent in evaluation."""
    from clplat.experiment import build_stream

    start = time.perf_counter()
    seed = cfg.seed
    torch.manual_seed(seed)
    stream = build_stream(cfg)
    subsets = eval_subsets(stream, subset, seed)
    model = Model(stream, hidden, cfg.backbone.implementation)
    buffer = ReplayBuffer(BUFFER, generator=seeded_generator(seed, SeedStream.BUFFER)) if strategy == "replay" else None
    x_eval = torch.cat([exp.test.x[idx] for exp, idx in zip(stream, subsets)])
    y_eval = torch.cat([exp.test.y[idx] for exp, idx in zip(stream, subsets)])
    sizes = torch.tensor([len(idx) for idx in subsets])
    offsets = [0, *torch.cumsum(sizes, 0).tolist()]
    task_eval = torch.repeat_interleave(torch.arange(len(stream)), sizes)

    def evaluate(seen: int) -> list[float]:
        began = time.perf_counter()
        model.eval()
        with torch.inference_mode():
            end = offsets[seen]
            logits, y = model(x_eval[:end]), y_eval[:end]
            hits = (logits.argmax(1) == y).double()
            accs = torch.zeros(seen, dtype=torch.float64).index_add_(0, task_eval[:end], hits) / sizes[:seen]
            losses = torch.zeros(seen, dtype=torch.float64).index_add_(
                0, task_eval[:end], F.cross_entropy(logits, y, reduction="none").double())  # recorded, as clplat does
            del losses
        model.train()
        accs = accs.tolist()
        if eval_clock is not None:
            eval_clock[0] += time.perf_counter() - began
        return accs

    evaluate(1)
    step = 0
    for exp in stream:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        x, y, t = exp.train.x, exp.train.y, exp.train.task
        gen = seeded_generator(seed, SeedStream.TRAIN_BATCHES, exp.index)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for index in order.split(BATCH):
                xb, yb = x[index], y[index]
                if buffer is not None and not buffer.is_empty:
                    memory = buffer.sample(len(index))
                    xb, yb = torch.cat([xb, memory["x"]]), torch.cat([yb, memory["y"]])
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if buffer is not None:
                    buffer.add(x[index], y[index], t[index])
                step += 1
                if every and step % every == 0:
                    evaluate(exp.index + 1)
        accs = evaluate(exp.index + 1)
    return time.perf_counter() - start, sum(accs) / len(accs)


def avalanche_benchmark(stream: Stream, subsets: list[torch.Tensor]) -> Any:
    """An Avalanche benchmark over the stream's own tensors: the same experiences (class order
    kept) with the fixed evaluation subsets as its test stream."""
    from clplat.streams.avalanche_adapter import benchmark_from_tensors

    train_x = torch.cat([exp.train.x for exp in stream])
    train_y = torch.cat([exp.train.y for exp in stream])
    test_x = torch.cat([exp.test.x[idx] for exp, idx in zip(stream, subsets)])
    test_y = torch.cat([exp.test.y[idx] for exp, idx in zip(stream, subsets)])
    order = [c for exp in stream for c in exp.classes]
    return benchmark_from_tensors((train_x, train_y), (test_x, test_y), len(stream), order)


def run_avalanche(cfg, hidden: int, every: int, strategy: str, epochs: int, subset: int) -> tuple[float, float]:
    """Avalanche's own strategy templates with iteration-mode periodic evaluation on seen tasks
    (data generation and building the benchmark inside the clock, as for the others)."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive, Replay

    from clplat.experiment import build_stream

    start = time.perf_counter()
    stream = build_stream(cfg)
    benchmark = avalanche_benchmark(stream, eval_subsets(stream, subset, cfg.seed))
    torch.manual_seed(cfg.seed)
    model = Model(stream, hidden, cfg.backbone.implementation)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    common = dict(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=LR), criterion=nn.CrossEntropyLoss(),
                  train_mb_size=BATCH, train_epochs=epochs, eval_mb_size=4096, evaluator=evaluator,
                  eval_every=every, peval_mode="iteration")
    cl = Replay(mem_size=BUFFER, **common) if strategy == "replay" else Naive(**common)
    test = benchmark.test_stream
    for k, exp in enumerate(benchmark.train_stream):
        cl.optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # fresh state per experience, as above
        cl.train(exp, eval_streams=[test[: k + 1]])
    metrics = cl.evaluator.get_last_metrics()
    accs = [v for key, v in metrics.items() if key.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    return time.perf_counter() - start, sum(accs) / len(accs)


def paired_ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """Medians of the per-repetition ratios: the runners of one repetition ran back to back, so
    their ratio cancels slow drifts of the machine that the ratio of medians keeps."""
    def median_ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    out = {"clplat_over_minimal": median_ratio("clplat", "minimal")}
    if "avalanche" in times:
        out["avalanche_over_minimal"] = median_ratio("avalanche", "minimal")
        out["avalanche_over_clplat"] = median_ratio("avalanche", "clplat")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--gru", nargs="+", default=["auto"], choices=["auto", "torch", "bptt"],
                        help="backbone.implementation of the GRU all three run: auto (clplat's default: its "
                             "hand-written CPU pass where faster), torch (nn.GRU)")
    parser.add_argument("--every", type=int, nargs="+", default=[10, 1])
    parser.add_argument("--strategies", nargs="+", default=["naive", "replay"])
    parser.add_argument("--epochs", type=int, default=8, help="passes per experience (13 iterations each)")
    parser.add_argument("--subset", type=int, default=200, help="test samples per task")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-avalanche", action="store_true", help="skip the Avalanche runs")
    parser.add_argument("--plots", action="store_true",
                        help="let clplat draw its three run plots (a fixed cost per run, off by default)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "e2e.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from clplat.experiment import build_stream

    runners = ["clplat", "minimal"] + ([] if args.no_avalanche else ["avalanche"])
    if not args.no_avalanche:
        import avalanche.training  # noqa: F401  (its import takes seconds: outside the clock)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stream = build_stream(compose(16, 10, "naive", 1, 1, Path(tmp) / "probe"))
        iters = args.epochs * math.ceil(len(stream[0].train) / BATCH)
        print(f"Split MNIST-1D, {len(stream)} experiences, {iters} iterations each, batch {BATCH}, "
              f"{args.subset} eval samples per seen task, {torch.get_num_threads()} threads", flush=True)
        for hidden, gru in [(h, g) for h in args.hidden for g in args.gru]:
            for every in args.every:
                for strategy in args.strategies:
                    times: dict[str, list[float]] = {name: [] for name in runners}
                    accs: dict[str, float] = {}
                    for rep in range(args.reps):  # interleaved: all runners see the same machine state
                        cfg = compose(hidden, every, strategy, args.epochs, args.subset,
                                      Path(tmp) / f"r{len(results)}_{rep}", plots=args.plots, gru=gru)
                        for name in runners:
                            if name == "clplat":
                                seconds, acc = run_clplat(cfg)
                            elif name == "minimal":
                                with without_lightning_env():
                                    seconds, acc = run_minimal(cfg, hidden, every, strategy, args.epochs, args.subset)
                            else:
                                with contextlib.redirect_stdout(io.StringIO()), without_lightning_env():
                                    seconds, acc = run_avalanche(cfg, hidden, every, strategy, args.epochs, args.subset)
                            times[name].append(seconds)
                            accs[name] = acc
                    med = {name: statistics.median(v) for name, v in times.items()}
                    ratios = {name: med[name] / med["minimal"] for name in runners}
                    if "avalanche" in med:
                        ratios["avalanche_over_clplat"] = med["avalanche"] / med["clplat"]
                    row = {"hidden": hidden, "gru": gru, "every_n_iters": every, "strategy": strategy, "median_s": med,
                           "ratio_to_minimal": ratios, "paired_ratio": paired_ratios(times), "avg_acc": accs,
                           "times": times}
                    results.append(row)
                    cells = "  ".join(f"{name} {med[name]:6.2f}s ({ratios[name]:.2f}x, acc {accs[name]:.3f})"
                                      for name in runners)
                    extra = f"  avalanche/clplat {ratios['avalanche_over_clplat']:.2f}x" if "avalanche" in med else ""
                    print(f"GRU-{hidden:<4d} {gru:5s} every {every:<3d} {strategy:<7s} {cells}{extra}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
               "torch": torch.__version__}
    args.out.write_text(json.dumps({"machine": machine, "epochs": args.epochs, "subset": args.subset, "plots": args.plots,
                                    "reps": args.reps, "results": results}, indent=2))


if __name__ == "__main__":
    main()
