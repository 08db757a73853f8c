"""What PyTorch itself offers for the CPU selective scan, timed against the fused kernel (``cpp``).

Cases, one process, one thread, the full Mamba options (``D``, ``z``, bias, softplus), forward +
backward unless noted:

- ``cpp``: ``selective_scan(backend="cpp")``;
- ``compiled_chunks``: ``torch.compile`` (inductor, CPU) of the sequential recurrence unrolled over
  chunks of ``--chunk`` steps, a Python loop over chunks, autograd through the compiled graphs; its
  compile time is reported (near zero when inductor's cache already holds the graphs);
- ``associative_scan``: ``torch._higher_order_ops.associative_scan`` with the ``(a, b)`` combine
  on the materialised ``(B, T, Din * N)`` gates and inputs, forward only, eager (its compiled
  path targets CUDA);
- ``reference``: the sequential reference backend (autograd through a Python loop).

Usage::

    python benchmarks/selective_scan_alternatives.py [--B 4 --T 256 --H 128] [--chunk 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from selective_scan_cpu import interleaved, problem  # noqa: E402

from clplat.kernels import selective_scan  # noqa: E402


def chunk_steps(h, dl, u, A, Bm, Cm):
    ys = []
    for t in range(dl.shape[1]):
        d = dl[:, t]
        h = torch.exp(d[:, :, None] * A) * h + (d * u[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    return h, torch.stack(ys, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=4)
    parser.add_argument("--T", type=int, default=256)
    parser.add_argument("--H", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "selective_scan_alternatives.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    Bsz, T, Din, N = args.B, args.T, 2 * args.H, 16
    p = problem(Bsz, T, Din)
    compiled = torch.compile(chunk_steps, dynamic=False)

    def backward(y: torch.Tensor) -> None:
        y.backward(torch.ones_like(y))
        for v in p.values():
            v.grad = None

    def run_compiled() -> None:
        dl = F.softplus(p["delta"] + p["delta_bias"])
        h = p["u"].new_zeros(Bsz, Din, N)
        ys = []
        for c in range(0, T, args.chunk):
            s = slice(c, c + args.chunk)
            h, y = compiled(h, dl[:, s], p["u"][:, s], p["A"], p["B"][:, s], p["C"][:, s])
            ys.append(y)
        backward((torch.cat(ys, 1) + p["u"] * p["D"]) * F.silu(p["z"]))

    def run_backend(backend: str):
        return lambda: backward(selective_scan(**p, delta_softplus=True, backend=backend))

    def run_associative() -> None:
        from torch._higher_order_ops.associative_scan import associative_scan

        with torch.no_grad():
            dl = F.softplus(p["delta"] + p["delta_bias"])
            a = torch.exp(dl[..., None] * p["A"]).reshape(Bsz, T, Din * N)
            b = ((dl * p["u"])[..., None] * p["B"][:, :, None, :]).reshape(Bsz, T, Din * N)
            associative_scan(lambda x, y: (x[0] * y[0], y[0] * x[1] + y[1]), (a, b), dim=1)

    start = time.perf_counter()
    run_compiled()
    compile_s = time.perf_counter() - start
    cases = {"cpp": run_backend("cpp"), "compiled_chunks": run_compiled, "reference": run_backend("reference"),
             "associative_scan_fwd_only": run_associative}
    med = {k: r["median_ms"] for k, r in interleaved(cases, args.repeats).items()}
    print(f"shape B={Bsz} T={T} Din={Din} N={N}; torch.compile of {args.chunk}-step chunks compiled in {compile_s:.0f} s")
    for name, ms in med.items():
        print(f"  {name:>26} {ms:9.1f} ms  ({ms / med['cpp']:.1f}x cpp)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["python", "benchmarks/selective_scan_alternatives.py", *sys.argv[1:]]),
        "torch": torch.__version__, "shape": {"B": Bsz, "T": T, "Din": Din, "N": N}, "chunk": args.chunk,
        "compile_s": compile_s, "median_ms": med, "vs_cpp": {k: v / med["cpp"] for k, v in med.items()},
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
