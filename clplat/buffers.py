"""Tensor-backed rehearsal memories.

Samples are stored un-augmented in preallocated tensors (``x``, ``y``, ``task`` plus any named
extras such as logits), so inserting and drawing a minibatch are a few indexing ops, never a
Python loop over a dataset of samples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clplat.errors import ConfigError, check_choice, check_int

POLICIES = ("reservoir", "class_balanced")
#: a stored label and task id are int64
LABEL_BYTES = TASK_BYTES = 8
#: stored logits are float32 (DER, k-FPF-KD and FPF-KD insert them as float32)
LOGIT_BYTES = 4


def sample_nbytes(stream: Any, logits: bool = False) -> dict[str, int]:
    """Bytes one stored sample of ``stream`` takes in a ``ReplayBuffer`` (or a pool), by field:
    ``x`` (T x F values of the stream's dtype), ``y`` and ``task`` (int64), and ``logits``
    (float32 x the stream's classes) when the method stores them."""
    x = stream.experiences[0].train.x
    out = {"x": x[0].numel() * x.element_size(), "y": LABEL_BYTES, "task": TASK_BYTES}
    if logits:
        out["logits"] = stream.num_classes * LOGIT_BYTES
    return out


def samples_for_budget(key: str, budget: int, per_sample: dict[str, int], slots: int = 1) -> int:
    """How many samples ``budget`` bytes hold (``budget // sum(per_sample)``), divided into
    ``slots`` equal shares (power-law's per-task pools); a budget too small for one sample per
    slot is a ``ConfigError`` naming ``key``."""
    check_int(key, budget, 1)
    size = sum(per_sample.values())
    count = budget // (size * slots)
    if count < 1:
        parts = " + ".join(f"{k} {v}" for k, v in per_sample.items())
        per = f" per slot x {slots} slots" if slots > 1 else ""
        raise ConfigError(key, budget, f"cannot hold one stored sample ({size} bytes: {parts}{per}); raise it")
    return int(count)


class ReplayBuffer:
    """A fixed-capacity memory filled by reservoir sampling or class-balanced reservoir sampling.

    - ``reservoir`` (Vitter's algorithm R, as in Chaudhry et al. 2019 and mammoth): after ``n``
      samples were offered, every one of them is in memory with probability ``capacity / n``.
    - ``class_balanced`` (CBRS, Chrysakis & Moens, ICML 2020): when full, a sample of a class that
      is not among the largest in memory replaces a random sample of a largest class; a sample
      of a largest class replaces a random sample of its own class with probability
      ``stored_c / seen_c``. Keeps rare classes represented in imbalanced or blurry streams.
    """

    def __init__(self, capacity: int, policy: str = "reservoir", generator: torch.Generator | None = None):
        check_int(".buffer_size", capacity, 0)
        check_choice(".policy", policy, POLICIES)
        self.capacity = capacity
        self.policy = policy
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.num_seen = 0
        self.seen_per_class: dict[int, int] = {}
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.task: Tensor | None = None
        self.extras: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    @property
    def is_empty(self) -> bool:
        return len(self) == 0

    def nbytes(self) -> int:
        """Memory held by stored samples (what 'equal memory' comparisons count)."""
        tensors = [t for t in (self.x, self.y, self.task, *self.extras.values()) if t is not None]
        return sum(t.element_size() * t.numel() for t in tensors)

    def nbytes_by_part(self) -> dict[str, int]:
        """``nbytes`` split into ``buffer`` (inputs, labels, task ids) and ``buffer_<extra>``."""
        core = [t for t in (self.x, self.y, self.task) if t is not None]
        out = {"buffer": sum(t.element_size() * t.numel() for t in core)}
        out.update({f"buffer_{k}": v.element_size() * v.numel() for k, v in self.extras.items()})
        return out

    def _allocate(self, x: Tensor, extras: dict[str, Tensor]) -> None:
        self.x = x.new_zeros((self.capacity, *x.shape[1:]))
        self.y = torch.zeros(self.capacity, dtype=torch.long, device=x.device)
        self.task = torch.zeros(self.capacity, dtype=torch.long, device=x.device)
        self.extras = {k: v.new_zeros((self.capacity, *v.shape[1:])) for k, v in extras.items()}

    # -- insertion --------------------------------------------------------------------------
    @torch.no_grad()
    def add(self, x: Tensor, y: Tensor, task: Tensor, **extras: Tensor) -> None:
        """Offer a batch of samples (in order) to the memory."""
        if self.capacity == 0 or x.shape[0] == 0:
            self.num_seen += x.shape[0]
            return
        if self.x is None:
            self._allocate(x, extras)
        if set(extras) != set(self.extras):
            raise ValueError(f"buffer stores extras {sorted(self.extras)}, got {sorted(extras)}")
        if self.policy == "reservoir":
            slots, sources = self._reservoir_slots(x.shape[0])
        else:
            slots, sources = self._class_balanced_slots(y)
        if slots.numel() == 0:
            return
        dev = self.x.device
        slots, sources = slots.to(dev), sources.to(x.device)
        self.x[slots] = x[sources].detach().to(self.x.dtype)
        self.y[slots] = y[sources].to(dev)
        self.task[slots] = task[sources].to(dev)
        for key, value in extras.items():
            self.extras[key][slots] = value[sources].detach().to(self.extras[key].dtype)

    def _reservoir_slots(self, n: int) -> tuple[Tensor, Tensor]:
        """Vectorised algorithm R over a batch, with the sequential semantics (later wins)."""
        seen_before = torch.arange(self.num_seen, self.num_seen + n)
        self.num_seen += n
        draws = (torch.rand(n, generator=self.generator, dtype=torch.float64) * (seen_before + 1)).long()
        slots = torch.where(seen_before < self.capacity, seen_before, draws)
        keep = slots < self.capacity
        slots, sources = slots[keep], torch.arange(n)[keep]
        if slots.numel() > 1:
            # several samples of the batch may draw one slot: the last one offered wins
            last = torch.full((self.capacity,), -1, dtype=torch.long)
            last.scatter_reduce_(0, slots, sources, reduce="amax")
            slots = torch.nonzero(last >= 0).squeeze(1)
            sources = last[slots]
        return slots, sources

    def _class_balanced_slots(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """CBRS decisions, sample by sample (the largest-class bookkeeping is inherently serial).

        Slots are indexed per class once per batch and updated incrementally, so a batch costs
        O(capacity + batch), not O(capacity x batch).
        """
        labels = y.tolist()
        size = len(self)
        slots_by_class: dict[int, list[int]] = {}
        for slot, label in enumerate(self.y[:size].tolist()):
            slots_by_class.setdefault(label, []).append(slot)
        slot_of: dict[int, int] = {}  # slot -> source index in this batch (last wins)
        rand = torch.rand(2 * len(labels), generator=self.generator, dtype=torch.float64).tolist()
        for i, c in enumerate(labels):
            self.seen_per_class[c] = self.seen_per_class.get(c, 0) + 1
            self.num_seen += 1
            own = slots_by_class.setdefault(c, [])
            if size < self.capacity:
                own.append(size)
                slot_of[size] = i
                size += 1
                continue
            largest = max(len(s) for s in slots_by_class.values())
            if len(own) < largest:
                full = [k for k, s in slots_by_class.items() if len(s) == largest]
                victims = slots_by_class[full[int(rand[2 * i] * len(full))]]
            elif rand[2 * i] < len(own) / self.seen_per_class[c]:
                victims = own
            else:
                continue
            j = int(rand[2 * i + 1] * len(victims))
            victims[j], victims[-1] = victims[-1], victims[j]
            slot = victims.pop()
            own.append(slot)
            slot_of[slot] = i
        ordered = sorted(slot_of)
        return torch.tensor(ordered, dtype=torch.long), torch.tensor([slot_of[s] for s in ordered], dtype=torch.long)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, n: int) -> dict[str, Tensor]:
        """``min(n, len)`` stored samples drawn uniformly without replacement."""
        size = len(self)
        if size == 0:
            raise RuntimeError("cannot sample from an empty buffer")
        index = torch.randperm(size, generator=self.generator)[: min(n, size)].to(self.x.device)
        out = {"x": self.x[index], "y": self.y[index], "task": self.task[index]}
        out.update({k: v[index] for k, v in self.extras.items()})
        return out

    def class_counts(self) -> dict[int, int]:
        if self.is_empty:
            return {}
        labels, counts = torch.unique(self.y[: len(self)], return_counts=True)
        return dict(zip(labels.tolist(), counts.tolist()))

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        size = len(self)
        return {
            "capacity": self.capacity,
            "policy": self.policy,
            "num_seen": self.num_seen,
            "seen_per_class": dict(self.seen_per_class),
            "generator": self.generator.get_state(),
            "x": None if self.x is None else self.x.cpu(),
            "y": None if self.y is None else self.y.cpu(),
            "task": None if self.task is None else self.task.cpu(),
            "extras": {k: v.cpu() for k, v in self.extras.items()},
            "size": size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity or state["policy"] != self.policy:
            raise ValueError(
                f"checkpoint buffer is {state['policy']}/{state['capacity']}, "
                f"this run's is {self.policy}/{self.capacity}"
            )
        self.num_seen = state["num_seen"]
        self.seen_per_class = dict(state["seen_per_class"])
        self.generator.set_state(state["generator"])
        self.x, self.y, self.task = state["x"], state["y"], state["task"]
        self.extras = dict(state["extras"])
