"""Hypernetworks that generate the whole target network (backbone + head) from a task embedding.

Two generators, both *chunked* (von Oswald et al. 2020, §5.2 of the reference notes): the flat
target vector of ``N`` weights is produced ``chunk_size`` values at a time, so the output layer
has ``chunk_size`` (not ``N``) units and the hypernetwork can be smaller than its target.

- :class:`ChunkedMLPHypernet` (``kind: chunked_mlp``): ``w_k = MLP([e_t, c_k])`` for learned chunk
  embeddings ``c_k``. Chunks are independent given ``e_t``.
- :class:`RNNHypernet` (``kind: rnn``, Chandra et al., WACV 2023): a GRU runs over the chunk
  index, ``h_k = GRU([e_t, c_k], h_{k-1})``, ``w_k = Linear(h_k)``, so a chunk depends on every
  chunk generated before it. It can *grow* (:meth:`RNNHypernet.grow`) for a new task.

Both take a batch of embeddings ``(J, d)`` and return ``(J, N)``, so the output regularizer runs
all previous tasks in one pass. With ``mip=True`` (Ortiz et al., ICLR 2024, "MIP") the output is
added to a learned base vector ``theta_0`` (initialised with the target network's own initial
weights) and, with ``cossin`` (default: as ``mip``; clplat's strategy default turns it off), the
embedding enters through the bounded encoding :func:`mip_encode`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("chunked_mlp", "rnn")
#: initialisation of the chunked MLP's hidden layers: ``he`` (hypnettorch's chunked hyperfan init of
#: the internal layers: Kaiming-uniform fan-in for ReLU, zero biases) or ``torch`` (nn.Linear's default)
BODY_INITS = ("he", "torch")


@dataclass(frozen=True)
class TargetSpec:
    """Names and shapes of the generated tensors, in a fixed order, and how to cut a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, named: Sequence[tuple[str, Tensor]]) -> "TargetSpec":
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named))

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """A flat ``(N,)`` vector -> ``{name: tensor}`` views for ``functional_call``."""
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = flat[start : start + size].view(shape)
            start += size
        return out


def mip_encode(e: Tensor) -> Tensor:
    """MIP's magnitude-invariant input: ``z = sigmoid(e)`` in (0, 1), then ``[cos(pi z/2), sin(pi z/2)]``.

    Every (cos, sin) pair has unit norm, so the encoding of a d-dimensional embedding always has
    norm ``sqrt(d)`` whatever ``e`` learns: the hypernetwork's output scale cannot drift with the
    embedding's magnitude. (hyperlight encodes a given ``z`` in [0, 1]; our ``z`` is learned, and
    the sigmoid is what keeps it in range.)
    """
    z = torch.sigmoid(e) * (math.pi / 2)
    return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)


class _Hypernet(nn.Module, abc.ABC):
    """Shared parts: the embedding encoding, the output trimming and the MIP base ``theta_0``."""

    def __init__(self, spec: TargetSpec, emb_dim: int, chunk_size: int, mip: bool, template: Tensor,
                 cossin: bool | None = None):
        super().__init__()
        self.spec, self.emb_dim, self.chunk_size, self.mip = spec, emb_dim, chunk_size, mip
        # MIP's cos|sin input encoding; None: with mip (cossin=False keeps only MIP's theta_0)
        self.cossin = mip if cossin is None else cossin
        self.num_chunks = math.ceil(spec.numel / chunk_size)
        # MIP's additive base; without MIP there is none (von Oswald generates the weights outright)
        self.theta0 = nn.Parameter(template.detach().clone()) if mip else None

    @property
    def in_dim(self) -> int:
        return 2 * self.emb_dim if self.cossin else self.emb_dim

    def encode(self, e: Tensor) -> Tensor:
        return mip_encode(e) if self.cossin else e

    @abc.abstractmethod
    def chunks(self, u: Tensor) -> Tensor:
        """Encoded embeddings ``(J, in_dim)`` -> chunks ``(J, K, chunk_size)``."""

    def forward(self, e: Tensor) -> Tensor:
        """Embeddings ``(J, emb_dim)`` (or one ``(emb_dim,)``) -> flat weights ``(J, N)`` (or ``(N,)``)."""
        single = e.dim() == 1
        u = self.encode(e.unsqueeze(0) if single else e)
        flat = self.chunks(u).flatten(1)[:, : self.spec.numel]
        if self.theta0 is not None:
            flat = flat + self.theta0
        return flat[0] if single else flat

    @abc.abstractmethod
    def output_layer(self) -> nn.Linear:
        """The last layer (its scale sets the generated weights' initial scale)."""

    @torch.no_grad()
    def match_output_scale(self, target_std: float, generator: torch.Generator) -> None:
        """Rescale the output layer so generated weights start with the target network's own std.

        A stand-in for von Oswald's hyperfan initialisation: without it a default-initialised
        hypernetwork emits weights a few times too large or small for a recurrent net, which
        then saturates or trains slowly. Measured on a few random embeddings drawn like real ones.
        """
        out = self.output_layer()
        out.bias.zero_()
        e = torch.randn(8, self.emb_dim, generator=generator).to(out.weight.device)
        flat = self.chunks(self.encode(e)).flatten(1)[:, : self.spec.numel]
        std = float(flat.std())
        if std > 0:
            out.weight.mul_(target_std / std)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ChunkedMLPHypernet(_Hypernet):
    """``w_k = MLP([enc(e_t), c_k])``, all ``K`` chunks in one batched pass."""

    def __init__(self, spec: TargetSpec, emb_dim: int, chunk_size: int, chunk_emb_dim: int,
                 hidden: Sequence[int], mip: bool, template: Tensor, cossin: bool | None = None):
        super().__init__(spec, emb_dim, chunk_size, mip, template, cossin)
        self.chunk_emb = nn.Parameter(torch.randn(self.num_chunks, chunk_emb_dim))
        sizes = [self.in_dim + chunk_emb_dim, *hidden]
        self.body = _mlp(sizes)
        self.out = nn.Linear(sizes[-1], chunk_size)

    def output_layer(self) -> nn.Linear:
        return self.out

    @torch.no_grad()
    def he_init_body(self, generator: torch.Generator) -> None:
        """Kaiming-uniform (fan-in, ReLU gain) hidden layers with zero biases.

        This is how hypnettorch's ``ChunkedHMLP.apply_chunked_hyperfan_init`` initialises the
        internal layers ("to simply pass the variance of all inputs to the hypernet output"; Chang
        et al., ICLR 2020, "Principled weight initialization for hypernetworks"). PyTorch's default
        (Kaiming with a=sqrt(5), i.e. variance 1/(3 fan_in), and random biases) shrinks the
        activations by about 3x per layer: for hidden [10, 10] the last hidden layer's activations
        have an L1 norm of 0.76 per chunk, and the output layer then has to be scaled up to reach
        the target's weight scale. Under Adam every output-layer weight moves by about ``lr`` per
        step, so the generated weights move by about ``lr * |h|_1``: the small activations made the
        compressive generator's useful step several times smaller than a wide one's
        (docs/strategies.md#hypernet). The output layer is rescaled afterwards
        (:meth:`match_output_scale`, hyperfan-in's condition on the generated variance).
        """
        for layer in self.body:
            if isinstance(layer, nn.Linear):
                bound = math.sqrt(6.0 / layer.in_features)  # kaiming_uniform_(fan_in, relu): gain sqrt(2)
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
                layer.bias.zero_()

    def chunks(self, u: Tensor) -> Tensor:
        J, K = u.shape[0], self.num_chunks
        inputs = torch.cat([u.unsqueeze(1).expand(J, K, u.shape[1]),
                            self.chunk_emb.unsqueeze(0).expand(J, K, self.chunk_emb.shape[1])], dim=2)
        return self.out(self.body(inputs))


class RNNHypernet(_Hypernet):
    """A GRU over the chunk index: ``h_0 = tanh(W_0 enc(e))``, ``h_k = GRU([enc(e), c_k], h_{k-1})``,
    ``w_k = Linear(h_k)``.

    The cell is written out (PyTorch's GRU equations, gate order r, z, n) rather than taken from
    ``nn.GRU`` because :meth:`grow` has to enlarge its matrices. ``chunk_emb_dim=0`` drops the chunk
    embeddings: the recurrence alone then tells the chunks apart.
    """

    def __init__(self, spec: TargetSpec, emb_dim: int, chunk_size: int, chunk_emb_dim: int,
                 hidden_size: int, mip: bool, template: Tensor, cossin: bool | None = None):
        super().__init__(spec, emb_dim, chunk_size, mip, template, cossin)
        self.chunk_emb = nn.Parameter(torch.randn(self.num_chunks, chunk_emb_dim)) if chunk_emb_dim > 0 else None
        in_size = self.in_dim + chunk_emb_dim
        H = hidden_size
        bound = 1.0 / math.sqrt(H)
        self.w_ih = nn.Parameter(torch.empty(3 * H, in_size).uniform_(-bound, bound))
        self.w_hh = nn.Parameter(torch.empty(3 * H, H).uniform_(-bound, bound))
        self.b_ih = nn.Parameter(torch.empty(3 * H).uniform_(-bound, bound))
        self.b_hh = nn.Parameter(torch.empty(3 * H).uniform_(-bound, bound))
        self.h0 = nn.Linear(self.in_dim, H)
        self.out = nn.Linear(H, chunk_size)

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[1]

    def output_layer(self) -> nn.Linear:
        return self.out

    def chunks(self, u: Tensor) -> Tensor:
        J, K = u.shape[0], self.num_chunks
        # the input projection of every step at once; only the recurrence is a loop
        if self.chunk_emb is not None:
            steps = torch.cat([u.unsqueeze(1).expand(J, K, u.shape[1]),
                               self.chunk_emb.unsqueeze(0).expand(J, K, self.chunk_emb.shape[1])], dim=2)
            gi_all = F.linear(steps, self.w_ih, self.b_ih)  # (J, K, 3H)
        else:
            gi_all = F.linear(u, self.w_ih, self.b_ih).unsqueeze(1).expand(J, K, self.w_ih.shape[0])
        h = torch.tanh(self.h0(u))
        states = []
        for k in range(K):
            gi_r, gi_z, gi_n = gi_all[:, k].chunk(3, dim=1)
            gh_r, gh_z, gh_n = F.linear(h, self.w_hh, self.b_hh).chunk(3, dim=1)
            r = torch.sigmoid(gi_r + gh_r)
            z = torch.sigmoid(gi_z + gh_z)
            n = torch.tanh(gi_n + r * gh_n)
            h = (1 - z) * n + z * h
            states.append(h)
        return self.out(torch.stack(states, dim=1))

    @torch.no_grad()
    def grow(self, units: int, generator: torch.Generator) -> None:
        """Add ``units`` hidden units without changing what the network computes now.

        New units get random incoming weights; every weight *from* a new unit (into the old units'
        gates and into the output layer) starts at zero, so old units and the generated weights
        are exactly as before. Training then recruits the new units for the new task, and the
        output regularizer keeps old tasks' weights where they were.
        """
        if units <= 0:
            return
        H, G = self.hidden_size, units
        bound = 1.0 / math.sqrt(H + G)
        dev = self.w_hh.device

        def rand(*shape: int) -> Tensor:
            return (torch.rand(*shape, generator=generator) * 2 - 1).mul_(bound).to(dev)

        def widen_rows(w: Tensor, new_rows: Tensor) -> Tensor:  # per gate block [r; z; n]
            return torch.cat([torch.cat([blk, new], 0) for blk, new in zip(w.chunk(3, 0), new_rows.chunk(3, 0))], 0)

        w_ih = widen_rows(self.w_ih.data, rand(3 * G, self.w_ih.shape[1]))
        w_hh = torch.cat([self.w_hh.data, torch.zeros(3 * H, G, device=dev)], 1)  # old units ignore new ones
        w_hh = widen_rows(w_hh, rand(3 * G, H + G))
        b_ih = widen_rows(self.b_ih.data, rand(3 * G))
        b_hh = widen_rows(self.b_hh.data, rand(3 * G))
        self.w_ih, self.w_hh = nn.Parameter(w_ih), nn.Parameter(w_hh)
        self.b_ih, self.b_hh = nn.Parameter(b_ih), nn.Parameter(b_hh)
        h0 = nn.Linear(self.h0.in_features, H + G).to(dev)
        h0.weight.copy_(torch.cat([self.h0.weight, rand(G, self.h0.in_features)], 0))
        h0.bias.copy_(torch.cat([self.h0.bias, rand(G)], 0))
        self.h0 = h0
        out = nn.Linear(H + G, self.out.out_features).to(dev)
        out.weight.copy_(torch.cat([self.out.weight, torch.zeros(self.out.out_features, G, device=dev)], 1))
        out.bias.copy_(self.out.bias)
        self.out = out

    def resize(self, hidden_size: int) -> None:
        """Give the network ``hidden_size`` units (values to be loaded next): a resumed run's
        network has grown, and ``load_state_dict`` needs matching shapes."""
        if hidden_size < self.hidden_size:
            raise ValueError(f"cannot shrink the RNN hypernetwork from {self.hidden_size} to {hidden_size} units")
        self.grow(hidden_size - self.hidden_size, torch.Generator().manual_seed(0))


def build_hypernet(kind: str, spec: TargetSpec, emb_dim: int, chunk_size: int, chunk_emb_dim: int,
                   hidden: Sequence[int], rnn_hidden: int, mip: bool, template: Tensor,
                   cossin: bool | None = None, body_init: str = "torch",
                   generator: torch.Generator | None = None) -> _Hypernet:
    """``body_init`` (chunked_mlp only; the rnn kind keeps PyTorch's GRU init): see :data:`BODY_INITS`."""
    if kind == "chunked_mlp":
        net = ChunkedMLPHypernet(spec, emb_dim, chunk_size, chunk_emb_dim, hidden, mip, template, cossin)
        if body_init == "he":
            net.he_init_body(generator if generator is not None else torch.Generator().manual_seed(0))
        elif body_init != "torch":
            raise ValueError(f"unknown body_init {body_init!r}; allowed: {', '.join(BODY_INITS)}")
        return net
    if kind == "rnn":
        return RNNHypernet(spec, emb_dim, chunk_size, chunk_emb_dim, rnn_hidden, mip, template, cossin)
    raise ValueError(f"unknown hypernetwork kind {kind!r}; allowed: {', '.join(KINDS)}")


__all__ = ["KINDS", "BODY_INITS", "TargetSpec", "mip_encode", "ChunkedMLPHypernet", "RNNHypernet", "build_hypernet"]
