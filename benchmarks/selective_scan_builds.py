"""The fused CPU selective-scan kernel: two builds side by side, in one process, interleaved.

For changes to ``clplat/kernels/selective_cpu.cpp``: each build is the source at a git revision
(or the working tree) compiled with the kernel's flags plus optional extra ones, and both run the
forward and the backward on the same buffers, allocated once (so the times are the kernel's own,
without PyTorch's allocation or autograd), at Mamba-130M's ratios scaled down (``Din = 2 H``,
``N = 16``; default B=32, T=1024, H=128), with everything Mamba passes (``D``, ``z``, bias,
softplus). Prints each build's median/min time, the ratios ``after / before`` and the largest
relative differences of the outputs and gradients between the builds. Examples::

    python benchmarks/selective_scan_builds.py --before 47ed9d4            # a revision vs the working tree
    python benchmarks/selective_scan_builds.py --before HEAD --before-flags=-DCLPLAT_KEEP_DENORMALS \\
        --last-step-only                                                    # the denormal flush, on and off
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clplat  # noqa: E402, F401 -- before torch: clplat's CPU allocator default (clplat.allocator)
import torch  # noqa: E402

import clplat.kernels.selective_cpu as kernel  # noqa: E402

SOURCE = "clplat/kernels/selective_cpu.cpp"


def build(rev: str, extra_flags: list[str], workdir: Path, name: str) -> ctypes.CDLL:
    """Compile the kernel source of ``rev`` ('worktree': the file as it is now) into a library."""
    src = workdir / f"{name}.cpp"
    if rev == "worktree":
        src.write_bytes((ROOT / SOURCE).read_bytes())
    else:
        src.write_bytes(subprocess.run(["git", "show", f"{rev}:{SOURCE}"], cwd=ROOT, check=True,
                                       capture_output=True).stdout)
    lib_path = workdir / f"{name}.so"
    compiler = os.environ.get("CXX") or "g++"
    subprocess.run([compiler, *kernel._FLAG_SETS[0], *extra_flags, *kernel._COMMON, str(src), "-o", str(lib_path)],
                   check=True)
    lib = ctypes.CDLL(str(lib_path))
    kernel._declare(lib)
    return lib


def runners(lib: ctypes.CDLL, t: dict[str, torch.Tensor], shape: tuple[int, int, int, int], K: int
            ) -> tuple[Callable[[], None], Callable[[], None]]:
    Bsz, L, Din, N = shape
    fwd, bwd = lib.clplat_selective_fwd_f32, lib.clplat_selective_bwd_f32
    ptr = {k: v.data_ptr() for k, v in t.items()}

    def forward() -> None:
        fwd(ptr["u"], Din, ptr["delta"], Din, ptr["At"], ptr["B"], N, ptr["C"], N, ptr["D"], ptr["z"], Din,
            ptr["bias"], 1, None, 0, ptr["y"], ptr["last"], ptr["ckpt"], Bsz, L, Din, N, K, 1)

    def backward() -> None:
        t["dB"].zero_()
        t["dC"].zero_()
        bwd(ptr["u"], Din, ptr["delta"], Din, ptr["At"], ptr["B"], N, ptr["C"], N, ptr["D"], ptr["z"], Din,
            ptr["bias"], 1, None, 0, ptr["ckpt"], ptr["dy"], None, ptr["du"], ptr["ddelta"], ptr["dz"], Din,
            ptr["dA"], ptr["dD"], ptr["dbias"], None, ptr["dB"], ptr["dC"], Bsz, L, Din, N, K, 1)

    return forward, backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision, or 'worktree'")
    parser.add_argument("--after", default="worktree", help="git revision, or 'worktree' (default)")
    parser.add_argument("--before-flags", nargs="*", default=[], help="extra compiler flags of the first build")
    parser.add_argument("--after-flags", nargs="*", default=[], help="extra compiler flags of the second build")
    parser.add_argument("--last-step-only", action="store_true",
                        help="output gradient at the last step only (sequence classification)")
    parser.add_argument("--B", type=int, default=32)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--H", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from selective_scan_cpu import N_STATE, interleaved, problem  # the floor benchmark's inputs and timer

    Bsz, L, Din, N, K = args.B, args.T, 2 * args.H, N_STATE, kernel.CHECKPOINT_STEPS
    p = {k: v.detach() for k, v in problem(Bsz, L, Din, grad=False).items()}
    t = {"u": p["u"], "delta": p["delta"], "At": p["A"].t().contiguous(), "B": p["B"], "C": p["C"], "D": p["D"],
         "z": p["z"], "bias": p["delta_bias"], "y": torch.empty(Bsz, L, Din), "last": torch.empty(Bsz, Din, N),
         "ckpt": torch.empty(Bsz, -(-L // K), N, Din), "dy": torch.ones(Bsz, L, Din),
         "du": torch.empty(Bsz, L, Din), "ddelta": torch.empty(Bsz, L, Din), "dz": torch.empty(Bsz, L, Din),
         "dA": torch.empty(Bsz, N, Din), "dD": torch.empty(Bsz, Din), "dbias": torch.empty(Bsz, Din),
         "dB": torch.zeros(Bsz, L, N), "dC": torch.zeros(Bsz, L, N)}
    if args.last_step_only:
        t["dy"][:, :-1] = 0
    outputs = ("y", "du", "ddelta", "dz", "dA", "dB", "dC")
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"before": build(args.before, args.before_flags, Path(tmp), "before"),
                "after": build(args.after, args.after_flags, Path(tmp), "after")}
        cases, results = {}, {}
        for name, lib in libs.items():
            forward, backward = runners(lib, t, (Bsz, L, Din, N), K)
            forward()
            backward()
            results[name] = {k: t[k].clone() for k in outputs}
            cases[f"{name}_fwd"], cases[f"{name}_bwd"] = forward, backward
        times = interleaved(cases, args.repeats)
    print(f"B={Bsz} T={L} Din={Din} N={N}, 1 thread, {args.repeats} interleaved repeats"
          + (", gradient at the last step only" if args.last_step_only else ""))
    print(f"before: {args.before} {' '.join(args.before_flags)}; after: {args.after} {' '.join(args.after_flags)}")
    for name, r in times.items():
        print(f"  {name:>11} median {r['median_ms']:8.1f} ms  min {r['min_ms']:8.1f} ms")
    for part in ("fwd", "bwd"):
        a, b = times[f"after_{part}"], times[f"before_{part}"]
        print(f"  {part} after / before: median {a['median_ms'] / b['median_ms']:.3f}, "
              f"min {a['min_ms'] / b['min_ms']:.3f}")
    diffs = {k: float((results["after"][k] - results["before"][k]).abs().max() / results["before"][k].abs().max())
             for k in outputs}
    print("  largest difference / largest value: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
