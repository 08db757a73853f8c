"""clplat's CPU memory policies side by side: training-step times of ``nn.GRU`` and Mamba under each.

A policy acts on the whole process (``clplat.allocator``: ``CLPLAT_CPU_MEMORY`` = ``cache``,
``huge_pages`` or ``system``), so each one runs ``benchmarks/backbones.py`` in a fresh process;
the policies take turns within every round, so slow drift of the machine hits them alike. Printed
per policy and round: both models' median / fastest step, Mamba's throughput relative to the GRU of
the same process (the issue's ``x GRU``), and each model's median step time relative to the
``system`` policy of the same round. ``--scan`` adds the selective scan's floor benchmark
(``benchmarks/selective_scan_cpu.py``, its ``cpp`` forward + backward against the unfused floor)
per policy.

Usage (one thread, on an otherwise idle core)::

    taskset -c 0 python benchmarks/cpu_memory.py [--T 1024] [--rounds 2] [--repeats 9] [--scan]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from clplat.allocator import POLICIES, POLICY_VARIABLE, THP_VARIABLE  # noqa: E402


def run_policy(script: str, policy: str, args: list[str], threads: int) -> dict:
    """``script`` in a fresh process under ``policy``; its JSON output."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {k: v for k, v in os.environ.items() if k != THP_VARIABLE}
        env.update({POLICY_VARIABLE: policy, "OMP_NUM_THREADS": str(threads)})
        subprocess.run([sys.executable, str(HERE / script), *args, "--out", str(out)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def step_rows(rounds: list[dict[str, dict]], T: int) -> list[dict]:
    """One row per (round, policy): medians, minima, Mamba vs GRU, and both vs ``system`` of that round."""
    rows = []
    for index, by_policy in enumerate(rounds, 1):
        system = by_policy.get("system", {}).get("results", {}).get(str(T))
        for policy, payload in by_policy.items():
            res = payload["results"][str(T)]
            gru, mamba = res["gru"], res["mamba"]
            row = {"round": index, "policy": policy, "gru_median_ms": gru["median_ms"], "gru_min_ms": gru["min_ms"],
                   "mamba_median_ms": mamba["median_ms"], "mamba_min_ms": mamba["min_ms"],
                   "mamba_x_gru": mamba["speedup_vs_gru"], "mamba_x_gru_min": mamba["speedup_vs_gru_min"]}
            if system is not None:
                row["gru_vs_system"] = gru["median_ms"] / system["gru"]["median_ms"]
                row["mamba_vs_system"] = mamba["median_ms"] / system["mamba"]["median_ms"]
            rows.append(row)
    return rows


def scan_row(policy: str, payload: dict) -> dict:
    cases = payload["floor"]["cases"]
    kernel, unfused = cases["cpp_fwd_bwd"]["median_ms"], cases["eager_exp_fwd_bwd"]["median_ms"]
    return {"policy": policy, "cpp_fwd_bwd_median_ms": kernel, "unfused_floor_median_ms": unfused,
            "kernel_vs_floor": kernel / unfused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--scan", action="store_true", help="also the selective scan's floor benchmark per policy")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cpu_memory.json")
    args = parser.parse_args()
    bench = ["--T", str(args.T), "--backbones", "gru", "mamba", "--repeats", str(args.repeats),
             "--threads", str(args.threads)]
    rounds = [{policy: run_policy("backbones.py", policy, bench, args.threads) for policy in args.policies}
              for _ in range(args.rounds)]
    rows = step_rows(rounds, args.T)
    print(f"B=32, T={args.T}, H=128, {args.threads} thread(s); medians (fastest) in ms; x GRU = GRU time / Mamba time")
    print(f"{'round':>5} {'policy':>11} {'gru':>16} {'mamba':>16} {'x GRU':>6} {'(min)':>6} {'gru/system':>10} "
          f"{'mamba/system':>12}")
    for r in rows:
        print(f"{r['round']:>5} {r['policy']:>11} {r['gru_median_ms']:>7.1f} ({r['gru_min_ms']:>6.1f}) "
              f"{r['mamba_median_ms']:>7.1f} ({r['mamba_min_ms']:>6.1f}) {r['mamba_x_gru']:>6.2f} "
              f"{r['mamba_x_gru_min']:>6.2f} {r.get('gru_vs_system', float('nan')):>10.2f} "
              f"{r.get('mamba_vs_system', float('nan')):>12.2f}")
    scans = []
    if args.scan:
        scan_args = ["--repeats", "5", "--threads", str(args.threads), "--no-linear-scan"]
        for policy in args.policies:
            scans.append(scan_row(policy, run_policy("selective_scan_cpu.py", policy, scan_args, args.threads)))
        print("selective scan, B=32, T=1024, Din=256, N=16: cpp forward + backward vs the unfused floor (medians)")
        for s in scans:
            print(f"{s['policy']:>11} {s['cpp_fwd_bwd_median_ms']:>7.1f} ms / {s['unfused_floor_median_ms']:>7.1f} ms "
                  f"= {s['kernel_vs_floor']:.2f}x")
    command = " ".join(["python", "benchmarks/cpu_memory.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "steps": rows, "scan": scans}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
