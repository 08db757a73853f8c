"""SHARP: Sparsity and Hidden Activation RePlay (Gurbuz, Moorman & Dovrolis 2023, arXiv:2305.18563).

A sparse recurrent network whose units are sorted, by how active they are on the current classes,
into *plastic* (type 0), *candidate* (1) and *stable* (>= 2, the value is the age in experiences)
units. Connections from plastic into non-plastic units are dropped and as many are regrown into
plastic units (fixed density), so stable units only listen to stable units; stable units are
frozen once old enough, so what they compute survives. Instead of raw inputs, SHARP replays the
stored 8-bit activations of one recurrent layer (``replay_layer``'s output sequence) for the classes
of the most recent experience(s); they re-enter the network above that layer through
``RecurrentBackbone.forward_from``, so every layer above keeps learning through its plastic units.
Training uses supervised contrastive loss on the top layer's pooled features (plastic top units
masked out), and prediction is kNN over stored class representations (``loss=ce`` trains and
predicts with the linear head instead).

Experience procedure (``Source/learner.py`` of the authors' code, mapped onto clplat's loop): the
experience's iteration budget is split into ``phases`` equal parts; before each part the units are
re-selected on up to ``selection_samples`` current training samples, connections are dropped and
regrown, and the optimizer's state is reset (the paper builds a fresh optimizer per phase). At the
experience's end units are promoted (every non-plastic type + 1), freezing is updated, the new
classes' activations are stored, still-plastic units are re-initialised (``reinit``) and the
long-term class representations are refreshed. See docs/strategies.md (## sharp) for deviations.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from clplat.backbones.units import Connection, UnitVector
from clplat.context import RunContext
from clplat.errors import ConfigError, check_choice, check_float, check_int
from clplat.stream import Experience, Scenario, SequenceData, Stream
from clplat.strategy import Batch, Strategy
from clplat.seeds import SeedStream, seeded_generator

from .parts.sharp_memory import ActivationMemory, RepresentationMemory, knn_log_probs, supcon_loss
from .parts.sparse import drop_and_grow, expand_rows, random_mask, select_units, unit_map

LOSSES = ("supcon", "ce")
#: how a unit's activity is measured for selection (``_unit_activity``)
ACTIVITIES = ("response", "magnitude")


def selection_percent(phase: int) -> float:
    """``tau`` of the authors' code in percent: 0.5 (1 + cos(pi t / 30)), with ``t = phase + 1`` for
    the first phase and ``t = phase`` after it (as ``learner.py`` steps it)."""
    t = phase + 1 if phase == 1 else phase
    return 50.0 * (1.0 + math.cos(math.pi * t / 30.0))


def first_per_class(data: SequenceData, label: int, n: int) -> Tensor:
    """Indices of the first ``n`` samples of ``label`` (the paper stores the first ones it sees)."""
    return (data.y == label).nonzero().squeeze(1)[:n]


class SHARP(Strategy):
    """Sparse dynamic connectivity, unit freezing and replay of quantised hidden activations."""

    name = "sharp"
    ddp_refusal = "its contrastive loss couples the samples of a batch, so per-rank shards change what it optimises"
    #: new classes per experience, no task id: the setting SHARP is defined for (blurry streams are
    #: class-incremental too). Task- and domain-IL are refused: with repeated classes every
    #: experience the per-class memories and the freezing-by-age schedule lose their meaning.
    supported_scenarios = (Scenario.CLASS_INCREMENTAL,)
    checkpointed = ("types", "masks", "stm", "ltm", "peak_bytes", "stable_history", "generator", "sample_generator")
    #: checkpoints written before the per-experience stable-unit history lack it
    checkpoint_defaults = {"stable_history": []}

    def __init__(self, density: float = 0.4, replay_layer: int = 0, stm_per_class: int = 25,
                 stm_num_tasks: int = 1, ltm_per_class: int = 25, k: int = 5, loss: str = "supcon",
                 temperature: float = 0.1, phases: int = 10, min_activation_perc: float = 90.0,
                 selection_samples: int = 1024, replay_batch_size: int | None = None, reinit: bool = True,
                 memory_bytes: int | None = None, activity: str = "response", seed: int = 0):
        super().__init__()
        check_float(".density", density, 0.0, 1.0)
        if density <= 0:
            raise ConfigError(".density", density, "must be a number in (0, 1]")
        check_int(".replay_layer", replay_layer, 0)
        check_int(".stm_per_class", stm_per_class, 1)
        check_int(".stm_num_tasks", stm_num_tasks, 1)
        check_int(".ltm_per_class", ltm_per_class, 1)
        check_int(".k", k, 1)
        check_choice(".loss", loss, LOSSES)
        check_float(".temperature", temperature, 1e-6)
        check_int(".phases", phases, 1)
        check_float(".min_activation_perc", min_activation_perc, 0.0, 100.0)
        check_int(".selection_samples", selection_samples, 1)
        check_int(".replay_batch_size", replay_batch_size, 1, allow_none=True)
        check_choice(".reinit", reinit, (True, False))
        check_int(".memory_bytes", memory_bytes, 1, allow_none=True)
        check_choice(".activity", activity, ACTIVITIES)
        self.activity = activity
        self.density, self.replay_layer = float(density), replay_layer
        self.stm_per_class, self.stm_num_tasks, self.ltm_per_class = stm_per_class, stm_num_tasks, ltm_per_class
        self.k, self.loss, self.temperature = k, loss, float(temperature)
        self.phases, self.min_activation_perc = phases, float(min_activation_perc)
        self.selection_samples, self.replay_batch_size = selection_samples, replay_batch_size
        self.reinit, self.memory_bytes = bool(reinit), memory_bytes
        self.generator = seeded_generator(seed, SeedStream.SHARP_MASKS)  # masks, regrowth, re-initialisation
        self.sample_generator = seeded_generator(seed, SeedStream.SHARP_REPLAY)  # replay draws
        self.stm, self.ltm = ActivationMemory(), RepresentationMemory()
        self.connections: list[Connection] = []
        self.vectors: list[UnitVector] = []
        self.types: list[Tensor] = []
        self.masks: dict[str, Tensor] = {}
        self.peak_bytes = 0
        #: stable units per layer at the end of every finished experience (summary.json)
        self.stable_history: list[list[int]] = []
        self._frozen_rows: dict[str, Tensor] = {}
        self._saved: dict[str, Tensor] = {}
        self._step = 0
        self._boundaries: list[int] | None = None
        self._in_experience = False
        self._updates = 0
        self._provisional: tuple[tuple[int, int], dict[int, Tensor], Tensor] | None = None

    # -- wiring -----------------------------------------------------------------------------
    def setup(self, context: RunContext) -> None:
        super().setup(context)
        stream = context.stream
        backbone = context.module.backbone
        if self.replay_layer >= backbone.num_layers - 1:
            raise ConfigError(".replay_layer", self.replay_layer,
                              f"must be < backbone.num_layers - 1 = {backbone.num_layers - 1} (replay re-enters the "
                              "layer above it); use backbone.num_layers>=2")
        self.connections, self.vectors = unit_map(backbone)
        width = backbone.out_dim
        self.types = [torch.zeros(width, dtype=torch.long) for _ in range(backbone.num_layers)]
        for c in self.connections:
            if c.source is not None:
                self.masks[c.name] = random_mask(width, c.param.shape[1], self.density, self.generator)
        self.window_classes = self._max_window_classes(stream)
        self.stm_sample_bytes = stream.input_shape[0] * width + 16
        if self.memory_bytes is not None:
            self.stm_per_class = self._stm_per_class_for_budget(stream, width)
        self._apply_masks()
        self._update_frozen()

    def _max_window_classes(self, stream: Stream) -> int:
        """Most classes the replay window ever holds (classes present in the last ``stm_num_tasks``
        experiences' training data; blurry streams have more than their home classes)."""
        present = [set(exp.train.classes) for exp in stream]
        return max(len(set().union(*present[max(0, e - self.stm_num_tasks + 1): e + 1])) for e in range(len(present)))

    def _stm_per_class_for_budget(self, stream: Stream, width: int) -> int:
        """The largest ``stm_per_class`` whose peak memory (long-term memory of every class plus the
        fullest replay window) fits ``memory_bytes``."""
        ltm = stream.num_classes * (self.ltm_per_class * (4 * width + 8) + width)
        per_class = (self.memory_bytes - ltm) // (self.window_classes * self.stm_sample_bytes)
        if per_class < 1:
            raise ConfigError(".memory_bytes", self.memory_bytes,
                              f"is too small: the long-term memory takes {ltm} bytes and one activation per "
                              f"replayed class {self.window_classes * self.stm_sample_bytes} more; raise it or lower "
                              "strategy.ltm_per_class")
        return int(per_class)

    # -- masks and freezing -----------------------------------------------------------------
    def _weight_mask(self, c: Connection) -> Tensor:
        return expand_rows(self.masks[c.name], c.gates).to(c.param.device, c.param.dtype)

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for c in self.connections:
            if c.name in self.masks:
                c.param.mul_(self._weight_mask(c))

    def _frozen_units(self, layer: int) -> Tensor:
        """Layers up to the replay layer freeze a unit right after its first stable experience (the
        stored activations must stay valid); higher layers once its classes left the replay window."""
        limit = 1 if layer <= self.replay_layer else self.stm_num_tasks + 1
        return self.types[layer] > limit

    def _update_frozen(self) -> None:
        frozen = [self._frozen_units(l) for l in range(len(self.types))]
        self._frozen_rows = {}
        for part in [*self.connections, *self.vectors]:
            layer = part.target if isinstance(part, Connection) else part.layer
            rows = expand_rows(frozen[layer], part.gates)
            if bool(rows.any()):
                self._frozen_rows[part.name] = rows

    def _params(self) -> dict[str, torch.nn.Parameter]:
        return {p.name: p.param for p in [*self.connections, *self.vectors]}

    # -- hooks ------------------------------------------------------------------------------
    def before_experience(self, experience: Experience) -> None:
        super().before_experience(experience)
        self._step, self._boundaries, self._in_experience, self._provisional = 0, None, True, None

    def before_training_step(self, batch: Batch) -> None:
        if self._boundaries is None:
            n = self.context.fit_batches  # this experience's steps
            self._boundaries = sorted({p * n // self.phases for p in range(self.phases)})
        if self._step in self._boundaries:
            self._begin_phase(self._boundaries.index(self._step) + 1)
        self._step += 1

    def features(self, pooled: Tensor) -> Tensor:
        """Top-layer features with the plastic top units zeroed (SHARP's ``MaskedOut_U0``)."""
        return pooled * (self.types[-1] != 0).to(pooled.device, pooled.dtype)

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        backbone = self.module.backbone
        z = self.features(backbone(x))
        if self.stm.entries:
            h, y_m = self.stm.sample(self.replay_batch_size or x.shape[0], self.sample_generator)
            self.count_samples("replay", h.shape[0])  # stored activations through the layers above
            z_m = self.features(backbone.forward_from(self.replay_layer, h.to(x.device)))
            z, y = torch.cat([z, z_m]), torch.cat([y, y_m.to(y.device)])
        if self.loss == "supcon":
            return supcon_loss(z, y, self.temperature)
        return self.criterion(self.module.head(z, None), y)

    def before_optimizer_step(self) -> None:
        params = self._params()
        for c in self.connections:
            if c.name in self.masks and c.param.grad is not None:
                c.param.grad.mul_(self._weight_mask(c))
        self._saved = {}
        for name, rows in self._frozen_rows.items():
            p = params[name]
            rows = rows.to(p.device)
            if p.grad is not None:
                p.grad[rows] = 0
            self._saved[name] = p.detach()[rows].clone()

    @torch.no_grad()
    def after_optimizer_step(self, batch: Batch) -> None:
        """Re-impose masks and frozen values: momentum and weight decay move entries whose
        gradient was zeroed, and SHARP's guarantees are about the weights, not the gradients."""
        self._apply_masks()
        params = self._params()
        for name, values in self._saved.items():
            params[name][self._frozen_rows[name].to(values.device)] = values
        self._saved = {}
        self._updates += 1

    def after_experience(self, experience: Experience) -> None:
        for types in self.types:
            types[types > 0] += 1  # promote: candidates become stable, stable units age
        self._update_frozen()
        data = experience.train
        present = set(data.classes)
        # classes replayed during this experience: their final representations, read with the
        # units that were stable before the experience (now frozen in the top layers) -- the
        # paper's ``type >= 3 + age`` for a class ``age`` experiences old, with type 2 for new ones
        for c in self.stm.classes:
            if c not in present:
                age = experience.index - self.stm.entries[c].experience
                reps = self._representations(self.stm.activations(c)[: self.ltm_per_class], from_memory=True)
                self.ltm.store(c, reps, self.types[-1] >= 2 + age)
        self.stm.forget_before(experience.index - self.stm_num_tasks + 1)
        for c in sorted(present):
            x = data.x[first_per_class(data, c, self.stm_per_class)]
            self.stm.store(c, self._layer_output(x), experience.index)
        if self.reinit:
            self._reinit_plastic()
        for c in sorted(present):
            self.ltm.store(c, self._representations(data.x[first_per_class(data, c, self.ltm_per_class)]),
                           self.types[-1] >= 2)
        self.peak_bytes = max(self.peak_bytes, self.memory_nbytes())
        self.stable_history.append(self._stable_counts())
        self._in_experience, self._provisional = False, None

    def predict(self, x: Tensor, task: Tensor) -> Tensor:
        z = self.features(self.module.backbone(x))
        if self.loss == "ce":
            return self.module.head(z, task)
        reps, masks = dict(self.ltm.reps), dict(self.ltm.masks)
        if self._in_experience:
            current, mask = self._current_class_reps()
            reps.update(current)
            masks.update({c: mask for c in current})
        return knn_log_probs(z, reps, masks, self.k, self.stream.num_classes)

    # -- the pieces -------------------------------------------------------------------------
    def _eval_forward(self, fn, *args: Tensor) -> Tensor:
        module = self.module
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                device = next(module.parameters()).device
                return fn(*(a.to(device) for a in args))
        finally:
            module.train(was_training)

    def _layer_output(self, x: Tensor) -> Tensor:
        return self._eval_forward(lambda v: self.module.backbone.forward_layers(v)[self.replay_layer], x)

    def _representations(self, x: Tensor, from_memory: bool = False) -> Tensor:
        backbone = self.module.backbone
        if from_memory:
            return self._eval_forward(lambda h: self.features(backbone.forward_from(self.replay_layer, h)), x)
        return self._eval_forward(lambda v: self.features(backbone(v)), x)

    def _current_class_reps(self) -> tuple[dict[int, Tensor], Tensor]:
        """Representations of the current experience's classes before they are stored: their first
        ``ltm_per_class`` training samples through the current network, read with the units that
        will be stable at the experience's end (cached until the next optimizer step)."""
        key = (self.experience.index, self._updates)
        if self._provisional is None or self._provisional[0] != key:
            data = self.experience.train
            reps = {c: self._representations(data.x[first_per_class(data, c, self.ltm_per_class)])
                    for c in data.classes}
            self._provisional = (key, reps, self.types[-1] != 0)
        return self._provisional[1], self._provisional[2]

    def _unit_activity(self) -> list[Tensor]:
        """Activity of every unit on up to ``selection_samples`` current training samples, averaged
        over samples and time (the authors' code: summed ReLU output / 1024).

        SHARP ranks non-negative ReLU outputs, where a unit that does not respond to the data is
        at 0. A recurrent unit's output is signed and dense: a unit sitting at a constant value
        (saturated, or untouched since its re-initialisation) has a large ``|h|`` but carries
        nothing about the input. ``activity=response`` (default) therefore measures the mean
        absolute deviation from the per-time-step mean over the samples, ``|h - mean_n h|``: 0 for
        a unit that does not respond, as a silent ReLU. ``activity=magnitude`` is the literal
        analogue, mean ``|h|``; on the default 2-layer GRU it left no plastic top-layer unit after
        the fourth experience (docs/strategies.md).
        """
        x = self.experience.train.x[: self.selection_samples]

        def measure(h: Tensor) -> Tensor:  # (N, T, H) -> (H,)
            if self.activity == "response":
                h = h - h.mean(dim=0, keepdim=True)
            return h.abs().mean(dim=(0, 1))

        outputs = self._eval_forward(lambda v: torch.stack(
            [measure(h) for h in self.module.backbone.forward_layers(v)]), x)
        return [a.cpu() for a in outputs]

    @torch.no_grad()
    def _begin_phase(self, phase: int) -> None:
        percent = max(selection_percent(phase), self.min_activation_perc)
        for l, activity in enumerate(self._unit_activity()):
            self.types[l] = select_units(activity, self.types[l], percent)
        for c in self.connections:
            if c.name not in self.masks:
                continue
            mask, grown, _ = drop_and_grow(self.masks[c.name], self.types[c.source], self.types[c.target],
                                           self.generator)
            self.masks[c.name] = mask
            c.param[expand_rows(grown, c.gates).to(c.param.device)] = 0.0  # new connections start at zero
        self._apply_masks()
        self._update_frozen()
        for optimizer in self.context.optimizers:
            optimizer.state.clear()  # a fresh optimizer per phase, as the paper

    @torch.no_grad()
    def _reinit_plastic(self) -> None:
        """Re-draw the incoming weights of units still plastic after the experience (biases and
        norm affine to their defaults), so they start the next experience uncommitted."""
        for c in self.connections:
            rows = expand_rows(self.types[c.target] == 0, c.gates)
            fresh = (torch.rand(c.param.shape, generator=self.generator) * 2 - 1) * c.init_bound
            c.param[rows.to(c.param.device)] = fresh[rows].to(c.param.device, c.param.dtype)
        for v in self.vectors:
            rows = expand_rows(self.types[v.layer] == 0, v.gates)
            v.param[rows.to(v.param.device)] = v.reset
        self._apply_masks()

    # -- reporting and checkpointing --------------------------------------------------------
    def memory_nbytes(self) -> int:
        return self.stm.nbytes() + self.ltm.nbytes()

    def memory_parts(self) -> dict[str, int]:
        """The two memories as ``memory_bytes`` counts them (masks and unit types are the sparse
        model's structure, not memory; docs/strategies.md)."""
        return {"activations": self.stm.nbytes(), "representations": self.ltm.nbytes()}

    def _stable_counts(self) -> list[int]:
        return [int((t >= 2).sum()) for t in self.types]

    def summary(self) -> dict[str, Any]:
        masked = [c for c in self.connections if c.name in self.masks]
        kept = sum(int(self.masks[c.name].sum()) for c in masked)
        total = sum(self.masks[c.name].numel() for c in masked)
        return {
            "sharp_memory_bytes": self.memory_nbytes(),
            "sharp_peak_memory_bytes": self.peak_bytes,
            "sharp_stm_bytes": self.stm.nbytes(),
            "sharp_ltm_bytes": self.ltm.nbytes(),
            "sharp_stm_per_class": self.stm_per_class,
            "sharp_stm_sample_bytes": getattr(self, "stm_sample_bytes", None),
            "sharp_density": kept / total if total else 1.0,
            "sharp_stable_units": self._stable_counts(),
            # per finished experience: a layer with every unit stable has nothing left to learn with
            "sharp_stable_units_by_experience": [list(c) for c in self.stable_history],
            "sharp_frozen_units": [int(self._frozen_units(l).sum()) for l in range(len(self.types))],
        }

    def after_load_state(self) -> None:
        self._update_frozen()
