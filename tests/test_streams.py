"""Sources, split/permuted scenarios and the ``conf/stream`` configs.

torchvision sources are tested on small files written here in the real on-disk formats (MNIST
idx-ubyte, CIFAR python pickles); only CIFAR's md5 check is patched out. Nothing downloads.
"""

from __future__ import annotations

import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clplat import config_dir
from clplat.errors import ConfigError
from clplat.stream import Scenario, Stream
from clplat.streams.permuted import make_permutations, permuted_stream
from clplat.streams.sources import SourceData, cifar10, cifar100, digits, fashion_mnist, mnist, mnist1d
from clplat.streams.sources.mnist1d_source import _package_args, generate_vectorized, generate_with_package
from clplat.streams.split import class_order, split_stream

CONF = config_dir() / "stream"


# ---------------------------------------------------------------- fake torchvision files


def write_mnist_raw(root: Path, folder: str, n_train: int = 60, n_test: int = 20) -> dict[str, np.ndarray]:
    """MNIST-format idx-ubyte files under ``root/<folder>/raw``; returns what was written."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        header = struct.pack(">IIII", 0x0803, n, 28, 28)  # magic: ubyte, 3 dims; then the dims
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels.tobytes())
        written[prefix] = images
        written[prefix + "_labels"] = labels
    return written


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 12, n_test: int = 20) -> dict[str, np.ndarray]:
    """``cifar-10-batches-py`` with 5 train batches, a test batch and ``batches.meta``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(1)
    train = []
    for b in range(1, 6):
        data = rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)
        _pickle(folder / f"data_batch_{b}", {"data": data, "labels": [i % 10 for i in range(per_batch)]})
        train.append(data)
    test = rng.randint(0, 256, size=(n_test, 3072)).astype(np.uint8)
    _pickle(folder / "test_batch", {"data": test, "labels": [i % 10 for i in range(n_test)]})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return {"train": np.concatenate(train).reshape(-1, 3, 32, 32), "test": test.reshape(-1, 3, 32, 32)}


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> None:
    """``cifar-100-python`` with ``train``, ``test`` and ``meta`` (fine and coarse labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(2)
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        fine = [i % 100 for i in range(n)]
        _pickle(folder / name, {"data": data, "fine_labels": fine, "coarse_labels": [c // 5 for c in fine]})
    meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    _pickle(folder / "meta", meta)


@pytest.fixture
def no_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake CIFAR files cannot match the real md5 sums: check existence only."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


@pytest.fixture
def data_root(tmp_path: Path, no_cifar_md5: None) -> Path:
    """A data root holding fake MNIST, FashionMNIST, CIFAR-10 and CIFAR-100."""
    write_mnist_raw(tmp_path, "MNIST")
    write_mnist_raw(tmp_path, "FashionMNIST")
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- shared small sources


@pytest.fixture(scope="module")
def mnist1d_source() -> SourceData:
    return mnist1d()


@pytest.fixture(scope="module")
def digits_source() -> SourceData:
    return digits()


def toy_source(num_classes: int = 6, per_class: int = 4, t: int = 3, f: int = 2) -> SourceData:
    """A tiny source with distinct values, for exact checks."""
    n = num_classes * per_class
    y = torch.arange(n) % num_classes
    return SourceData(
        name="toy",
        train_x=torch.arange(n * t * f, dtype=torch.float32).reshape(n, t, f),
        train_y=y,
        test_x=-torch.arange(n * t * f, dtype=torch.float32).reshape(n, t, f),
        test_y=y.clone(),
        num_classes=num_classes,
    )


def assert_standardized(src: SourceData) -> None:
    std, mean = torch.std_mean(src.train_x, dim=(0, 1), correction=0)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-3)


# ---------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_dtypes_and_standardisation(mnist1d_source: SourceData) -> None:
    src = mnist1d_source
    assert src.train_x.shape == (4000, 40, 1) and src.test_x.shape == (1000, 40, 1)
    assert src.train_x.dtype == torch.float32 and src.train_y.dtype == torch.int64
    assert src.num_classes == 10 and set(src.train_y.tolist()) == set(range(10))
    assert src.input_shape == (40, 1)
    assert_standardized(src)
    assert src.metadata["standardized"] and len(src.metadata["feature_mean"]) == 1


@pytest.mark.parametrize("seed,shuffle_seq", [(42, False), (3, True)])
def test_mnist1d_vectorized_matches_package_bit_for_bit(seed: int, shuffle_seq: bool) -> None:
    args = _package_args(300, seed, 0.8, 40, shuffle_seq)
    np_state, py_state = np.random.get_state(), random.getstate()
    ours, theirs = generate_vectorized(args), generate_with_package(args)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(ours[key], theirs[key])
    # Neither path may leave numpy's / Python's global RNG reseeded.
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_mnist1d_is_seeded() -> None:
    a, b, c = (mnist1d(num_samples=200, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.train_x, c.train_x)


def test_mnist1d_bad_values() -> None:
    with pytest.raises(ConfigError, match="^implementation"):
        mnist1d(implementation="fast")
    with pytest.raises(ConfigError, match="^train_split"):
        mnist1d(num_samples=10, train_split=0.05)


# ---------------------------------------------------------------- digits


def test_digits_layouts_and_stratified_split(digits_source: SourceData) -> None:
    from sklearn.datasets import load_digits

    rows, pixels = digits_source, digits(layout="pixels")
    assert rows.train_x.shape == (1437, 8, 8) and rows.test_x.shape == (360, 8, 8)
    assert pixels.train_x.shape == (1437, 64, 1)
    assert_standardized(rows)
    assert_standardized(pixels)
    all_counts = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(rows.test_y.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * all_counts) <= 1)  # stratified


def test_digits_raw_values_follow_layout() -> None:
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float()
    rows, pixels = digits(standardize=False), digits(layout="pixels", standardize=False)
    assert torch.equal(pixels.train_x, rows.train_x.reshape(-1, 64, 1))
    # Every raw train sequence is one of the data set's images read row by row.
    flat = images.reshape(len(images), -1)
    assert all(bool((flat == seq.reshape(-1)).all(1).any()) for seq in rows.train_x[:20])


def test_digits_split_is_seeded() -> None:
    a, b, c = digits(seed=5), digits(seed=5), digits(seed=6)
    assert torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.test_x, c.test_x)
    with pytest.raises(ConfigError, match="^layout"):
        digits(layout="columns")
    with pytest.raises(ConfigError, match="^test_fraction"):
        digits(test_fraction=1.5)


# ---------------------------------------------------------------- torchvision


@pytest.mark.parametrize("builder,folder", [(mnist, "MNIST"), (fashion_mnist, "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path: Path, builder, folder: str) -> None:
    written = write_mnist_raw(tmp_path, folder)
    rows = builder(root=str(tmp_path), standardize=False)
    pixels = builder(root=str(tmp_path), layout="pixels")
    assert rows.train_x.shape == (60, 28, 28) and rows.test_x.shape == (20, 28, 28)
    assert pixels.train_x.shape == (60, 784, 1) and rows.num_classes == 10
    assert torch.equal(rows.train_x, torch.from_numpy(written["train"]).float())
    assert torch.equal(rows.test_y, torch.from_numpy(written["t10k_labels"]).long())
    assert_standardized(pixels)


def test_subsampling_is_seeded(tmp_path: Path) -> None:
    write_mnist_raw(tmp_path, "MNIST")
    a = mnist(root=str(tmp_path), max_train_samples=17, max_test_samples=5, seed=3)
    b = mnist(root=str(tmp_path), max_train_samples=17, max_test_samples=5, seed=3)
    c = mnist(root=str(tmp_path), max_train_samples=17, max_test_samples=5, seed=4)
    assert a.train_x.shape == (17, 28, 28) and a.test_x.shape == (5, 28, 28)
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)


def test_cifar10_layouts_from_pickles(tmp_path: Path, no_cifar_md5: None) -> None:
    chw = torch.from_numpy(write_cifar10(tmp_path)["train"]).float()  # (N, C, H, W)
    rows = cifar10(root=str(tmp_path), standardize=False)
    pixels = cifar10(root=str(tmp_path), layout="pixels", standardize=False)
    assert rows.train_x.shape == (60, 32, 96) and rows.test_x.shape == (20, 32, 96)
    assert pixels.train_x.shape == (60, 1024, 3) and rows.num_classes == 10
    # rows: step = image row, features = (r, g, b) of each pixel in turn.
    assert torch.equal(rows.train_x[:, 5, 3 * 7 + 2], chw[:, 2, 5, 7])
    # pixels: step = raster position, features = channels.
    assert torch.equal(pixels.train_x[:, 5 * 32 + 7, :], chw[:, :, 5, 7])


def test_cifar100_from_pickles(tmp_path: Path, no_cifar_md5: None) -> None:
    write_cifar100(tmp_path)
    src = cifar100(root=str(tmp_path))
    assert src.num_classes == 100 and src.train_x.shape == (200, 32, 96)
    assert src.train_y.tolist() == [i % 100 for i in range(200)]
    assert_standardized(src)


@pytest.mark.parametrize("builder", [mnist, fashion_mnist, cifar10, cifar100])
def test_missing_root_names_the_key_and_the_fix(tmp_path: Path, builder) -> None:
    with pytest.raises(ConfigError, match=r"^root") as err:
        builder(root=str(tmp_path / "nowhere"))
    assert "download=true" in str(err.value)


def test_bad_layout_is_a_config_error(tmp_path: Path) -> None:
    write_mnist_raw(tmp_path, "MNIST")
    with pytest.raises(ConfigError, match="^layout"):
        mnist(root=str(tmp_path), layout="columns")


# ---------------------------------------------------------------- split scenario


@pytest.mark.parametrize("order_seed", [None, 0, 7])
def test_split_classes_are_disjoint_and_cover(mnist1d_source: SourceData, order_seed: int | None) -> None:
    stream = split_stream(mnist1d_source, n_experiences=5, order_seed=order_seed)
    assert isinstance(stream, Stream) and stream.scenario is Scenario.CLASS_INCREMENTAL
    seen: set[int] = set()
    for k, exp in enumerate(stream):
        assert len(exp.classes) == 2 and not seen & set(exp.classes)
        seen |= set(exp.classes)
        assert exp.task_id == k and set(exp.train.task.tolist()) == {k} and set(exp.test.task.tolist()) == {k}
        assert set(exp.train.y.tolist()) == set(exp.classes) == set(exp.test.y.tolist())
    assert seen == set(range(10))
    assert sum(len(e.train) for e in stream) == 4000 and sum(len(e.test) for e in stream) == 1000
    order = stream.metadata["class_order"]
    expected = [c for k in range(5) for c in sorted(order[2 * k : 2 * k + 2])]
    assert [c for e in stream for c in e.classes] == expected
    assert stream.metadata["source"] == "mnist1d" and stream.metadata["order_seed"] == order_seed


def test_split_keeps_global_labels_and_data() -> None:
    src = toy_source()
    stream = split_stream(src, n_experiences=3, order_seed=1)
    for exp in stream:
        mask = torch.isin(src.train_y, torch.tensor(exp.classes))
        assert torch.equal(exp.train.x, src.train_x[mask]) and torch.equal(exp.train.y, src.train_y[mask])


def test_class_order_determinism() -> None:
    assert class_order(10, None) == list(range(10))
    assert class_order(10, 3) == class_order(10, 3)
    assert class_order(10, 3) != class_order(10, 4)
    assert sorted(class_order(10, 3)) == list(range(10))
    a = split_stream(toy_source(), n_experiences=3, order_seed=11)
    b = split_stream(toy_source(), n_experiences=3, order_seed=11)
    assert [e.classes for e in a] == [e.classes for e in b]


def test_split_task_incremental(digits_source: SourceData) -> None:
    stream = split_stream(digits_source, n_experiences=5, task_labels=True)
    assert stream.scenario is Scenario.TASK_INCREMENTAL and stream.has_task_labels
    assert stream.num_tasks == 5 and stream.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert not split_stream(digits_source).has_task_labels


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"n_experiences": 5, "classes_per_experience": 3}, "classes_per_experience"),
        ({"n_experiences": 5, "classes_per_experience": 1}, "classes_per_experience"),
        ({"n_experiences": 4}, "n_experiences"),  # 10 classes do not split into 4
        ({"n_experiences": 0}, "n_experiences"),
        ({"n_experiences": 11}, "n_experiences"),
        ({"order_seed": -1}, "order_seed"),
        ({"task_labels": "yes"}, "task_labels"),
    ],
)
def test_split_bad_values(digits_source: SourceData, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        split_stream(digits_source, **kwargs)


def test_scenario_rejects_an_uninstantiated_source() -> None:
    with pytest.raises(ConfigError, match=r"^source"):
        split_stream({"layout": "rows"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^source"):
        permuted_stream({"layout": "rows"})  # type: ignore[arg-type]


# ---------------------------------------------------------------- permuted scenario


def test_permuted_stream_structure(digits_source: SourceData) -> None:
    src = digits_source
    stream = permuted_stream(src, n_experiences=4, permutation_seed=0)
    assert stream.scenario is Scenario.DOMAIN_INCREMENTAL and len(stream) == 4
    assert torch.equal(stream[0].train.x, src.train_x)  # first_identity
    for k, exp in enumerate(stream):
        assert exp.task_id == k and set(exp.test.task.tolist()) == {k}
        assert exp.classes == tuple(range(10))
        assert torch.equal(exp.train.y, src.train_y) and torch.equal(exp.test.y, src.test_y)
        # A true permutation: each sample keeps its multiset of values.
        for ours, orig in ((exp.train.x, src.train_x), (exp.test.x, src.test_x)):
            assert torch.equal(ours.flatten(1).sort(1).values, orig.flatten(1).sort(1).values)
    assert not torch.equal(stream[1].train.x, stream[2].train.x)
    assert permuted_stream(src, n_experiences=2, task_labels=True).scenario is Scenario.TASK_INCREMENTAL


def test_permutations_are_seeded_and_prefix_stable() -> None:
    a = make_permutations(64, 5, permutation_seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a, make_permutations(64, 5, permutation_seed=3)))
    assert not torch.equal(a[1], make_permutations(64, 5, permutation_seed=4)[1])
    assert all(torch.equal(p.sort().values, torch.arange(64)) for p in a)
    assert torch.equal(a[0], torch.arange(64))
    # Experience k's permutation does not depend on first_identity or on the stream's length.
    b = make_permutations(64, 3, permutation_seed=3, first_identity=False)
    assert not torch.equal(b[0], torch.arange(64))
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_permuted_stream_is_deterministic() -> None:
    src = toy_source()
    a, b = permuted_stream(src, permutation_seed=9), permuted_stream(src, permutation_seed=9)
    assert all(torch.equal(x.train.x, y.train.x) for x, y in zip(a, b))
    assert not torch.equal(a[1].train.x, permuted_stream(src, permutation_seed=10)[1].train.x)


@pytest.mark.parametrize(
    "kwargs,key",
    [({"n_experiences": 0}, "n_experiences"), ({"permutation_seed": -2}, "permutation_seed"),
     ({"first_identity": "no"}, "first_identity")],
)
def test_permuted_bad_values(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        permuted_stream(toy_source(), **kwargs)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_stream_config_instantiates(
    path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLPLAT_DATA", str(data_root))  # torchvision configs read their root from it
    cfg = OmegaConf.load(path)
    stream = instantiate(cfg)
    assert isinstance(stream, Stream) and stream.name == path.stem
    if "n_experiences" in cfg:  # wrapper streams (avalanche) take the count from what they wrap
        assert len(stream) == cfg.n_experiences
    assert stream.num_classes >= 2
    assert stream.describe().startswith(path.stem)
    if "root" in cfg.get("source", {}):
        assert stream.metadata["source_metadata"]["root"] == str(data_root)


def test_required_configs_exist() -> None:
    names = {p.stem for p in CONF.glob("*.yaml")}
    assert {
        "split_mnist1d", "split_mnist1d_til", "permuted_mnist1d", "split_digits",
        "permuted_digits", "split_mnist", "permuted_mnist", "split_cifar10",
    } <= names


def test_config_errors_survive_hydra(tmp_path: Path) -> None:
    """Hydra wraps errors from a target; the ConfigError stays reachable as the cause, its key
    relative to the source, and ``instantiate_node`` qualifies it with the path of the node that
    failed, wherever the config puts the stream."""
    from clplat.experiment import instantiate_node

    cfg = OmegaConf.load(CONF / "split_mnist.yaml")
    cfg.source.root = str(tmp_path / "missing")
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg)
    assert isinstance(err.value.__cause__, ConfigError) and err.value.__cause__.key == ".root"
    for key in ("stream", "experiment.stream"):
        with pytest.raises(ConfigError, match=rf"^{key}\.source\.root=") as qualified:
            instantiate_node(cfg, key)
        assert qualified.value.key == f"{key}.source.root"
    nested = OmegaConf.create({"run": {"stream": cfg}})  # a node inside a config: Hydra's full_key is the whole path
    with pytest.raises(ConfigError, match=r"^mystream\.source\.root="):
        instantiate_node(nested.run.stream, "mystream")
