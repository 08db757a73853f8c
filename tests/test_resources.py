"""summary.json's ``resources``: memory held and compute spent, checked against hand counts on the
TINY config (5 experiences of split MNIST-1D, 6 steps of batch 16 each), and the memory budget."""

from __future__ import annotations

import pytest

from clplat.errors import ConfigError
from clplat.experiment import build_stream, run_experiment

KEYS = {"memory_bytes", "memory_bytes_by_part", "peak_memory_bytes", "memory_budget_bytes", "stream_samples",
        "samples_processed", "samples_by_part", "optimizer_steps", "extra_steps", "extra_steps_by_part"}
FAST = ["trainer.checkpoint=false", "plots=false"]


def run(make_cfg, *overrides: str, steps: int = 6 * 5):
    cfg = make_cfg(*FAST, *overrides)
    summary = run_experiment(cfg).summary
    res = summary["resources"]
    assert set(res) == KEYS
    assert res["memory_bytes"] == sum(res["memory_bytes_by_part"].values())
    assert res["samples_processed"] == sum(res["samples_by_part"].values())
    assert res["extra_steps"] == sum(res["extra_steps_by_part"].values())
    assert res["stream_samples"] == res["samples_by_part"]["stream"]
    assert res["optimizer_steps"] == summary["global_iters"] == steps
    assert res["peak_memory_bytes"] >= res["memory_bytes"]
    return cfg, summary, res


def stream_batches(cfg, data_sizes: list[int] | None = None) -> list[int]:
    """The sizes of the batches ``ExperienceLoader`` yields: 6 per experience, a pass's last one
    short (``data_sizes``: each experience's training data, when a strategy changes it)."""
    sizes = []
    for n in data_sizes or [len(exp.train) for exp in build_stream(cfg)]:
        start = 0
        for _ in range(cfg.trainer.iterations):
            start = 0 if start >= n else start
            sizes.append(min(cfg.trainer.batch_size, n - start))
            start += cfg.trainer.batch_size
    return sizes


def per_sample(cfg, logits: bool = False) -> int:
    stream = build_stream(cfg)
    T, F = stream.input_shape
    return T * F * 4 + 8 + 8 + (4 * stream.num_classes if logits else 0)


def param_bytes(summary) -> int:
    return 4 * (summary["params"]["backbone"] + summary["params"]["head"])


def test_replay_counts_its_buffer_and_every_replayed_sample(make_cfg):
    cfg, _, res = run(make_cfg, "strategy=replay", "strategy.buffer_size=50")
    batches = stream_batches(cfg)
    replayed, seen = 0, 0
    for b in batches:  # a replay minibatch of the batch's size, once the buffer holds anything
        replayed += min(b, min(seen, 50)) if seen else 0
        seen += b
    assert res["memory_bytes_by_part"] == {"buffer": 50 * per_sample(cfg)}
    assert res["peak_memory_bytes"] == res["memory_bytes"]
    assert res["stream_samples"] == sum(batches)
    assert res["samples_by_part"] == {"stream": sum(batches), "replay": replayed}
    assert res["extra_steps"] == 0 and res["memory_budget_bytes"] is None


def test_derpp_counts_logits_and_both_draws(make_cfg):
    cfg, _, res = run(make_cfg, "strategy=derpp")
    batches = stream_batches(cfg)
    assert res["memory_bytes_by_part"] == {"buffer": 500 * per_sample(cfg),
                                           "buffer_logits": 500 * 4 * build_stream(cfg).num_classes}
    # every batch holds >= 16 samples after the first step, so both draws take a full batch
    assert res["samples_by_part"] == {"stream": sum(batches), "replay": 2 * sum(batches[1:])}


def test_memory_budget_gives_replay_and_derpp_equal_bytes(make_cfg):
    budget = 2 * 4752  # a multiple of both 176 (replay's sample) and 216 (with DER's 10 logits)
    _, rs, replay = run(make_cfg, "strategy=replay", f"memory_budget_bytes={budget}")
    cfg, ds, derpp = run(make_cfg, "strategy=derpp", f"memory_budget_bytes={budget}")
    assert (per_sample(cfg), per_sample(cfg, logits=True)) == (176, 216)
    assert replay["memory_bytes"] == derpp["memory_bytes"] == budget
    assert replay["memory_budget_bytes"] == derpp["memory_budget_bytes"] == budget
    assert (rs["strategy_state"]["buffer_size"], ds["strategy_state"]["buffer_size"]) == (54, 44)  # fewer samples


def test_a_budget_too_small_for_one_sample_is_one_line(make_cfg):
    with pytest.raises(ConfigError, match=r"^strategy.memory_bytes=100 is not valid: cannot hold one stored sample "
                                          r"\(176 bytes: x 160 \+ y 8 \+ task 8\); raise it$"):
        run_experiment(make_cfg(*FAST, "strategy=replay", "memory_budget_bytes=100"))
    with pytest.raises(ConfigError, match="memory_budget_bytes=0 is not valid"):
        run_experiment(make_cfg(*FAST, "strategy=replay", "memory_budget_bytes=0"))


def test_power_law_default_mixes_rehearsal_into_the_loop_at_replays_memory(make_cfg):
    # default (interleaved): experience k trains on its n_k samples + n_k rehearsed ones in the
    # ordinary loop (6 steps of 16 either way: no extra steps, every sample counted as trained on);
    # 50 samples shared by the tasks seen: 50 // t per task
    cfg, summary, res = run(make_cfg, "strategy=power_law", "strategy.buffer_size=50")
    sizes = [len(exp.train) for exp in build_stream(cfg)]
    assert res["memory_bytes_by_part"] == {"pools": 5 * 10 * per_sample(cfg)}
    held = [min(50 // k, min(sizes[:k])) * k for k in range(1, 5)]  # pools while experience k trains
    assert res["peak_memory_bytes"] == max(h + n for h, n in zip(held, sizes[1:])) * per_sample(cfg)
    trained = stream_batches(cfg, [sizes[0], *(2 * n for n in sizes[1:])])
    assert res["extra_steps"] == 0 and res["samples_by_part"] == {"stream": sum(trained)}
    assert summary["strategy_state"]["rehearsal_samples"] == sum(sizes[1:])
    assert summary["strategy_state"]["rehearsal_steps"] == 0


def test_power_law_after_task_counts_pools_and_rehearsal_sessions(make_cfg):
    # budget for 35 samples (replay's count), 35 // t per task; sessions of round(0.5 x n_k) in batches of 16
    cfg, summary, res = run(make_cfg, "strategy=power_law", "strategy.when=after_task", "strategy.batch_size=16",
                            "strategy.rehearsal_fraction=0.5", f"memory_budget_bytes={5 * 7 * 176 + 100}")
    sizes = [len(exp.train) for exp in build_stream(cfg)]
    amounts = [round(0.5 * n) for n in sizes[1:]]
    assert res["memory_bytes_by_part"] == {"pools": 5 * 7 * per_sample(cfg)}
    held = [35 // t * t for t in range(2, 6)]  # pools during the session after experience t - 1
    assert res["peak_memory_bytes"] == max(h + a for h, a in zip(held, amounts)) * per_sample(cfg)
    assert summary["strategy_state"]["pool_samples"] == 35 and summary["strategy_state"]["buffer_size"] == 35
    assert res["extra_steps_by_part"] == {"rehearsal": sum(-(-a // 16) for a in amounts)}
    assert res["samples_by_part"] == {"stream": sum(stream_batches(cfg)), "rehearsal": sum(amounts)}
    assert summary["strategy_state"]["rehearsal_samples"] == sum(amounts)


def test_memory_budget_gives_power_law_replays_samples(make_cfg):
    budget = 2 * 4752  # replay: 54 samples of 176 bytes
    _, rs, replay = run(make_cfg, "strategy=replay", f"memory_budget_bytes={budget}")
    _, ps, power = run(make_cfg, "strategy=power_law", f"memory_budget_bytes={budget}")
    assert rs["strategy_state"]["buffer_size"] == ps["strategy_state"]["buffer_size"] == 54
    assert power["memory_bytes_by_part"] == {"pools": 5 * (54 // 5) * 176}  # 10 per task
    assert power["memory_bytes"] <= replay["memory_bytes"] == budget


def test_ewc_counts_one_fisher_and_anchor_per_past_task(make_cfg):
    cfg, summary, res = run(make_cfg, "strategy=ewc", "strategy.fisher_samples=8")
    assert res["memory_bytes_by_part"] == {"fisher": 4 * param_bytes(summary), "anchors": 4 * param_bytes(summary)}
    assert res["samples_by_part"] == {"stream": sum(stream_batches(cfg)), "fisher": 4 * 8}


@pytest.mark.parametrize("overrides, refreshed", [
    ([], range(1, 30, 2)),  # defaults: every second step (2, 4, ..., 30)
    (["plugin.refresh.interval=1"], range(1, 30)),  # every step but the first: no optimizer step to size it by yet
    (["plugin.refresh.interval=1", "plugin.refresh.scale=weight_norm", "plugin.refresh.gamma=1e-5",
      "plugin.refresh.unlearn_steps=2"], [i for i in range(30) for _ in range(2)]),  # the authors' form, J = 2
], ids=["defaults", "interval1", "weight_norm_j2"])
def test_refresh_counts_each_unlearning_step_and_its_fisher(make_cfg, overrides, refreshed):
    cfg, summary, res = run(make_cfg, "strategy=naive", "plugin=[refresh]", "plugin.refresh.fisher_samples=8",
                            *overrides)
    batches = stream_batches(cfg)  # the 0-based steps in `refreshed`, one entry per unlearning pass
    assert res["extra_steps_by_part"] == {"unlearn": len(refreshed)}
    assert summary["strategy_state"]["refresh_unlearn_steps"] == len(refreshed)
    assert res["samples_by_part"] == {"stream": sum(batches), "unlearn": sum(batches[i] for i in refreshed),
                                      "refresh_fisher": 4 * 8}  # not after the last experience
    assert res["memory_bytes_by_part"] == {"refresh_fisher": param_bytes(summary)}


def test_kfpf_counts_its_buffer_snapshot_and_fine_tuning(make_cfg):
    cfg, summary, res = run(make_cfg, "strategy=kfpf", "strategy.iterations=2", "strategy.batch_size=8")
    assert res["memory_bytes_by_part"] == {"buffer": 500 * per_sample(cfg), "fpf_snapshot": param_bytes(summary)}
    # k=10 triggers over 30 steps, 2 steps of 8 samples each
    assert res["extra_steps_by_part"] == {"fpf": 20}
    assert res["samples_by_part"] == {"stream": sum(stream_batches(cfg)), "fpf": 160}
    assert summary["strategy_state"]["fpf_samples"] == 160


def test_kfpf_last_trigger_fine_tunes_after_the_final_step_and_is_counted(make_cfg):
    # 7 steps per experience: 35 in all, not a multiple of k = 10 (an interval of 35 // 10 = 3
    # would trigger 11 times, the last at step 33, two plain steps before the end)
    cfg, summary, res = run(make_cfg, "strategy=kfpf", "trainer.iterations=7", "strategy.iterations=2",
                            "strategy.batch_size=8", steps=35)
    assert res["extra_steps_by_part"] == {"fpf": 10 * 2}  # k triggers of 2 steps
    state = summary["strategy_state"]
    assert state["fpf_trigger_steps"] == [4, 7, 11, 14, 18, 21, 25, 28, 32, 35]
    assert state["fpf_trigger_steps"][-1] == summary["global_iters"] == state["fpf_planned_steps"]
    assert res["samples_by_part"] == {"stream": sum(stream_batches(cfg)), "fpf": 10 * 2 * 8}
    assert res["memory_bytes_by_part"] == {"buffer": 500 * per_sample(cfg), "fpf_snapshot": param_bytes(summary)}


def test_replay_with_fpf_shares_the_buffer_and_adds_fine_tuning(make_cfg):
    cfg, summary, res = run(make_cfg, "strategy=replay", "plugin=[fpf]", "plugin.fpf.iterations=3",
                            "plugin.fpf.batch_size=8", "memory_budget_bytes=17600")
    assert res["memory_bytes_by_part"] == {"buffer": 17600, "fpf_snapshot": param_bytes(summary)}  # 100 samples
    assert res["extra_steps_by_part"] == {"fpf": 3}
    assert res["samples_by_part"]["fpf"] == 24


def test_naive_with_fpf_sizes_its_own_buffer_from_the_budget(make_cfg):
    cfg, summary, res = run(make_cfg, "strategy=naive", "plugin=[fpf]", "plugin.fpf.iterations=1",
                            "plugin.fpf.loss=kd", "memory_budget_bytes=2160")
    assert res["memory_bytes_by_part"] == {"fpf_buffer": 10 * 176, "fpf_buffer_logits": 10 * 40,
                                           "fpf_snapshot": param_bytes(summary)}


def test_hypernet_counts_generator_embeddings_and_the_snapshot_of_its_targets(make_cfg):
    cfg, summary, res = run(make_cfg, "strategy=hypernet")
    state = summary["strategy_state"]
    assert res["memory_bytes_by_part"] == {"hypernet": 4 * state["hypernet_params"],
                                           "embeddings": 4 * state["hypernet_embedding_params"],
                                           "targets": 4 * state["hypernet_snapshot_floats"]}
    assert state["hypernet_snapshot_floats"] == state["hypernet_params"]  # targets: online, one generator
    assert res["samples_by_part"] == {"stream": sum(stream_batches(cfg))}


def test_hypernet_with_stored_targets_counts_every_previous_tasks_outputs(make_cfg):
    _, summary, res = run(make_cfg, "strategy=hypernet", "strategy.targets=stored")
    state = summary["strategy_state"]
    assert state["hypernet_stored_target_floats"] == 4 * state["hypernet_target_params"]  # 4 previous tasks
    assert res["memory_bytes_by_part"]["targets"] == 4 * state["hypernet_stored_target_floats"]


def test_sharp_reports_the_memories_its_own_budget_counts(make_cfg):
    _, summary, res = run(make_cfg, "strategy=sharp", "backbone.num_layers=2", "strategy.phases=2")
    state = summary["strategy_state"]
    assert res["memory_bytes_by_part"] == {"activations": state["sharp_stm_bytes"],
                                           "representations": state["sharp_ltm_bytes"]}
    assert res["peak_memory_bytes"] == state["sharp_peak_memory_bytes"]
