"""The diagonal Fisher information shared by EWC / online EWC and refresh learning.

Both reference implementations (mammoth ``models/ewc_on.py``; the refresh-learning code of Wang
et al., ICLR 2024, ``joey-wang123/CL-refresh-learning``) estimate it the same way, one training
sample at a time::

    ll = log_softmax(f(x))[y];  w = exp(ll) = p(y | x)
    F += w * (d ll / d theta)^2            then F /= number of samples

i.e. the empirical Fisher weighted by the model's confidence in the true label. We compute
exactly that quantity (per-sample gradients, not minibatch gradients: squaring a minibatch mean
is a different, biased estimate). Deviations, both for cost on CPU:

- ``max_samples`` draws a uniform random subset of the task's training set (seeded) instead of
  using all of it. The result is an unbiased estimate of the same mean; ``None`` uses every
  sample as the references do.
- The network is in eval mode (no dropout) and the inputs are un-augmented; the references use
  whatever mode the net is in (refresh: train mode, where BatchNorm sees single samples).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clplat.stream import SequenceData

from .common import named_trainable, random_subset


def diagonal_fisher(module: nn.Module, data: SequenceData, max_samples: int | None,
                    generator: torch.Generator) -> dict[str, Tensor]:
    """Mean over samples of ``p(y|x) * (grad log p(y|x))^2`` for every trainable parameter."""
    named = named_trainable(module)
    names = [n for n, _ in named]
    params = [p for _, p in named]
    fisher = {n: torch.zeros_like(p) for n, p in named}
    if len(data) == 0:
        return fisher
    index = random_subset(len(data), max_samples, generator)
    device = params[0].device
    was_training = module.training
    module.eval()
    try:
        for i in index.tolist():
            x = data.x[i : i + 1].to(device)
            task = data.task[i : i + 1].to(device)
            y = int(data.y[i])
            log_probs = torch.log_softmax(module(x, task), dim=1)
            ll = log_probs[0, y]
            grads = torch.autograd.grad(ll, params, allow_unused=True)
            weight = ll.detach().exp()
            for name, g in zip(names, grads):
                if g is not None:
                    fisher[name].add_(weight * g.detach().pow(2))
    finally:
        module.train(was_training)
    count = float(len(index))
    return {n: f / count for n, f in fisher.items()}


__all__ = ["diagonal_fisher"]
