"""Small pieces several strategies share: parameter snapshots, a masked logit-regression loss,
seeded subsets, and a manual optimisation loop for the work some methods do *between* the
Lightning ``fit`` calls (power-law rehearsal sessions, LwF's head warm-up, FPF fine-tuning).

Why a manual loop: the platform's loop gives each experience exactly one ``fit`` with a fixed
budget of batches. A method whose paper trains on *other* data at a task boundary (a rehearsal
session after each task, a classifier warm-up before it, a post-hoc fine-tuning) does that work
here, with its own seeded batch order and a fresh optimizer from the run's optimizer factory.
Those steps do not advance ``global_step`` and are not evaluated in between; the boundary
evaluation that follows ``after_experience`` sees their result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from clplat.buffers import ReplayBuffer
from clplat.stream import SequenceData

if TYPE_CHECKING:
    from clplat.module import ContinualModule

Batch = tuple[Tensor, Tensor, Tensor]


def named_trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs that receive gradients, in a fixed order."""
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters (anchors, checkpoints for sensitivity)."""
    return {name: p.detach().clone() for name, p in named_trainable(module)}


def zeros_like_params(module: nn.Module) -> dict[str, Tensor]:
    return {name: torch.zeros_like(p) for name, p in named_trainable(module)}


def to_device(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """A name -> tensor mapping on ``device`` (states are checkpointed on the CPU)."""
    return {k: v.to(device) for k, v in tensors.items()}


def finite_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the entries where ``target`` (and ``prediction``) are finite.

    DER regresses stored logits. With a multi-head or a seen-class mask, logits outside the
    sample's head are ``-inf`` in both tensors and ``-inf - -inf`` is NaN; those entries carry no
    information, so they are left out of the mean. With an ordinary single head every entry is
    finite and this is exactly ``F.mse_loss`` (mammoth's DER loss).
    """
    mask = torch.isfinite(target) & torch.isfinite(prediction)
    if bool(mask.all()):
        return torch.nn.functional.mse_loss(prediction, target)
    diff = torch.where(mask, prediction - target, torch.zeros_like(prediction))
    return diff.pow(2).sum() / mask.sum().clamp_min(1)


def random_subset(n: int, k: int | None, generator: torch.Generator) -> Tensor:
    """``min(k, n)`` indices of ``range(n)`` drawn uniformly without replacement (``k=None``: all)."""
    perm = torch.randperm(n, generator=generator)
    return perm if k is None else perm[: min(k, n)]


def sample_buffer(buffer: ReplayBuffer, n: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Like ``buffer.sample`` but drawing with *our* generator, so a plugin that reads another
    strategy's buffer does not shift that strategy's own sampling stream."""
    size = len(buffer)
    if size == 0:
        raise RuntimeError("cannot sample from an empty buffer")
    index = torch.randperm(size, generator=generator)[: min(n, size)].to(buffer.x.device)
    out = {"x": buffer.x[index], "y": buffer.y[index], "task": buffer.task[index]}
    out.update({k: v[index] for k, v in buffer.extras.items()})
    return out


def epoch_batches(data: SequenceData, batch_size: int, epochs: int, generator: torch.Generator) -> Iterator[Batch]:
    """``epochs`` reshuffled passes over ``data`` in batches (the last batch of a pass may be short)."""
    n = len(data)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            yield data.x[index], data.y[index], data.task[index]


def manual_steps(module: "ContinualModule", params: list[nn.Parameter], batches: Iterable[Batch],
                 loss_fn: Callable[[Batch], Tensor], optimizer: torch.optim.Optimizer | None = None) -> int:
    """Optimise ``params`` only, one step per batch; returns the number of steps taken.

    Gradients are taken with ``torch.autograd.grad`` for ``params`` alone, so the other
    parameters' ``.grad`` are untouched and nothing else moves. The module is in train mode
    during the loop (as in the papers' fine-tuning loops) and its previous mode is restored.
    """
    device = next(module.parameters()).device
    optimizer = optimizer if optimizer is not None else module.optimizer_factory(params)
    was_training = module.training
    module.train()
    steps = 0
    try:
        for batch in batches:
            batch = tuple(t.to(device) for t in batch)
            loss = loss_fn(batch)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.detach()
            optimizer.step()
            steps += 1
    finally:
        for p in params:
            p.grad = None
        module.train(was_training)
    return steps


__all__ = ["named_trainable", "snapshot", "zeros_like_params", "to_device", "finite_mse", "random_subset", "sample_buffer",
           "epoch_batches", "manual_steps"]
