"""Streams II: rotated, blurry, online, sequence curricula, state tracking, the Avalanche adapter.

Each stream's invariants are checked on tiny data (class sets per experience, determinism of
angles and orders, blur proportions, labels of the synthetic tasks recomputed from the inputs,
the Avalanche round trip sample by sample), then every new ``conf/stream`` option is trained
in-process with a GRU and replay, and one stream through the real CLI. Nothing downloads:
Avalanche's SplitMNIST reads MNIST files written here in torchvision's format.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clplat import config_dir
from clplat.errors import ConfigError
from clplat.experiment import run_experiment
from clplat.stream import Scenario, Stream
from clplat.streams.blurry import blur_weights, blurry_stream, largest_remainder
from clplat.streams.online import online_stream
from clplat.streams.rotated import images_to_layout, rotated_stream, rotation_angles
from clplat.streams.sequence_tasks import (
    curriculum_stream,
    dms_labels,
    length_ranges,
    parity_labels,
    state_tracking_stream,
)
from clplat.streams.sources import SourceData, digits, mnist1d
from clplat.streams.split import split_stream
from tests.test_streams import toy_source, write_mnist_raw

ROOT = Path(__file__).resolve().parents[1]
CONF = config_dir() / "stream"
NEW_CONFIGS = [
    "rotated_digits", "rotated_mnist", "blurry_split_mnist1d", "online_split_mnist1d",
    "parity_curriculum", "parity_curriculum_multihead", "dms_curriculum", "dms_curriculum_multihead",
    "state_parity", "state_mod3_count", "avalanche_split_digits", "avalanche_split_mnist",
]




@pytest.fixture(scope="module")
def digits_raw() -> SourceData:
    return digits(standardize=False)


@pytest.fixture(scope="module")
def digits_std() -> SourceData:
    return digits()


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake MNIST idx files (torchvision's layout) shared by the Avalanche and rotated-MNIST tests."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_raw(root, "MNIST", n_train=60, n_test=30)
    return root


@pytest.fixture(scope="module")
def avalanche() -> Any:
    """Avalanche's benchmark API, imported once (the import alone takes seconds)."""
    pytest.importorskip("avalanche")
    from avalanche.benchmarks.scenarios import supervised, task_aware
    from avalanche.benchmarks.utils import as_classification_dataset

    return SimpleNamespace(class_incremental_benchmark=supervised.class_incremental_benchmark,
                           task_incremental_benchmark=task_aware.task_incremental_benchmark,
                           as_classification_dataset=as_classification_dataset)


# ---------------------------------------------------------------- sequence curricula


def bits_of(stream: Stream, x: torch.Tensor) -> torch.Tensor:
    """Recover the bits from the ``signed`` encoding."""
    assert stream.metadata["encoding"] == "signed"
    return (x[..., 0] > 0).long()


@pytest.mark.parametrize("task", ["parity", "dms"])
def test_single_head_curriculum_labels_are_correct_by_construction(task: str) -> None:
    stream = curriculum_stream(task=task, n_start=2, n_experiences=4, train_samples=300, test_samples=100)
    assert stream.scenario is Scenario.DOMAIN_INCREMENTAL and not stream.has_task_labels
    assert stream.metadata["n_values"] == [2, 3, 4, 5] and stream.input_shape == (10, 1)  # 2 * N_max
    for k, exp in enumerate(stream):
        n = 2 + k
        for data in (exp.train, exp.test):
            bits = bits_of(stream, data.x)
            last = bits[:, -1]
            if task == "parity":  # recomputed independently of parity_labels
                expected = torch.tensor([int(sum(row[-n:].tolist()) % 2) for row in bits])
            else:
                expected = (last == bits[:, -1 - n]).long()
            assert torch.equal(data.y, expected)
            assert set(data.task.tolist()) == {k}
        assert exp.classes == (0, 1) and 0.35 < exp.train.y.float().mean() < 0.65  # balanced


def test_multi_head_curriculum_trains_every_head_so_far() -> None:
    stream = curriculum_stream(task="parity", heads="multi", n_start=3, n_experiences=3, train_samples=50,
                               test_samples=20)
    assert stream.scenario is Scenario.TASK_INCREMENTAL and stream.num_tasks == 3
    assert stream.task_classes == ((0, 1), (0, 1), (0, 1))
    for k, exp in enumerate(stream):
        assert len(exp.train) == 50 * (k + 1) and exp.task_id == k
        assert sorted(set(exp.train.task.tolist())) == list(range(k + 1))
        for j in range(k + 1):
            part = exp.train.subset(exp.train.task == j)
            assert torch.equal(part.x, exp.train.x[:50])  # the same sequences for every head
            assert torch.equal(part.y, parity_labels(bits_of(stream, part.x), 3 + j))
        assert set(exp.test.task.tolist()) == {k}
        assert torch.equal(exp.test.y, parity_labels(bits_of(stream, exp.test.x), 3 + k))


def test_curriculum_is_seeded_prefix_stable_and_orderable() -> None:
    kwargs = dict(n_experiences=4, seq_len=12, train_samples=40, test_samples=10)
    a, b = curriculum_stream(seed=1, **kwargs), curriculum_stream(seed=1, **kwargs)
    assert all(torch.equal(x.train.x, y.train.x) and torch.equal(x.test.y, y.test.y) for x, y in zip(a, b))
    assert not torch.equal(a[0].train.x, curriculum_stream(seed=2, **kwargs)[0].train.x)
    shorter = curriculum_stream(seed=1, **{**kwargs, "n_experiences": 2})
    assert all(torch.equal(x.train.x, y.train.x) for x, y in zip(shorter, a))
    shuffled = curriculum_stream(seed=1, order_seed=3, **kwargs)
    ns = shuffled.metadata["n_values"]
    assert sorted(ns) == [2, 3, 4, 5] and ns != [2, 3, 4, 5]
    assert ns == curriculum_stream(seed=1, order_seed=3, **kwargs).metadata["n_values"]
    for exp, n in zip(shuffled, ns):
        assert torch.equal(exp.train.y, parity_labels(bits_of(shuffled, exp.train.x), n))


def test_curriculum_encodings_and_bad_values() -> None:
    onehot = curriculum_stream(encoding="onehot", n_experiences=2, train_samples=8, test_samples=4)
    assert onehot.input_shape == (6, 2) and torch.all(onehot[0].train.x.sum(-1) == 1)
    binary = curriculum_stream(task="dms", encoding="binary", n_experiences=2, train_samples=8, test_samples=4)
    bits = binary[1].train.x[..., 0].long()
    assert torch.equal(binary[1].train.y, dms_labels(bits, 3))
    with pytest.raises(ConfigError, match=r"^seq_len"):
        curriculum_stream(task="dms", n_start=4, n_experiences=1, seq_len=4)
    for kwargs, key in (({"heads": "two"}, "heads"), ({"task": "xor"}, "task"), ({"n_start": 0}, "n_start"),
                        ({"order_seed": -1}, "order_seed"), ({"encoding": "gray"}, "encoding")):
        with pytest.raises(ConfigError, match=rf"^{key}"):
            curriculum_stream(**kwargs)


# ---------------------------------------------------------------- state tracking


def decode(stream: Stream, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and lengths back from the one-hot + pad-channel encoding."""
    index = x.argmax(-1)
    pad = index == x.shape[-1] - 1
    assert torch.all(x.sum(-1) == 1)
    lengths = (~pad).sum(1)
    # left padding: once a sequence starts it never pads again
    assert torch.all(pad[:, :-1] >= pad[:, 1:])
    return index, lengths


@pytest.mark.parametrize("task,modulus", [("count", 2), ("count", 3), ("sum", 5)])
def test_state_tracking_labels_and_growing_lengths(task: str, modulus: int) -> None:
    stream = state_tracking_stream(task=task, modulus=modulus, n_experiences=3, length_start=3, length_step=5,
                                   train_samples=200, test_samples=50)
    assert stream.input_shape == (17, (2 if task == "count" else modulus) + 1)
    assert stream.num_classes == modulus and stream.scenario is Scenario.DOMAIN_INCREMENTAL
    assert [tuple(r) for r in stream.metadata["length_ranges"]] == length_ranges(3, 3, 5) == [(3, 7), (8, 12), (13, 17)]
    for exp, (lo, hi) in zip(stream, length_ranges(3, 3, 5)):
        for data in (exp.train, exp.test):
            tokens, lengths = decode(stream, data.x)
            assert int(lengths.min()) >= lo and int(lengths.max()) <= hi
            expected = []
            for row, n in zip(tokens.tolist(), lengths.tolist()):
                sequence = row[len(row) - n :]
                total = sequence.count(1) if task == "count" else sum(sequence)
                expected.append(total % modulus)
            assert data.y.tolist() == expected
        assert exp.classes == tuple(range(modulus))


def test_state_tracking_is_seeded_and_orderable() -> None:
    kwargs = dict(n_experiences=4, train_samples=30, test_samples=10)
    a, b = state_tracking_stream(**kwargs), state_tracking_stream(**kwargs)
    assert all(torch.equal(x.train.x, y.train.x) and torch.equal(x.train.y, y.train.y) for x, y in zip(a, b))
    shuffled = state_tracking_stream(order_seed=1, **kwargs)
    assert sorted(shuffled.metadata["length_ranges"]) == a.metadata["length_ranges"]
    assert shuffled.metadata["length_ranges"] != a.metadata["length_ranges"]
    assert state_tracking_stream(task_labels=True, **kwargs).scenario is Scenario.TASK_INCREMENTAL
    with pytest.raises(ConfigError, match=r"^modulus"):
        state_tracking_stream(modulus=1)


# ---------------------------------------------------------------- rotated


def test_rotated_angles_are_deterministic_and_orderable() -> None:
    assert rotation_angles(5) == [0.0, 36.0, 72.0, 108.0, 144.0]
    seeded = rotation_angles(4, rotation_seed=7)
    assert seeded == rotation_angles(4, rotation_seed=7) and seeded[0] == 0.0
    assert all(0 <= a < 180 for a in seeded) and seeded != rotation_angles(4, rotation_seed=8)
    ordered = rotation_angles(5, order_seed=2)
    assert sorted(ordered) == rotation_angles(5) and ordered == rotation_angles(5, order_seed=2)
    assert ordered != rotation_angles(5)
    assert rotation_angles(3, angles=[10, 20, 30], first_identity=False) == [10.0, 20.0, 30.0]


def test_rotated_stream_rotates_images_and_keeps_labels(digits_raw: SourceData, digits_std: SourceData) -> None:
    stream = rotated_stream(digits_raw, n_experiences=2, angles=[0, 90])
    assert stream.scenario is Scenario.DOMAIN_INCREMENTAL and stream.metadata["angles"] == [0.0, 90.0]
    assert stream[0].train.x is digits_raw.train_x  # 0 degrees: the source itself
    images = digits_raw.train_x.reshape(-1, 1, 8, 8)  # rows layout, one channel
    assert torch.equal(stream[1].train.x, images_to_layout(torch.rot90(images, 1, (2, 3)), "rows"))
    for exp in stream:
        assert exp.classes == tuple(range(10))
        assert torch.equal(exp.train.y, digits_raw.train_y) and torch.equal(exp.test.y, digits_raw.test_y)
    # Standardised sources rotate in raw pixel units and are standardised again with the same statistics.
    std_stream = rotated_stream(digits_std, n_experiences=2, angles=[0, 90])
    mean = torch.tensor(digits_std.metadata["feature_mean"])
    sd = torch.tensor(digits_std.metadata["feature_std"])
    assert torch.allclose(std_stream[1].test.x * sd + mean, stream[1].test.x, atol=1e-4)
    # The pixels layout sees the same rotated images.
    pixels = rotated_stream(digits(layout="pixels", standardize=False), n_experiences=2, angles=[0, 90])
    assert torch.equal(pixels[1].train.x.reshape(-1, 8, 8), stream[1].train.x)


def test_rotated_needs_an_image_source() -> None:
    with pytest.raises(ConfigError, match=r"^source"):
        rotated_stream(mnist1d(num_samples=50))
    with pytest.raises(ConfigError, match=r"^angles"):
        rotated_stream(digits(), n_experiences=3, angles=[0, 1])


# ---------------------------------------------------------------- blurry


def test_blur_weights_decay_linearly() -> None:
    np.testing.assert_allclose(blur_weights(5, 2, 0.3, 2), [0.05, 0.1, 0.7, 0.1, 0.05])
    np.testing.assert_allclose(blur_weights(5, 0, 0.3, 2), [0.7, 0.2, 0.1, 0.0, 0.0])
    np.testing.assert_allclose(blur_weights(5, 2, 0.3, 1), [0.0, 0.15, 0.7, 0.15, 0.0])
    np.testing.assert_allclose(blur_weights(1, 0, 0.3, 2), [1.0])
    assert largest_remainder(7, np.array([0.5, 0.25, 0.25])).tolist() == [3, 2, 2]  # largest fractions
    assert largest_remainder(10, np.array([0.55, 0.25, 0.2])).tolist() == [6, 2, 2]  # ties: lower index


def test_blurry_proportions_and_every_sample_once() -> None:
    src = toy_source(num_classes=6, per_class=40)
    stream = blurry_stream(src, n_experiences=3, blur=0.3, width=2, order_seed=4)
    order = stream.metadata["class_order"]
    home = {c: i // 2 for i, c in enumerate(order)}
    for c in range(6):
        counts = [int((exp.train.y == c).sum()) for exp in stream]
        assert counts == stream.metadata["class_counts"][c]
        assert np.all(np.abs(np.array(counts) - 40 * blur_weights(3, home[c], 0.3, 2)) < 1)
        assert counts[home[c]] == 28  # exactly 1 - blur at home
    # Samples are moved, never copied or lost.
    values = torch.cat([exp.train.x[:, 0, 0] for exp in stream]).sort().values
    assert torch.equal(values, src.train_x[:, 0, 0].sort().values)
    for k, exp in enumerate(stream):
        home_classes = sorted(order[2 * k : 2 * k + 2])
        assert sorted(set(exp.test.y.tolist())) == home_classes == stream.metadata["home_classes"][k]
        assert set(home_classes) < set(exp.classes) == set(exp.train.y.tolist())
    again = blurry_stream(src, n_experiences=3, blur=0.3, width=2, order_seed=4)
    assert all(torch.equal(a.train.x, b.train.x) for a, b in zip(stream, again))
    other = blurry_stream(src, n_experiences=3, blur=0.3, width=2, order_seed=4, blur_seed=1)
    assert not all(torch.equal(a.train.x, b.train.x) for a, b in zip(stream, other))


def test_blurry_without_blur_is_the_split_stream() -> None:
    src = toy_source(num_classes=6, per_class=5)
    blurry, split = blurry_stream(src, n_experiences=3, blur=0.0, order_seed=2), split_stream(src, 3, order_seed=2)
    for a, b in zip(blurry, split):
        assert a.classes == b.classes and torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    with pytest.raises(ConfigError, match=r"^blur"):
        blurry_stream(src, n_experiences=3, blur=1.0)
    with pytest.raises(ConfigError, match=r"^n_experiences"):
        blurry_stream(src, n_experiences=4)


# ---------------------------------------------------------------- online


def test_online_stream_marks_the_regime_only() -> None:
    base = split_stream(toy_source(), n_experiences=3)
    online = online_stream(base, batch_size=4)
    assert online.metadata["online"] == {"batch_size": 4} and online.name == "online_split_toy"
    assert online.experiences is base.experiences and online.scenario is base.scenario
    with pytest.raises(ConfigError, match=r"^batch_size"):
        online_stream(base, batch_size=0)
    with pytest.raises(ConfigError, match=r"^stream"):
        online_stream({"n_experiences": 3}, batch_size=4)  # type: ignore[arg-type]


# ---------------------------------------------------------------- Avalanche adapter


class _Tensors(torch.utils.data.TensorDataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        super().__init__(x, y)
        self.targets = y


def fake_benchmark(parts: list[tuple[torch.Tensor, torch.Tensor, int]]) -> SimpleNamespace:
    """A duck-typed benchmark (no Avalanche): experiences with ``dataset`` and ``task_labels``."""
    exps = [SimpleNamespace(dataset=_Tensors(x, y), task_labels=[t]) for x, y, t in parts]
    return SimpleNamespace(train_stream=exps, test_stream=exps)


def test_adapter_works_without_avalanche(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module imports and wraps a benchmark with ``avalanche`` unimportable."""
    for key in [k for k in sys.modules if k == "avalanche" or k.startswith("avalanche.")] or ["avalanche"]:
        monkeypatch.setitem(sys.modules, key, None)
    adapter = importlib.reload(importlib.import_module("clplat.streams.avalanche_adapter"))
    x = torch.randn(12, 5)  # vectors become 5 steps x 1 feature
    y = torch.arange(12) % 2
    stream = adapter.avalanche_stream(fake_benchmark([(x, y, 0), (x + 1, y, 0)]))
    assert stream.input_shape == (5, 1) and stream.scenario is Scenario.DOMAIN_INCREMENTAL
    assert torch.equal(stream[1].train.x[..., 0], x + 1) and [e.task_id for e in stream] == [0, 1]
    til = adapter.avalanche_stream(fake_benchmark([(x, y, 0), (x, y + 2, 1)]))
    assert til.scenario is Scenario.TASK_INCREMENTAL and til.task_classes == ((0, 1), (2, 3))
    with pytest.raises(ConfigError, match=r"^benchmark"):
        adapter.avalanche_stream(SimpleNamespace(train_stream=[], other=[]))
    mixed = SimpleNamespace(train_stream=[SimpleNamespace(dataset=_Tensors(x, y), task_labels=[0, 1])],
                            test_stream=[SimpleNamespace(dataset=_Tensors(x, y), task_labels=[0, 1])])
    with pytest.raises(ConfigError, match="one task label per experience"):
        adapter.avalanche_stream(mixed)


def test_avalanche_round_trip_preserves_every_sample(avalanche: Any, digits_raw: SourceData) -> None:
    from clplat.streams.avalanche_adapter import avalanche_stream

    to_images = lambda x: x.reshape(-1, 1, 8, 8)  # noqa: E731  rows layout of 8x8 scans
    datasets = {"train": avalanche.as_classification_dataset(_Tensors(to_images(digits_raw.train_x), digits_raw.train_y)),
                "test": avalanche.as_classification_dataset(_Tensors(to_images(digits_raw.test_x), digits_raw.test_y))}
    bm = avalanche.class_incremental_benchmark(datasets, num_experiences=5, seed=3)
    for layout in ("rows", "pixels"):
        stream = avalanche_stream(bm, layout=layout)
        assert len(stream) == 5 and stream.scenario is Scenario.CLASS_INCREMENTAL
        assert stream.input_shape == ((8, 8) if layout == "rows" else (64, 1))
        for exp, tr, te in zip(stream, bm.train_stream, bm.test_stream):
            for ours, theirs in ((exp.train, tr), (exp.test, te)):
                samples = [theirs.dataset[i] for i in range(len(theirs.dataset))]
                assert len(ours) == len(samples)
                xs = torch.stack([s[0] for s in samples])
                assert torch.equal(ours.x, images_to_layout(xs, layout))  # same samples, same order
                assert ours.y.tolist() == [int(s[1]) for s in samples]
            assert set(exp.classes) == set(tr.classes_in_this_experience)
    til = avalanche_stream(avalanche.task_incremental_benchmark(bm))
    assert til.scenario is Scenario.TASK_INCREMENTAL and [e.task_id for e in til] == list(range(5))
    assert til.task_classes == tuple(tuple(sorted(e.classes_in_this_experience)) for e in bm.train_stream)
    assert all(set(e.test.task.tolist()) == {k} for k, e in enumerate(til))


def test_benchmark_from_source_matches_the_split_stream(avalanche: Any, digits_raw: SourceData) -> None:
    from clplat.streams.avalanche_adapter import avalanche_stream, benchmark_from_source

    wrapped = avalanche_stream(benchmark_from_source(digits_raw, n_experiences=5, order_seed=3))
    split = split_stream(digits_raw, n_experiences=5, order_seed=3)
    for a, b in zip(wrapped, split):
        assert a.classes == b.classes and len(a.train) == len(b.train) and len(a.test) == len(b.test)
        for ours, theirs in ((a.train, b.train), (a.test, b.test)):  # the same samples, maybe reordered
            assert np.array_equal(sorted_rows(ours), sorted_rows(theirs))


def sorted_rows(data: Any) -> np.ndarray:
    """Samples as rows ``[y, x...]`` in lexicographic order: a multiset comparison of samples."""
    rows = torch.cat([data.y[:, None].float(), data.x.flatten(1)], 1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


def test_avalanche_split_mnist_keeps_counts_classes_and_task_labels(avalanche: Any, mnist_root: Path) -> None:
    from avalanche.benchmarks.classic import SplitMNIST

    from clplat.streams.avalanche_adapter import avalanche_stream

    for task_labels in (False, True):
        bm = SplitMNIST(n_experiences=5, seed=1, return_task_id=task_labels, dataset_root=str(mnist_root))
        stream = avalanche_stream(bm, layout="pixels")
        assert stream.input_shape == (784, 1) and stream.num_classes == 10
        assert stream.has_task_labels is task_labels
        for exp, tr, te in zip(stream, bm.train_stream, bm.test_stream):
            assert len(exp.train) == len(tr.dataset) and len(exp.test) == len(te.dataset)
            assert exp.classes == tuple(sorted(tr.classes_in_this_experience))
            assert exp.task_id == (tr.task_label if task_labels else exp.index)


# ---------------------------------------------------------------- configs and runs


def test_new_configs_exist_and_instantiate(mnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLPLAT_DATA", str(mnist_root))
    names = {p.stem for p in CONF.glob("*.yaml")}
    assert set(NEW_CONFIGS) <= names
    for name in NEW_CONFIGS:
        if name.startswith("avalanche") and importlib.util.find_spec("avalanche") is None:
            continue
        cfg = OmegaConf.load(CONF / f"{name}.yaml")
        stream = instantiate(cfg)
        assert isinstance(stream, Stream) and stream.name == name, name


# Tiny overrides per stream: 2 experiences, a few samples (the conftest TINY list names
# split-stream keys these streams do not have).
RUNS: dict[str, list[str]] = {
    "rotated_digits": ["stream.n_experiences=2"],
    "blurry_split_mnist1d": ["stream.source.num_samples=300", "stream.n_experiences=2",
                             "stream.classes_per_experience=5", "stream.width=1"],
    "online_split_mnist1d": ["stream.stream.source.num_samples=300", "stream.stream.n_experiences=2",
                             "stream.stream.classes_per_experience=5", "stream.batch_size=50"],
    "parity_curriculum": ["stream.n_experiences=2", "stream.train_samples=64", "stream.test_samples=32"],
    "parity_curriculum_multihead": ["stream.n_experiences=2", "stream.train_samples=64", "stream.test_samples=32"],
    "dms_curriculum": ["stream.n_experiences=2", "stream.train_samples=64", "stream.test_samples=32"],
    "dms_curriculum_multihead": ["stream.n_experiences=2", "stream.train_samples=64", "stream.test_samples=32"],
    "state_parity": ["stream.n_experiences=2", "stream.train_samples=64", "stream.test_samples=32"],
    "state_mod3_count": ["stream.n_experiences=2", "stream.train_samples=64", "stream.test_samples=32"],
    "avalanche_split_digits": ["stream.benchmark.n_experiences=2"],
    "avalanche_split_mnist": ["stream.benchmark.n_experiences=2", "stream.layout=rows"],
}
SMALL = ["backbone=gru", "strategy=replay", "backbone.hidden_size=8", "trainer.iterations=2", "trainer.batch_size=16",
         "eval.every_n_iters=null", "eval.subset_size=20", "logger=none", "print_summary=false",
         "trainer.checkpoint=false"]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_new_stream_trains_with_gru_and_replay(
    name: str, make_cfg: Callable[..., DictConfig], mnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name.startswith("avalanche"):
        pytest.importorskip("avalanche")
    monkeypatch.setenv("CLPLAT_DATA", str(mnist_root))
    # The run plots are tested elsewhere; matplotlib would take most of these tiny runs' time.
    monkeypatch.setattr("clplat.experiment.save_run_plots", lambda table, run_dir: {})
    cfg = make_cfg(f"stream={name}", *SMALL, *RUNS[name], tiny=False)
    result = run_experiment(cfg)
    summary = result.summary
    assert summary["stream"] == name and summary["num_experiences"] == 2 and summary["strategy"] == "replay"
    assert (result.run_dir / "metrics.csv").exists() and summary["avg_acc"] is not None
    if name == "online_split_mnist1d":  # one pass in batches of 50, whatever trainer.iterations says
        stream = run_stream(cfg)
        assert summary["global_iters"] == sum(math.ceil(len(e.train) / 50) for e in stream) != 2 * 2
    else:
        assert summary["global_iters"] == 4
    if name.endswith("multihead"):
        assert summary["scenario"] == "task_incremental" and summary["params"]["head"] == 8 * 4 + 4


def run_stream(cfg: DictConfig) -> Stream:
    from clplat.experiment import build_stream

    return build_stream(cfg)


def test_cli_trains_a_sequence_curriculum(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["stream=parity_curriculum_multihead", *SMALL, *RUNS["parity_curriculum_multihead"],
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.run([sys.executable, "-m", "clplat.train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "parity_curriculum_multihead: task_incremental, 2 experiences" in proc.stdout
    assert (run_dir / "summary.json").exists() and (run_dir / "accuracy_matrix.csv").exists()
