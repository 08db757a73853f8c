"""SHARP's two memories and its loss: quantised hidden activations (short-term memory, replayed),
class representations for kNN prediction (long-term memory), and supervised-contrastive loss.

Memory accounting (what ``nbytes`` counts, so SHARP can be compared with raw replay at equal
bytes): a stored activation sample is its ``T x H`` uint8 codes, two float32 numbers (its own
min and scale: quantisation is *per sample*, min-max, 8 bits) and an int64 label, i.e.
``T*H + 16`` bytes; a long-term representation is ``H`` float32 numbers and an int64 label
(``4H + 8`` bytes), plus one ``H``-byte unit mask per class. Raw replay's ``ReplayBuffer``
counts ``x`` (float32), ``y`` and ``task`` (int64): ``4*T*F + 16`` bytes per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clplat.state import Stateful

QUANT_LEVELS = 255


def quantize(h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample 8-bit min-max quantisation of ``h`` ``(N, ...)`` -> (codes uint8, min, scale).

    Per sample rather than per class tensor (the paper's choice) so that one outlier sample does
    not coarsen the whole class; it costs 8 bytes per sample. Round-trip error <= scale / 2.
    """
    flat = h.detach().flatten(1).float()
    lo = flat.amin(dim=1)
    scale = ((flat.amax(dim=1) - lo) / QUANT_LEVELS).clamp_min(1e-12)
    codes = torch.round((flat - lo[:, None]) / scale[:, None]).clamp_(0, QUANT_LEVELS).to(torch.uint8)
    return codes.view(h.shape), lo, scale


def dequantize(codes: Tensor, lo: Tensor, scale: Tensor) -> Tensor:
    shape = (-1,) + (1,) * (codes.dim() - 1)
    return codes.float() * scale.view(shape) + lo.view(shape)


@dataclass
class StoredActivations:
    """One class's stored activation sequences and the experience that stored them."""

    codes: Tensor  # (n, T, H) uint8
    lo: Tensor  # (n,) float32
    scale: Tensor  # (n,) float32
    experience: int

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def nbytes(self) -> int:
        return len(self) * (self.codes[0].numel() + 4 + 4 + 8)


class ActivationMemory:
    """Short-term memory: quantised replay-layer activations of the most recent classes."""

    def __init__(self) -> None:
        self.entries: dict[int, StoredActivations] = {}

    def store(self, label: int, h: Tensor, experience: int) -> None:
        codes, lo, scale = quantize(h.cpu())
        self.entries[label] = StoredActivations(codes, lo, scale, experience)

    def forget_before(self, experience: int) -> None:
        """Drop classes last stored before ``experience`` (outside the replay window): SHARP never
        replays them again, so they do not count against the memory budget."""
        self.entries = {c: e for c, e in self.entries.items() if e.experience >= experience}

    @property
    def classes(self) -> list[int]:
        return sorted(self.entries)

    def activations(self, label: int) -> Tensor:
        e = self.entries[label]
        return dequantize(e.codes, e.lo, e.scale)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` samples split evenly over the stored classes (the first ``n % C`` classes get one
        more), without replacement within a class unless it holds too few."""
        classes = self.classes
        base, extra = divmod(n, len(classes))
        hs, ys = [], []
        for i, c in enumerate(classes):
            want = base + (1 if i < extra else 0)
            if want == 0:
                continue
            size = len(self.entries[c])
            if want <= size:
                index = torch.randperm(size, generator=generator)[:want]
            else:
                index = torch.randint(size, (want,), generator=generator)
            e = self.entries[c]
            hs.append(dequantize(e.codes[index], e.lo[index], e.scale[index]))
            ys.append(torch.full((want,), c, dtype=torch.long))
        return torch.cat(hs), torch.cat(ys)

    def nbytes(self) -> int:
        return sum(e.nbytes() for e in self.entries.values())

    def state_dict(self) -> dict[str, Any]:
        return {c: {"codes": e.codes, "lo": e.lo, "scale": e.scale, "experience": e.experience}
                for c, e in self.entries.items()}

    def load_state_dict(self, state: dict[int, Any]) -> None:
        self.entries = {int(c): StoredActivations(**e) for c, e in state.items()}


class RepresentationMemory(Stateful):
    """Long-term memory: per class, top-layer representations and the unit mask they are read with."""

    checkpointed = ("reps", "masks")

    def __init__(self) -> None:
        self.reps: dict[int, Tensor] = {}
        self.masks: dict[int, Tensor] = {}

    def store(self, label: int, reps: Tensor, mask: Tensor) -> None:
        """Keep ``reps`` with the unit ``mask`` they are read with; an empty mask (no stable unit
        yet) is stored as all units, as the authors' ``NeocortexKNN.add_class_representation``."""
        self.reps[label] = reps.detach().float().cpu()
        self.masks[label] = full_if_empty(mask.detach().bool().cpu())

    def nbytes(self) -> int:
        return sum(r.shape[0] * (4 * r.shape[1] + 8) + self.masks[c].numel() for c, r in self.reps.items())


def full_if_empty(mask: Tensor) -> Tensor:
    """An all-False unit mask means *all* units (the authors' ``mask[:] = 1`` when no unit is
    valid): read through an empty mask every vector is zero, every distance 0, and that class
    would be the nearest to every query."""
    return mask if bool(mask.any()) else torch.ones_like(mask)


def knn_log_probs(queries: Tensor, reps: dict[int, Tensor], masks: dict[int, Tensor], k: int,
                  num_classes: int) -> Tensor:
    """kNN class scores ``(B, num_classes)`` over stored representations (SHARP's LTM).

    Each class is compared in its own unit subspace: query and stored vectors are masked with the
    class's unit mask (an empty mask counts as all units, :func:`full_if_empty`), L2-normalised,
    and compared by Euclidean distance. The ``k`` nearest vote;
    the result is ``log`` of smoothed vote shares, finite for every class (the evaluator takes a
    cross-entropy), whose argmax is the mode of the votes with ties to the smaller label (as
    ``torch.mode``).
    """
    if not reps:
        return queries.new_zeros(queries.shape[0], num_classes)
    distances, labels = [], []
    for c in sorted(reps):
        m = full_if_empty(masks[c].bool()).to(queries.device, queries.dtype)
        q = F.normalize(queries * m, dim=1)
        r = F.normalize(reps[c].to(queries.device) * m, dim=1)
        distances.append(torch.cdist(q, r))
        labels.append(torch.full((r.shape[0],), c, dtype=torch.long, device=queries.device))
    d, lab = torch.cat(distances, dim=1), torch.cat(labels)
    kk = min(k, d.shape[1])
    nearest = d.topk(kk, dim=1, largest=False).indices
    votes = queries.new_zeros(queries.shape[0], num_classes)
    votes.scatter_add_(1, lab[nearest], torch.ones_like(nearest, dtype=votes.dtype))
    smoothing = 0.01
    return torch.log((votes + smoothing) / (kk + smoothing * num_classes))


def supcon_loss(z: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on L2-normalised ``z``, as SHARP's
    ``Source/supcon.py``: samples of classes with fewer than two members in the batch are dropped
    (they have no positive); an anchor's loss averages over its positives."""
    counts = torch.bincount(y)
    keep = counts[y] >= 2
    if int(keep.sum()) < 2:
        return z.sum() * 0.0  # nothing to contrast; keep the graph so backward works
    z, y = F.normalize(z[keep], dim=1), y[keep]
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~eye
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1)
    return -per_anchor.mean()


__all__ = ["quantize", "dequantize", "full_if_empty", "ActivationMemory", "RepresentationMemory", "knn_log_probs", "supcon_loss"]
