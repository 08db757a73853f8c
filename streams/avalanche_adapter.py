"""Run any Avalanche benchmark through clplat: wrap its streams as a ``clplat.stream.Stream``.

Avalanche (``avalanche-lib``, 0.6.0) is the most complete library of CL benchmarks; rather than
re-implementing them, ``avalanche_stream`` reads a benchmark object — a classic one such as
``SplitMNIST`` or one built with ``class_incremental_benchmark`` from tensors — and materialises
each experience once into tensors, which is what clplat's loaders and evaluator are built on.

What is kept: the experience order (``train_stream[k]`` is clplat experience ``k``, paired with
``test_stream[k]``), every sample (no subsampling, no relabelling: Avalanche's labels are used as
the global labels), the classes present per experience, and the task labels. A benchmark whose
experiences carry different task labels becomes a task-incremental stream whose task ids *are*
Avalanche's task labels (so ``head.type=auto`` builds one head per task); otherwise the task id
is the experience index, as in every clplat stream, the Avalanche label is recorded in the
metadata, and the scenario is domain-incremental when every experience has the same classes and
class-incremental otherwise (``scenario`` overrides the guess).

Inputs become sequences by the stream's declared rule: image samples ``(C, H, W)`` follow
``layout`` (``rows``: T=H, F=W*C; ``pixels``: T=H*W, F=C, as ``clplat.streams.sources``), samples that are
already ``(T, F)`` are kept, vectors ``(D,)`` become ``D`` steps of 1 feature.

Transforms: the benchmark's ``eval`` transform group is applied by default, to train and test
alike. clplat holds tensors, so a random training augmentation would be drawn once and frozen —
a fixed perturbed copy, not augmentation — and the deterministic group is the honest default;
``transform_group="train"`` materialises the train group anyway (classic Avalanche benchmarks
such as SplitMNIST use the same transform in both groups). ``standardize`` applies clplat's
per-feature rule with the training data's statistics; off by default because Avalanche's
transforms already normalise and a round trip should give back Avalanche's own tensors.

Avalanche is imported lazily, only by the helpers that build a benchmark: wrapping one needs
nothing from the package (the object is read through its public attributes), so ``clplat`` and
``streams`` import and work without ``avalanche-lib`` installed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from clplat.errors import ConfigError, check_choice, check_int
from clplat.stream import Experience, Scenario, SequenceData, Stream

from .rotated import images_to_layout, image_geometry, sequences_to_images
from .sources.base import _MIN_STD as MIN_STD
from .sources.base import LAYOUTS, SourceData, require_source
from .split import class_order

TRANSFORM_GROUPS = ("eval", "train", "current")
SCENARIOS = ("auto", *(s.value for s in Scenario))


def _require_benchmark(benchmark: Any) -> None:
    if not (hasattr(benchmark, "train_stream") and hasattr(benchmark, "test_stream")):
        raise ConfigError(".benchmark", type(benchmark).__name__,
                          "must be an Avalanche benchmark (an object with train_stream and test_stream), "
                          "e.g. a config with _target_: avalanche.benchmarks.classic.SplitMNIST")


def _with_group(dataset: Any, group: str) -> Any:
    """The dataset with its ``group`` transforms active (``current``: as the benchmark left it)."""
    if group == "current":
        return dataset
    switch = getattr(dataset, group, None)  # AvalancheDataset.eval() / .train() return a view
    return switch() if callable(switch) else dataset


def to_sequences(x: Tensor, layout: str) -> Tensor:
    """A batch of Avalanche inputs ``(N, ...)`` as sequences ``(N, T, F)`` (see the module docs)."""
    if x.dim() == 4:  # (N, C, H, W) images, channels first as torchvision and Avalanche give them
        return images_to_layout(x, layout)
    if x.dim() == 3:
        return x
    if x.dim() == 2:
        return x[..., None]
    raise ConfigError(".layout", layout, f"cannot read samples of shape {tuple(x.shape[1:])} as sequences")


def _materialise(dataset: Any, layout: str, batch_size: int, default_task: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every sample of an Avalanche dataset, in its order: ``x (N, T, F)``, ``y (N,)``, ``task (N,)``.

    Read through a plain ``DataLoader`` (no workers, no shuffling) so the dataset's own
    ``__getitem__`` and transforms produce exactly what Avalanche would feed a model.
    """
    from torch.utils.data import DataLoader

    xs, ys, ts = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        x, y = batch[0], torch.as_tensor(batch[1])
        xs.append(to_sequences(torch.as_tensor(x).float(), layout))
        ys.append(y.long())
        ts.append(torch.as_tensor(batch[2]).long() if len(batch) > 2 else torch.full_like(y, default_task).long())
    if not xs:
        raise ConfigError(".benchmark", type(dataset).__name__, "has an empty experience")
    return torch.cat(xs), torch.cat(ys), torch.cat(ts)


def _single_task_label(exp: Any) -> int:
    """The experience's task label when it has exactly one, else 0 (samples then carry their own)."""
    labels = getattr(exp, "task_labels", None)
    return int(labels[0]) if labels is not None and len(labels) == 1 else 0


def _experience_task_labels(exp: Any, tasks: Tensor) -> list[int]:
    labels = getattr(exp, "task_labels", None)
    if labels is None:
        labels = torch.unique(tasks).tolist()
    return sorted(int(t) for t in labels)


def avalanche_stream(
    benchmark: Any,
    layout: str = "rows",
    transform_group: str = "eval",
    standardize: bool = False,
    scenario: str = "auto",
    batch_size: int = 1024,
    name: str | None = None,
) -> Stream:
    """Wrap an Avalanche ``benchmark`` as a clplat stream (see the module docs for the rules)."""
    _require_benchmark(benchmark)
    check_choice(".layout", layout, LAYOUTS)
    check_choice(".transform_group", transform_group, TRANSFORM_GROUPS)
    check_choice(".standardize", standardize, (True, False))
    check_choice(".scenario", scenario, SCENARIOS)
    check_int(".batch_size", batch_size, minimum=1)
    train_exps, test_exps = list(benchmark.train_stream), list(benchmark.test_stream)
    if len(train_exps) != len(test_exps):
        raise ConfigError(".benchmark", type(benchmark).__name__,
                          f"needs one test experience per train experience (got {len(train_exps)} train, "
                          f"{len(test_exps)} test)")

    parts, task_labels = [], []
    for k, (tr, te) in enumerate(zip(train_exps, test_exps)):
        default = _single_task_label(tr)
        train = _materialise(_with_group(tr.dataset, transform_group), layout, batch_size, default)
        test = _materialise(_with_group(te.dataset, transform_group), layout, batch_size, default)
        labels = _experience_task_labels(tr, train[2])
        if len(labels) != 1 or _experience_task_labels(te, test[2]) != labels:
            raise ConfigError(".benchmark", type(benchmark).__name__,
                              f"experience {k} mixes task labels {labels}; clplat needs one task label per experience")
        parts.append((train, test))
        task_labels.append(labels[0])

    if standardize:  # clplat's rule (clplat.streams.sources.base.standardize), statistics of all training data
        std, mean = torch.std_mean(torch.cat([tr[0] for tr, _ in parts]), dim=(0, 1), correction=0)
        std = torch.where(std < MIN_STD, torch.ones_like(std), std)
        parts = [((tr[0].sub(mean).div(std), *tr[1:]), (te[0].sub(mean).div(std), *te[1:])) for tr, te in parts]

    class_sets = [tuple(sorted(set(tr[1].tolist()))) for tr, _ in parts]
    if scenario == "auto":
        if len(set(task_labels)) > 1:
            chosen = Scenario.TASK_INCREMENTAL
        elif len(set(class_sets)) == 1 and len(parts) > 1:
            chosen = Scenario.DOMAIN_INCREMENTAL
        else:
            chosen = Scenario.CLASS_INCREMENTAL
    else:
        chosen = Scenario(scenario)
    use_avalanche_tasks = chosen is Scenario.TASK_INCREMENTAL and len(set(task_labels)) > 1

    experiences = []
    for k, ((train, test), classes) in enumerate(zip(parts, class_sets)):
        task_id = task_labels[k] if use_avalanche_tasks else k
        experiences.append(
            Experience(
                index=k,
                task_id=task_id,
                train=SequenceData.with_task(train[0], train[1], task_id),
                test=SequenceData.with_task(test[0], test[1], task_id),
                classes=classes,
                name=f"exp{k}:task={task_labels[k]}:classes={','.join(map(str, classes))}",
            )
        )
    all_labels = torch.cat([torch.cat([tr[1], te[1]]) for tr, te in parts])
    num_classes = int(getattr(benchmark, "n_classes", None) or (int(all_labels.max()) + 1))
    return Stream(
        name=name or f"avalanche_{type(benchmark).__name__.lower()}",
        scenario=chosen,
        experiences=tuple(experiences),
        num_classes=num_classes,
        input_shape=tuple(experiences[0].train.x.shape[1:]),  # type: ignore[arg-type]
        metadata={
            "builder": "avalanche",
            "benchmark": type(benchmark).__name__,
            "avalanche_task_labels": task_labels,
            "classes_per_experience": [list(c) for c in class_sets],
            "train_sizes": [len(e.train) for e in experiences],
            "test_sizes": [len(e.test) for e in experiences],
            "layout": layout,
            "transform_group": transform_group,
            "standardized": standardize,
            "n_experiences": len(experiences),
        },
    )


# ---------------------------------------------------------------- benchmarks without downloads


def _classification_dataset(x: Tensor, y: Tensor) -> Any:
    """An Avalanche classification dataset over tensors (targets known without reading samples)."""
    from avalanche.benchmarks.utils import as_classification_dataset
    from torch.utils.data import TensorDataset

    class _Tensors(TensorDataset):
        def __init__(self, inputs: Tensor, targets: Tensor):
            super().__init__(inputs, targets)
            self.targets = targets

    return as_classification_dataset(_Tensors(x, y))


def benchmark_from_tensors(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    n_experiences: int,
    class_order_list: Sequence[int] | None = None,
    task_labels: bool = False,
) -> Any:
    """An Avalanche class-incremental benchmark over ``(x, y)`` tensors, via Avalanche's own
    ``class_incremental_benchmark`` (and ``task_incremental_benchmark`` for task labels)."""
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
    from avalanche.benchmarks.scenarios.task_aware import task_incremental_benchmark

    order = list(class_order_list) if class_order_list is not None else sorted(set(train[1].tolist()))
    bm = class_incremental_benchmark(
        {"train": _classification_dataset(*train), "test": _classification_dataset(*test)},
        class_order=order, num_experiences=n_experiences,
    )
    return task_incremental_benchmark(bm) if task_labels else bm


def benchmark_from_source(
    source: SourceData,
    n_experiences: int = 5,
    order_seed: int | None = None,
    task_labels: bool = False,
    as_images: bool = True,
) -> Any:
    """An Avalanche benchmark built from a clplat source, so an Avalanche run needs no download.

    The class order is clplat's (``clplat.streams.split.class_order``), so the benchmark has the same
    experiences as ``split_stream`` with the same ``order_seed`` — the adapter's tests compare
    the two. ``as_images`` hands Avalanche ``(C, H, W)`` images (the source's layout undone), the
    form Avalanche's vision benchmarks have, so the adapter's ``layout`` rule is exercised.
    """
    source = require_source(source)
    check_int(".n_experiences", n_experiences, minimum=1)
    check_int(".order_seed", order_seed, minimum=0, allow_none=True)
    check_choice(".task_labels", task_labels, (True, False))
    check_choice(".as_images", as_images, (True, False))
    if source.num_classes % n_experiences:
        raise ConfigError(".n_experiences", n_experiences,
                          f"must divide the {source.num_classes} classes of {source.name}")
    train_x, test_x = source.train_x, source.test_x
    if as_images:
        layout, h, w, c = image_geometry(source)
        train_x, test_x = (sequences_to_images(x, layout, h, w, c).contiguous() for x in (train_x, test_x))
    return benchmark_from_tensors((train_x, source.train_y), (test_x, source.test_y), n_experiences,
                                  class_order(source.num_classes, order_seed), task_labels)


def avalanche_available() -> bool:
    """Whether ``avalanche-lib`` can be imported (tests and docs use it to skip, not fail)."""
    import importlib.util

    return importlib.util.find_spec("avalanche") is not None
