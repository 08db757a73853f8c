"""Multi-process training (Lightning DDP, 2 CPU processes, gloo) of the strategies that support it.

The end-to-end tests go through the command line, as a user would: Lightning's ddp launcher
re-runs ``python -m clplat.train`` for rank 1 with the parent's ``hydra.run.dir``, so that is the
path that must work (see docs/reliability.md for why not ``ddp_spawn``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from clplat.checkpointing import checkpoint_path, latest_checkpoint
from clplat.data import ExperienceLoader
from clplat.experiment import build_stream
from clplat.stream import SequenceData
from clplat.strategies.replay import Replay
from tests.conftest import TINY, compose_config
from tests.helpers import cli_env, preflight_error, run_cli

DDP = [*TINY, "trainer=ddp_cpu"]


@pytest.mark.parametrize("args, expected", [
    (["trainer=ddp_cpu", "strategy=kfpf"], ("trainer.devices=2 is not valid: strategy 'kfpf_ce' does not support "
     "multi-process (ddp) training (its fine-tuning steps run outside the synchronised training step on each "
     "rank's own buffer, so the ranks' weights would drift apart); use trainer.devices=1, or one of the "
     "strategies that do: agem, cumulative, der, derpp, ewc, ewc_online, joint, lwf, naive, power_law, replay, separate, si")),
    (["trainer=ddp_cpu", "strategy=replay", "plugin=[refresh]"],
     "strategy 'replay+refresh' does not support multi-process (ddp) training (refresh: its unlearning step"),
    (["trainer.devices=2", "strategy=hypernet"], "strategy 'hypernet' does not support multi-process"),
    (["trainer=ddp_cpu", "strategy=sharp", "backbone.num_layers=2"], "(its contrastive loss couples the samples"),
    (["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], "trainer.strategy='ddp_spawn' is not valid"),
    (["trainer=ddp_cpu", "trainer.process_group_backend=mpi"], "trainer.process_group_backend='mpi'"),
])
def test_strategies_without_ddp_support_are_refused_at_start_up(args, expected, capsys):
    assert expected in preflight_error(args, capsys)


def test_in_process_ddp_is_refused_rather_than_relaunching_the_caller(make_cfg):
    from clplat.errors import ConfigError
    from clplat.experiment import run_experiment

    with pytest.raises(ConfigError, match="multi-process runs start from the command line"):
        run_experiment(make_cfg("trainer=ddp_cpu", "strategy=naive"))


def test_each_rank_trains_on_a_disjoint_half_of_every_batch_for_the_same_number_of_steps():
    n, batch_size, iterations = 37, 8, 12  # passes end in a batch of 5, then of 1 sample
    data = SequenceData(torch.arange(n, dtype=torch.float32).view(n, 1, 1), torch.arange(n), torch.zeros(n, dtype=torch.long))

    def batches(rank: int, world_size: int) -> list[list[int]]:
        loader = ExperienceLoader(data, batch_size, iterations, torch.Generator().manual_seed(3), rank, world_size)
        return [b[1].tolist() for b in loader]

    single, rank0, rank1 = batches(0, 1), batches(0, 2), batches(1, 2)
    assert len(single) == len(rank0) == len(rank1) == iterations
    for whole, a, b in zip(single, rank0, rank1):
        assert a and b
        if len(whole) >= 2:
            assert sorted(a + b) == sorted(whole) and not set(a) & set(b)
        else:  # a one-sample tail is repeated so that no rank idles
            assert a == b == whole


def test_resume_picks_the_last_experience_every_rank_checkpointed(tmp_path):
    for k, rank in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]:  # rank 1 was killed before writing exp 2
        path = checkpoint_path(tmp_path, k, rank)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    assert latest_checkpoint(tmp_path, rank=1, world_size=2) == (1, tmp_path / "checkpoints" / "exp_1.rank1.ckpt")
    assert latest_checkpoint(tmp_path, rank=0, world_size=2) == (1, tmp_path / "checkpoints" / "exp_1.ckpt")
    assert latest_checkpoint(tmp_path)[0] == 2  # single process: rank files are not needed


def test_replay_splits_its_memory_between_ranks():
    shares = []
    for rank in range(3):
        replay = Replay(buffer_size=500, replay_batch_size=10)
        replay.distribute(rank, 3)
        shares.append((replay.buffer.capacity, replay.replay_batch_size))
    assert shares == [(167, 4), (167, 3), (166, 3)]


def task_sizes() -> list[int]:
    stream = build_stream(compose_config(TINY))
    return [min(40, len(exp.test)) for exp in stream]


def check_ddp_run(proc: subprocess.CompletedProcess, run_dir: Path) -> pd.DataFrame:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("experience 5/5 done") == 1  # rank 1 reports nothing
    names = sorted(p.name for p in run_dir.iterdir())
    assert {"metrics.csv", "summary.json", "accuracy_matrix.csv", "config.yaml"} <= set(names)
    assert not [n for n in names if "rank" in n]  # results written once, by rank 0
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == sorted([f"exp_{k}.ckpt" for k in range(5)] + [f"exp_{k}.rank1.ckpt" for k in range(5)])
    table = pd.read_csv(run_dir / "metrics.csv")
    # the evaluation is split between the ranks and summed: every task's whole subset is counted
    sizes = task_sizes()
    assert table.groupby("eval_task").n.unique().map(list).tolist() == [[s] for s in sizes]
    assert table.global_iter.max() == 30  # 6 iterations per experience on every rank
    return table


def test_ddp_naive_run_through_the_cli(tmp_path):
    run_dir = tmp_path / "naive"
    check_ddp_run(run_cli(*DDP, "strategy=naive", f"hydra.run.dir={run_dir}"), run_dir)


def run_ddp_replay(run_dir: Path, strategy: str = "replay") -> pd.DataFrame:
    table = check_ddp_run(run_cli(*DDP, f"strategy={strategy}", f"hydra.run.dir={run_dir}"), run_dir)
    buffers = [torch.load(checkpoint_path(run_dir, 4, rank), weights_only=False)["clplat_strategy"]["buffer"]
               for rank in (0, 1)]
    assert [b["capacity"] for b in buffers] == [250, 250]  # buffer_size 500 split, not doubled
    seen = [b["num_seen"] for b in buffers]  # each rank offered its half of every batch (rank 0 the odd one)
    assert 200 < seen[1] <= seen[0] <= seen[1] + 30
    assert not torch.equal(buffers[0]["x"], buffers[1]["x"])  # each rank stored what it trained on
    return table


@pytest.mark.parametrize("strategy", ["replay", "derpp"])  # every RehearsalStrategy that declares supports_ddp
def test_ddp_rehearsal_keeps_a_buffer_per_rank(tmp_path, strategy):
    run_ddp_replay(tmp_path / strategy, strategy)


def ranks_final_states(run_dir: Path) -> list[dict]:
    return [torch.load(checkpoint_path(run_dir, 4, rank), weights_only=False) for rank in (0, 1)]


@pytest.mark.parametrize("strategy", [
    "agem", "ewc", "power_law",
    *(pytest.param(s, marks=pytest.mark.slow) for s in ("joint", "cumulative", "lwf", "ewc_online", "si", "separate")),
])
def test_every_rank_ends_with_the_same_weights(tmp_path, strategy):
    # DDP keeps the ranks' weights equal only if whatever a method does besides the all-reduced
    # gradient is the same on every rank: A-GEM's reference gradient is averaged over the ranks
    # (without it the ranks' weights differed by 0.099 after this run), EWC's Fisher is estimated on
    # the same subset, power-law's rehearsed data is drawn by shared generators
    run_dir = tmp_path / strategy
    check_ddp_run(run_cli(*DDP, f"strategy={strategy}", f"hydra.run.dir={run_dir}"), run_dir)
    rank0, rank1 = ranks_final_states(run_dir)
    for name, weight in rank0["state_dict"].items():
        assert torch.equal(weight, rank1["state_dict"][name]), name
    summary = json.loads((run_dir / "summary.json").read_text())
    if strategy == "agem":
        assert summary["strategy_state"]["agem_projected_fraction"] > 0  # the projection acted
        memories = [state["clplat_strategy"]["buffer"]["x"] for state in (rank0, rank1)]
        assert memories[0].shape == memories[1].shape and not torch.equal(*memories)  # each rank its share
    if strategy == "ewc":
        for a, b in zip(rank0["clplat_strategy"]["fishers"], rank1["clplat_strategy"]["fishers"]):
            assert all(torch.equal(a[k], b[k]) for k in a)
    if strategy == "power_law":
        assert summary["strategy_state"]["rehearsal_samples"] > 0
    if strategy == "separate":  # the stored networks, loaded at the same boundaries on every rank
        stored = [state["clplat_strategy"]["networks"] for state in (rank0, rank1)]
        assert stored[0].keys() == stored[1].keys() and len(stored[0]) > 0
        assert all(torch.equal(stored[0][t][k], stored[1][t][k]) for t in stored[0] for k in stored[0][t])


@pytest.mark.slow  # a third pair of processes; ~15 s on an idle 2-core machine
def test_ddp_replay_resumes_from_the_last_checkpoint_of_every_rank(tmp_path):
    run_dir = tmp_path / "replay"
    table = run_ddp_replay(run_dir)
    # an interruption after rank 0 but before rank 1 checkpointed experience 4
    (run_dir / "summary.json").unlink()
    checkpoint_path(run_dir, 4, 1).unlink()
    resumed = run_cli(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after experience 4 (iteration 24)" in resumed.stdout
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "metrics.csv"), table)


def test_a_nonfinite_loss_stops_every_rank_at_the_same_step(tmp_path):
    """Rank 0's and rank 1's losses differ (different shards); the finiteness check sees their sum,
    so both stop at the same step and neither is left waiting in the gradient all-reduce."""
    run_dir = tmp_path / "diverged"
    proc = run_cli(*DDP, "strategy=naive", "optimizer=sgd", "optimizer.lr=1e38", f"hydra.run.dir={run_dir}",
                   timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("clplat: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]  # said once, by rank 0
    assert re.search(r"the loss became (nan|inf) at iteration \d+ \(experience 0\)", errors[0]), errors[0]
    assert str(run_dir) in errors[0]
    assert (run_dir / "metrics.csv").exists() and not (run_dir / "summary.json").exists()


@pytest.mark.slow  # two more pairs of processes (~20 s); run with `make test-all`
def test_torchrun_launch_computes_what_lightnings_launcher_does(tmp_path):
    """torchrun/SLURM-style launch: every process is started from outside with ``LOCAL_RANK``,
    ``WORLD_SIZE`` and the rendezvous set, so Lightning starts none; the run must be the same."""
    args = [*DDP, "strategy=replay"]
    lightning = tmp_path / "lightning"
    check_ddp_run(run_cli(*args, f"hydra.run.dir={lightning}"), lightning)
    torchrun = tmp_path / "torchrun"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "clplat.train", *args, f"hydra.run.dir={torchrun}"],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    check_ddp_run(proc, torchrun)
    assert (torchrun / "metrics.csv").read_text() == (lightning / "metrics.csv").read_text()
