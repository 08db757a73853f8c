"""CPU selective scan: the fused kernel against roofline-style floors, and the data behind ``auto``.

Section ``floor`` (one shape, Mamba-130M's ratios scaled down: ``Din = 2 H``, ``N = 16``; default
B=32, T=1024, H=128), all timed interleaved in one process (each repeat runs every case once):

- ``cpp_fwd`` / ``cpp_fwd_bwd``: ``selective_scan(backend="cpp")`` with everything Mamba passes
  (``D``, ``z``, ``delta_bias``, softplus), forward without grad / forward + backward;
  ``cpp_fwd_bwd_last_step``: the same with a gradient at the last step only (sequence
  classification), whose adjoint decays through the denormal range;
- ``exp_pass`` (compute floor): one vectorised pass of ``exp(delta A)`` over the
  ``(B, T, Din, N)`` volume in the same compiled library, nothing stored -- the exponentials the
  forward cannot avoid;
- ``eager_exp_pass`` (memory floor of an unfused implementation): one ``torch.exp`` over a
  materialised ``(B, T, Din, N)`` tensor;
- ``eager_exp_fwd_bwd`` (the same floor for a training pass): that ``torch.exp`` plus its backward,
  one ``torch.mul`` of the incoming gradient by the result, each over the materialised volume into
  preallocated outputs -- the least an unfused forward + backward over the volume must move;
- ``linear_scan_fwd`` / ``linear_scan_fwd_bwd``: :func:`clplat.kernels.linear_scan` (torch backend)
  over ``(B, T, Din * N)``: the generic scan on the same volume;
- with ``--old``: the ``reference`` and ``torch`` selective-scan backends (one timed run each).

Section ``grid`` (``--grid``): forward + backward of every CPU backend over B x T x Din (N = 16),
the fastest one (by the minimum over the interleaved runs), and what ``auto``'s rule picks with and without the kernel
(:func:`clplat.kernels.resolve_selective_backend`); the script reports any point where the rule
is slower than the fastest backend available.

One thread by default (``--threads``), as ``benchmarks/backbones.py``. Usage::

    python benchmarks/selective_scan_cpu.py [--B 32 --T 1024 --H 128] [--repeats 5] [--old] [--grid | --grid-only]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clplat  # noqa: E402, F401 -- before torch: clplat's CPU memory policy (clplat.allocator)
import torch  # noqa: E402

from clplat.allocator import selected_policy  # noqa: E402
from clplat.kernels import linear_scan, resolve_selective_backend, selective_scan  # noqa: E402
from clplat.kernels.selective_cpu import cpu_kernel_available, exp_pass_cpu  # noqa: E402

N_STATE = 16


def problem(Bsz: int, T: int, Din: int, N: int = N_STATE, grad: bool = True) -> dict[str, torch.Tensor]:
    """Mamba-like inputs: delta before softplus around log(expm1(dt)) with dt in [1e-3, 0.1], A = -(1..N)."""
    gen = torch.Generator().manual_seed(0)
    dt = torch.exp(torch.rand(Din, generator=gen) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                   + torch.log(torch.tensor(1e-3)))
    p = {
        "u": torch.randn(Bsz, T, Din, generator=gen),
        "delta": 0.1 * torch.randn(Bsz, T, Din, generator=gen),
        "A": -torch.arange(1, N + 1, dtype=torch.float32).repeat(Din, 1),
        "B": torch.randn(Bsz, T, N, generator=gen),
        "C": torch.randn(Bsz, T, N, generator=gen),
        "D": torch.ones(Din),
        "z": torch.randn(Bsz, T, Din, generator=gen),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),
    }
    return {k: v.requires_grad_(grad) for k, v in p.items()}


def fwd_bwd(p: dict[str, torch.Tensor], backend: str, last_step_only: bool = False) -> Callable[[], None]:
    """Forward + backward; ``last_step_only``: the output gradient is zero except at the last step,
    as under a sequence-classification loss (the adjoint then decays through tiny values)."""
    def run() -> None:
        y = selective_scan(**p, delta_softplus=True, backend=backend)
        grad = torch.ones_like(y)
        if last_step_only:
            grad[:, :-1] = 0
        y.backward(grad)
        for v in p.values():
            v.grad = None
    return run


def fwd_only(p: dict[str, torch.Tensor], backend: str) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            selective_scan(**p, delta_softplus=True, backend=backend)
    return run


def interleaved(cases: dict[str, Callable[[], None]], repeats: int, once: set[str] = frozenset()) -> dict[str, dict]:
    """Median/min ms per case; one warm-up each, then ``repeats`` rounds running every case in turn."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats):
        for name, fn in cases.items():
            if name in once and r > 0:
                continue
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "repeats": len(v)} for k, v in times.items()}


def floor_section(Bsz: int, T: int, H: int, repeats: int, old: bool, scan: bool) -> dict:
    Din = 2 * H
    p = problem(Bsz, T, Din)
    dl = p["delta"].detach()
    A = p["A"].detach()
    volume = torch.empty(Bsz, T, Din, N_STATE)
    src = torch.randn(Bsz, T, Din, N_STATE).mul_(-0.01)
    grad_out, grad_in = torch.ones_like(volume), torch.empty_like(volume)

    def eager_exp_fwd_bwd() -> None:
        torch.exp(src, out=volume)
        torch.mul(grad_out, volume, out=grad_in)

    cases: dict[str, Callable[[], None]] = {
        "cpp_fwd": fwd_only(p, "cpp"),
        "cpp_fwd_bwd": fwd_bwd(p, "cpp"),
        "cpp_fwd_bwd_last_step": fwd_bwd(p, "cpp", last_step_only=True),
        "exp_pass": lambda: exp_pass_cpu(dl, A),
        "eager_exp_pass": lambda: torch.exp(src, out=volume),
        "eager_exp_fwd_bwd": eager_exp_fwd_bwd,
    }
    if scan:
        a = src.view(Bsz, T, Din * N_STATE).exp().requires_grad_()
        b = torch.randn(Bsz, T, Din * N_STATE, requires_grad=True)

        def ls_fwd() -> None:
            with torch.no_grad():
                linear_scan(a, b, backend="torch")

        def ls_fwd_bwd() -> None:
            h = linear_scan(a, b, backend="torch")
            h.backward(torch.ones_like(h))
            a.grad = b.grad = None

        cases.update(linear_scan_fwd=ls_fwd, linear_scan_fwd_bwd=ls_fwd_bwd)
    once = set()
    if old:
        cases.update(reference_fwd_bwd=fwd_bwd(p, "reference"), torch_fwd_bwd=fwd_bwd(p, "torch"))
        once = {"reference_fwd_bwd", "torch_fwd_bwd"}
    res = interleaved(cases, repeats, once)
    m = {k: v["median_ms"] for k, v in res.items()}
    ratios = {
        "cpp_fwd / exp_pass": m["cpp_fwd"] / m["exp_pass"],
        "cpp_fwd_bwd / exp_pass": m["cpp_fwd_bwd"] / m["exp_pass"],
        "cpp_fwd / eager_exp_pass": m["cpp_fwd"] / m["eager_exp_pass"],
        "cpp_fwd_bwd / eager_exp_pass": m["cpp_fwd_bwd"] / m["eager_exp_pass"],
        "cpp_fwd_bwd / eager_exp_fwd_bwd": m["cpp_fwd_bwd"] / m["eager_exp_fwd_bwd"],
        "cpp_fwd_bwd_last_step / cpp_fwd_bwd": m["cpp_fwd_bwd_last_step"] / m["cpp_fwd_bwd"],
    }
    if scan:
        ratios["cpp_fwd / linear_scan_fwd"] = m["cpp_fwd"] / m["linear_scan_fwd"]
        ratios["cpp_fwd_bwd / linear_scan_fwd_bwd"] = m["cpp_fwd_bwd"] / m["linear_scan_fwd_bwd"]
    if old:
        ratios["reference_fwd_bwd / cpp_fwd_bwd"] = m["reference_fwd_bwd"] / m["cpp_fwd_bwd"]
        ratios["torch_fwd_bwd / cpp_fwd_bwd"] = m["torch_fwd_bwd"] / m["cpp_fwd_bwd"]
    return {"shape": {"B": Bsz, "T": T, "Din": Din, "N": N_STATE, "volume": Bsz * T * Din * N_STATE},
            "cases": res, "ratios": ratios}


def grid_section(repeats: int, max_volume: float) -> dict:
    rows = []
    for Bsz, T, Din in itertools.product((1, 8, 32), (16, 64, 256, 1024), (16, 64, 256)):
        volume = Bsz * T * Din * N_STATE
        if volume > max_volume:
            continue
        p = problem(Bsz, T, Din)
        backends = ["cpp", "reference", "torch"]
        res = interleaved({b: fwd_bwd(p, b) for b in backends}, repeats)
        # decided on the minimum of the interleaved runs: on a shared machine the best estimate of
        # each backend's own cost (a preempted run inflates a median of 3 at these sub-ms sizes)
        m = {b: res[b]["min_ms"] for b in backends}
        fastest = min(m, key=m.get)
        fallback_fastest = min(("reference", "torch"), key=m.get)
        auto = resolve_selective_backend("auto", torch.device("cpu"), Bsz, T, Din, N_STATE, kernel_available=True)
        fallback = resolve_selective_backend("auto", torch.device("cpu"), Bsz, T, Din, N_STATE,
                                             kernel_available=False)
        row = {"B": Bsz, "T": T, "Din": Din, "N": N_STATE, "min_ms": m,
               "median_ms": {b: res[b]["median_ms"] for b in backends}, "fastest": fastest, "auto": auto,
               "auto_slowdown": m[auto] / m[fastest], "fallback": fallback,
               "fallback_slowdown": m[fallback] / m[fallback_fastest]}
        rows.append(row)
        print(f"B={Bsz:>2} T={T:>4} Din={Din:>3}  " + "  ".join(f"{b} {v:8.2f}" for b, v in m.items())
              + f"  fastest {fastest:>9}  auto {auto} (x{row['auto_slowdown']:.2f})"
              + f"  no-kernel {fallback} (x{row['fallback_slowdown']:.2f})", flush=True)
    return {"rows": rows,
            "auto_never_slower": all(r["auto"] == r["fastest"] for r in rows),
            "fallback_matches_faster": all(r["fallback_slowdown"] <= 1.0 for r in rows),
            "cpp_speedup_range": [min(min(r["min_ms"]["reference"], r["min_ms"]["torch"]) / r["min_ms"]["cpp"]
                                      for r in rows),
                                  max(min(r["min_ms"]["reference"], r["min_ms"]["torch"]) / r["min_ms"]["cpp"]
                                      for r in rows)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=32)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--H", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--old", action="store_true", help="also time the reference and torch backends (slow)")
    parser.add_argument("--no-linear-scan", action="store_true", help="skip the linear_scan floor (needs ~4 GB)")
    parser.add_argument("--grid", action="store_true", help="also run the backend-choice grid")
    parser.add_argument("--grid-only", action="store_true", help="only the grid (keeps the file's floor section)")
    # without --grid / --grid-only the file's grid section is kept
    parser.add_argument("--grid-repeats", type=int, default=5)
    parser.add_argument("--grid-max-volume", type=float, default=40e6)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "selective_scan_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not cpu_kernel_available():
        sys.exit("the CPU kernel did not build on this machine; nothing to measure")
    payload = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
               "processor": platform.processor() or platform.uname().processor,
        "cpu_memory_policy": selected_policy(),
               "command": " ".join(["python", "benchmarks/selective_scan_cpu.py", *sys.argv[1:]])}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.grid_only:
        payload = {**previous, **{k: v for k, v in payload.items() if k != "command"},
                   "grid_command": payload["command"]}
    else:
        if not args.grid:  # the floor alone: the file's grid section stays
            payload.update({k: previous[k] for k in ("grid", "grid_command") if k in previous})
        floor = floor_section(args.B, args.T, args.H, args.repeats, args.old, not args.no_linear_scan)
        payload["floor"] = floor
        print(f"shape {floor['shape']}")
        for name, r in floor["cases"].items():
            print(f"  {name:>22} {r['median_ms']:10.1f} ms (min {r['min_ms']:.1f}, {r['repeats']} runs)")
        for name, v in floor["ratios"].items():
            print(f"  {name:>36} {v:7.2f}")
    if args.grid or args.grid_only:
        payload["grid"] = grid_section(args.grid_repeats, args.grid_max_volume)
        g = payload["grid"]
        print(f"auto never slower than the fastest: {g['auto_never_slower']}; "
              f"no-kernel rule matches the faster fallback: {g['fallback_matches_faster']}; "
              f"cpp speed-up over the best other backend: {g['cpp_speedup_range'][0]:.1f}-{g['cpp_speedup_range'][1]:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
