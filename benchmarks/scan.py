"""Linear-scan benchmark: the chunked torch scan against its two natural yardsticks.

For each shape ``(B, T, D)`` it times, in one process and side by side:

- ``scan``: :func:`clplat.kernels.linear_scan` (torch backend on CPU) forward + backward;
- ``loop``: autograd through a Python loop over ``unbind`` steps (what a naive RNN layer does;
  ``unbind``/``stack`` rather than slicing, which would be O(T^2));
- ``cumsum``: ``torch.cumsum`` forward + backward on a tensor of the same shape -- the cheapest
  op with the same memory pattern, i.e. a practical floor;
- with CUDA: the Triton backend against the torch backend on the GPU, with achieved GB/s
  (ideal traffic: forward reads a, b and writes h; backward reads a, h, dL/dh and writes db, da).

Every backward uses the same fixed random upstream gradient. Times are medians over
``--repeats`` runs after a warm-up; the loop baseline is capped (``--loop-repeats``, and one run
at T >= 16384) because it takes seconds there. Thread count is PyTorch's default.

Usage::

    python benchmarks/scan.py [--out benchmarks/results/scan.json] [--repeats 5] [--quick]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clplat.kernels import linear_scan

T_VALUES = (256, 1024, 4096, 16384)
WIDTHS = ((1, 64), (8, 256))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1, mins: dict | None = None,
    key: str = "",
) -> float:
    """Median wall time of ``fn`` in milliseconds, after ``warmup`` untimed calls.

    The minimum is stored in ``mins[key]`` too: on a shared machine it is the better estimate
    of the uncontended cost, while the median is what a user typically sees.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    if mins is not None:
        mins[key] = min(times)
    return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Per-function wall times (ms) with the functions run in turn within every repeat."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def loop_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The baseline: ``h_t = a_t * h_{t-1} + b_t`` step by step under autograd."""
    state = torch.zeros_like(b[:, 0])
    out = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        state = a_t * state + b_t
        out.append(state)
    return torch.stack(out, dim=1)


def _inputs(B: int, T: int, D: int, device: torch.device):
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = (0.6 + 0.4 * torch.rand(B, T, D, generator=gen)).to(device).requires_grad_()
    b = torch.randn(B, T, D, generator=gen).to(device).requires_grad_()
    g = torch.randn(B, T, D, generator=gen).to(device)
    return a, b, g


def bench_cpu_shape(B: int, T: int, D: int, repeats: int, loop_repeats: int) -> dict:
    device = torch.device("cpu")
    a, b, g = _inputs(B, T, D, device)
    x = b.detach().clone().requires_grad_()

    # Gradients are reset before every backward so each run stores fresh grads instead of
    # accumulating into old ones (which would add a read-modify-write pass per input).
    def scan_fb() -> None:
        a.grad = b.grad = None
        linear_scan(a, b, backend="torch").backward(g)

    def scan_f() -> None:
        with torch.no_grad():
            linear_scan(a, b, backend="torch")

    def cumsum_fb() -> None:
        x.grad = None
        torch.cumsum(x, 1).backward(g)

    def cumsum_f() -> None:
        with torch.no_grad():
            torch.cumsum(x, 1)

    def loop_fb() -> None:
        a.grad = b.grad = None
        loop_scan(a, b).backward(g)

    row: dict = {"B": B, "T": T, "D": D}
    # Interleave the candidates repeat by repeat, so that load from other processes on a shared
    # machine hits all of them alike and the ratios stay meaningful.
    timed = interleaved_ms({"scan_fwd": scan_f, "scan_fwdbwd": scan_fb, "cumsum_fwd": cumsum_f,
                            "cumsum_fwdbwd": cumsum_fb}, repeats, device)
    mins: dict = {}
    for name, times in timed.items():
        row[f"{name}_ms"] = statistics.median(times)
        mins[f"{name}_ms"] = min(times)
    n_loop = 1 if T >= 16384 else loop_repeats
    row["loop_fwdbwd_ms"] = median_ms(loop_fb, n_loop, device, warmup=0 if T >= 4096 else 1, mins=mins,
                                      key="loop_fwdbwd_ms")
    row["loop_repeats"] = n_loop
    row["speedup_vs_loop"] = row["loop_fwdbwd_ms"] / row["scan_fwdbwd_ms"]
    row["ratio_vs_cumsum"] = row["scan_fwdbwd_ms"] / row["cumsum_fwdbwd_ms"]
    row["min_ms"] = mins
    row["speedup_vs_loop_min"] = mins["loop_fwdbwd_ms"] / mins["scan_fwdbwd_ms"]
    row["ratio_vs_cumsum_min"] = mins["scan_fwdbwd_ms"] / mins["cumsum_fwdbwd_ms"]
    # Numerical sanity in the same run: the fast path agrees with the loop.
    with torch.no_grad():
        err = (linear_scan(a, b, backend="torch") - loop_scan(a, b)).abs().max().item()
    row["max_abs_err_vs_loop"] = err
    return row


def bench_cuda_shape(B: int, T: int, D: int, repeats: int) -> dict:
    device = torch.device("cuda")
    a, b, g = _inputs(B, T, D, device)
    row = {"B": B, "T": T, "D": D}
    for backend in ("triton", "torch"):
        def fwd(backend: str = backend) -> None:
            with torch.no_grad():
                linear_scan(a, b, backend=backend)

        def fb(backend: str = backend) -> None:
            a.grad = b.grad = None
            linear_scan(a, b, backend=backend).backward(g)

        row[f"{backend}_fwd_ms"] = median_ms(fwd, repeats, device, warmup=2)
        row[f"{backend}_fwdbwd_ms"] = median_ms(fb, repeats, device, warmup=2)
    n, size = a.numel(), a.element_size()
    row["triton_fwd_GBps"] = 3 * n * size / (row["triton_fwd_ms"] * 1e-3) / 1e9
    row["triton_fwdbwd_GBps"] = 8 * n * size / (row["triton_fwdbwd_ms"] * 1e-3) / 1e9
    row["triton_speedup_vs_torch_fwdbwd"] = row["torch_fwdbwd_ms"] / row["triton_fwdbwd_ms"]
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/scan.json", help="JSON output path")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median)")
    parser.add_argument("--loop-repeats", type=int, default=3, help="timed runs of the loop baseline")
    parser.add_argument("--quick", action="store_true", help="only T in (256, 1024)")
    args = parser.parse_args(argv)

    t_values = T_VALUES[:2] if args.quick else T_VALUES
    result: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu": [],
        "cuda": [],
    }
    header = f"{'B':>2} {'T':>6} {'D':>4} | {'scan f+b':>9} {'cumsum f+b':>10} {'loop f+b':>9} | " \
             f"{'x vs loop':>9} {'/cumsum':>7} | {'scan fwd':>8} {'cumsum fwd':>10} | {'err':>8}"
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, times in ms (median)")
    print(header)
    print("-" * len(header))
    for B, D in WIDTHS:
        for T in t_values:
            r = bench_cpu_shape(B, T, D, args.repeats, args.loop_repeats)
            result["cpu"].append(r)
            print(f"{B:>2} {T:>6} {D:>4} | {r['scan_fwdbwd_ms']:>9.2f} {r['cumsum_fwdbwd_ms']:>10.2f} "
                  f"{r['loop_fwdbwd_ms']:>9.1f} | {r['speedup_vs_loop']:>8.1f}x {r['ratio_vs_cumsum']:>6.2f}x | "
                  f"{r['scan_fwd_ms']:>8.2f} {r['cumsum_fwd_ms']:>10.2f} | {r['max_abs_err_vs_loop']:>8.1e}",
                  flush=True)
        by_t = {r["T"]: r["scan_fwdbwd_ms"] for r in result["cpu"] if (r["B"], r["D"]) == (B, D)}
        if 4096 in by_t and 16384 in by_t:
            ratio = by_t[16384] / by_t[4096]
            result.setdefault("t_scaling_16384_over_4096", {})[f"B{B}_D{D}"] = ratio
            print(f"   time(T=16384) / time(T=4096) at B={B}, D={D}: {ratio:.2f} (linear = 4)")

    if torch.cuda.is_available():
        print(f"\nCUDA {torch.cuda.get_device_name()}: triton vs torch backend, fp32")
        for B, D in WIDTHS + ((8, 1536),):
            for T in t_values + ((65536,) if not args.quick else ()):
                r = bench_cuda_shape(B, T, D, args.repeats)
                result["cuda"].append(r)
                print(f"{B:>2} {T:>6} {D:>5} | triton f+b {r['triton_fwdbwd_ms']:.3f} ms "
                      f"({r['triton_fwdbwd_GBps']:.0f} GB/s) | torch f+b {r['torch_fwdbwd_ms']:.3f} ms | "
                      f"x{r['triton_speedup_vs_torch_fwdbwd']:.1f} | triton fwd {r['triton_fwd_GBps']:.0f} GB/s",
                      flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
