"""How large is one refresh unlearning step against one optimizer step? (docs/strategies.md "refresh")

Trains DER++ (buffer 500, alpha 0.1, beta 0.5) with the refresh plugin on the default stream
(split MNIST-1D, 5 experiences) and GRU-128, batch 32, ``--epochs`` per experience, outside
Lightning so every step's displacements can be read: per refresh step, the whole-model norm of the
unlearning displacement over the norm of the optimizer step that follows it. Prints quartiles per
experience. ``--form authors`` is the authors' step (``scale=weight_norm``, delta 1e-5, every step),
``--form default`` the plugin's defaults (``conf/plugin/refresh.yaml``)::

    OMP_NUM_THREADS=1 python benchmarks/refresh_step_ratio.py --optimizer sgd --form authors   # ~0.005
    OMP_NUM_THREADS=1 python benchmarks/refresh_step_ratio.py --optimizer adam --form authors  # ~1e-3
    OMP_NUM_THREADS=1 python benchmarks/refresh_step_ratio.py --optimizer adam --form default  # ~0.005
"""

from __future__ import annotations

import argparse
import statistics

import torch
from omegaconf import OmegaConf

from clplat.backbones.rnn import GRUBackbone
from clplat.heads import SingleHead
from clplat.module import ContinualModule
from clplat.hooks import Hooks
from clplat.strategies.der import DER
from clplat.strategies.refresh import Refresh
from clplat.streams.sources.mnist1d_source import mnist1d
from clplat.streams.split import split_stream

OPTIMIZERS = {  # clplat's default Adam; the authors' SGD (their derpp.py)
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.03, weight_decay=1e-4),
}


def refresh(form: str) -> Refresh:
    if form == "authors":
        return Refresh(scale="weight_norm", gamma=1e-5, interval=1)
    node = OmegaConf.to_container(OmegaConf.load("conf/plugin/refresh.yaml"))
    return Refresh(**{k: v for k, v in node.items() if not k.startswith("_") and k not in ("search_space", "seed")})


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd")
    parser.add_argument("--form", choices=["authors", "default"], default="authors")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--experiences", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    stream = split_stream(mnist1d(num_samples=5000, seed=42), n_experiences=5, classes_per_experience=2)
    hooks = Hooks(DER(buffer_size=500, alpha=0.1, beta=0.5), [refresh(args.form)])
    module = ContinualModule(GRUBackbone(stream[0].train.x.shape[-1], 128), SingleHead(128, stream.num_classes),
                             hooks, OPTIMIZERS[args.optimizer])
    hooks.setup(module, stream)
    generator = torch.Generator().manual_seed(0)
    for exp in list(stream)[: args.experiences]:
        optimizer = OPTIMIZERS[args.optimizer](module.parameters())
        hooks.before_experience(exp)
        ratios, n = [], len(exp.train)
        for _ in range(args.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, 32):
                idx = order[start:start + 32]
                batch = (exp.train.x[idx], exp.train.y[idx], exp.train.task[idx])
                a = flat(module)
                hooks.before_training_step(batch)
                b = flat(module)
                loss = hooks.training_step(batch)
                optimizer.zero_grad()
                loss.backward()
                hooks.before_optimizer_step()
                optimizer.step()
                hooks.after_optimizer_step(batch)
                if (b - a).norm() > 0:
                    ratios.append(float((b - a).norm() / (flat(module) - b).norm()))
        hooks.after_experience(exp)
        q = statistics.quantiles(ratios, n=4)
        print(f"{args.optimizer} {args.form} experience {exp.index}: {len(ratios)} refreshes, unlearning / "
              f"optimizer step: q1 {q[0]:.2e} median {q[1]:.2e} q3 {q[2]:.2e}", flush=True)


if __name__ == "__main__":
    main()
