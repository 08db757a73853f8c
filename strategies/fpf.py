"""Forgetting-Prioritized Fine-tuning (FPF, a plugin) and k-FPF (a replay-free strategy).

Zhao, Zhou, Long, Jiang & Zhang 2023, "Does Continual Learning Equally Forget All Parameters?"
(ICML; arXiv:2304.04158). Forgetting concentrates in a few task-sensitive modules. **FPF**
fine-tunes only those modules on a small memory buffer after any CL method; **k-FPF** drops
every-step replay altogether: plain SGD on the stream (the buffer is still filled by reservoir
sampling) and FPF triggered ``k`` times, periodically, regardless of task boundaries. Both come
in a cross-entropy (``loss=ce``) and a logit-distillation (``loss=kd``: CE plus ``kd_alpha`` times
the MSE to logits stored at insertion, DER-style) variant.

**Module sensitivity.** At every task boundary we snapshot the parameters; a module's score is
the mean over task switches of ``||theta_m(after t) - theta_m(after t-1)||_1 / |theta_m|`` (the L1
change per parameter). A torch RNN module (``nn.GRU``/``nn.LSTM``) packs the input projection, the
recurrent matrix and the biases into one module, so each of its tensors is scored as a unit of its
own. The scores are always measured and reported (``summary.json``); the fine-tuned set is either
named groups or, with ``modules: auto``, the ``top_k`` units by measured score (falling back to
the named defaults before the first task switch has been measured).

The default, ``[norms, head, biases]``, is the paper's choice carried over to recurrent
backbones: its sensitive modules are the normalisation layers (per-channel scale and shift) and
the classifier; here that is every normalisation layer, the head, and the backbone's bias
vectors (per-unit shifts, the GRU/LSTM's counterpart of BN's shift where a backbone has no
norm). It is a small share of every backbone (4.0 % of the default GRU's parameters). The
paper's "last block" for class-IL is left out: in a 1-layer GRU it is the whole network, and
fine-tuning all of it measured no better than this subset (docs/strategies.md).

Groups: ``norms`` (every normalisation layer: LayerNorm, BatchNorm, GroupNorm, RMSNorm, ...),
``head``, ``biases`` (every bias vector of the backbone), ``last_layer`` / ``first_layer`` (of the
backbone's stack), or a module or parameter path such as ``backbone.layers.0`` or
``backbone.layers.0.rnn.weight_ih_l0``.

**Compute.** Every fine-tuning step processes ``batch_size`` buffer samples (forward and backward,
with gradients kept only for the chosen modules); ``summary.json`` reports the steps, samples and
seconds FPF added next to the stream's own steps and samples (``fpf_sample_fraction``).

**k-FPF's triggers** are spread over the run's planned steps ``T`` (``RunContext.steps_for``):
trigger ``j`` of ``k`` fires after step ``round(j * T / k)``, so the last one fine-tunes after
the stream's final step (an interval ``T // k`` left up to ``k - 1`` plain steps after it).

Not verified against the paper's text (no official code, and the stored copies hold only its
abstract): iterations, learning rate, batch size and ``k`` defaults are ours (docs/strategies.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor, nn

from clplat.buffers import ReplayBuffer, sample_nbytes, samples_for_budget
from clplat.context import RunContext
from clplat.errors import ConfigError, check_choice, check_float, check_int
from clplat.rehearsal import RehearsalStrategy
from clplat.stream import Experience
from clplat.strategy import Batch, Plugin, tensor_nbytes
from clplat.seeds import SeedStream, seeded_generator
from clplat.state import Stateful

from .parts.common import finite_mse, manual_steps, sample_buffer, snapshot

if TYPE_CHECKING:
    from clplat.module import ContinualModule

LOSSES = ("ce", "kd")
WHEN = ("end", "every_experience")
GROUPS = ("norms", "head", "biases", "last_layer", "first_layer")
DEFAULT_MODULES = ("norms", "head", "biases")


def is_norm(module: nn.Module) -> bool:
    """Normalisation layers of any library: torch's, and custom ones named ``*Norm*``."""
    norm_types = (nn.LayerNorm, nn.modules.batchnorm._NormBase, nn.GroupNorm)
    return isinstance(module, norm_types) or "Norm" in type(module).__name__


def is_bias(name: str) -> bool:
    """A bias vector by its name: ``bias`` (torch layers), ``bias_ih_l0`` / ``bias_hh_l0`` (torch RNNs)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf == "bias" or leaf.startswith("bias_")


def resolve_modules(model: "ContinualModule", names: Sequence[str], key: str) -> list[str]:
    """Module or parameter paths (``named_modules`` / ``named_parameters`` names) of the groups or
    paths in ``names``."""
    modules = dict(model.named_modules())
    parameters = dict(model.named_parameters())
    out: list[str] = []
    for name in names:
        if name == "norms":
            found = [n for n, m in modules.items() if n and is_norm(m)]
        elif name == "head":
            found = ["head"]
        elif name == "biases":
            found = [n for n, p in parameters.items() if n.startswith("backbone.") and p.requires_grad and is_bias(n)]
        elif name in ("last_layer", "first_layer"):
            layers = getattr(model.backbone, "layers", None)
            if layers is None or len(layers) == 0:
                raise ConfigError(key, name, "the backbone has no 'layers' stack")
            found = [f"backbone.layers.{len(layers) - 1 if name == 'last_layer' else 0}"]
        elif name in modules or name in parameters:
            found = [name]
        else:
            raise ConfigError(key, name, "allowed values are " + ", ".join(GROUPS) + ", auto, or a module or "
                              "parameter path such as backbone.layers.0")
        out.extend(f for f in found if f not in out)
    return out


def parameters_of(model: nn.Module, paths: Sequence[str]) -> list[nn.Parameter]:
    """Trainable parameters under the modules ``paths`` (each once, in model order)."""
    chosen = tuple(p + "." for p in paths)
    return [p for n, p in model.named_parameters() if p.requires_grad and (n + ".").startswith(chosen)]


class Sensitivity(Stateful):
    """Per-module mean L1 parameter change per parameter across task switches."""

    checkpointed = ("previous", "sums", "switches")

    def __init__(self) -> None:
        self.previous: dict[str, Tensor] | None = None
        self.sums: dict[str, float] = {}
        self.switches = 0

    @staticmethod
    def units(model: nn.Module) -> dict[str, list[str]]:
        """Modules that own parameters directly -> the names of those parameters; a torch RNN
        module's tensors (input projection, recurrent matrix, biases: distinct maps packed in one
        module) are units of their own."""
        out: dict[str, list[str]] = {}
        for mod_name, mod in model.named_modules():
            own = [f"{mod_name}.{n}" if mod_name else n for n, p in mod.named_parameters(recurse=False) if p.requires_grad]
            if isinstance(mod, nn.RNNBase):
                out.update({n: [n] for n in own})
            elif own:
                out[mod_name] = own
        return out

    def record(self, model: nn.Module) -> None:
        current = snapshot(model)
        if self.previous is not None:
            for unit, names in self.units(model).items():
                change = sum(float((current[n] - self.previous[n].to(current[n].device)).abs().sum()) for n in names)
                count = sum(current[n].numel() for n in names)
                self.sums[unit] = self.sums.get(unit, 0.0) + change / count
            self.switches += 1
        self.previous = current

    def scores(self) -> dict[str, float]:
        return {u: s / self.switches for u, s in self.sums.items()} if self.switches else {}

    def top(self, k: int) -> list[str]:
        ranked = sorted(self.scores().items(), key=lambda item: -item[1])
        return [u for u, _ in ranked[:k]]



class FineTuner(Stateful):
    """The FPF step shared by the plugin and k-FPF: choose modules, fine-tune them on a buffer."""

    checkpointed = ("generator", "sensitivity", "steps", "seconds", "last_selection")

    def __init__(self, modules: Sequence[str] | str, top_k: int, iterations: int, lr: float,
                 batch_size: int, loss: str, kd_alpha: float, seed: int):
        if isinstance(modules, str):
            modules = [modules]
        modules = list(modules)
        if not modules:
            raise ConfigError(".modules", modules, "choose at least one module group")
        if "auto" in modules and modules != ["auto"]:
            raise ConfigError(".modules", modules, "'auto' cannot be combined with named groups")
        check_int(".top_k", top_k, 1)
        check_int(".iterations", iterations, 1)
        check_float(".lr", lr, 0.0)
        check_int(".batch_size", batch_size, 1)
        check_choice(".loss", loss, LOSSES)
        check_float(".kd_alpha", kd_alpha, 0.0)
        self.modules, self.top_k = modules, top_k
        self.iterations, self.lr, self.batch_size = iterations, float(lr), batch_size
        self.loss, self.kd_alpha = loss, float(kd_alpha)
        self.generator = seeded_generator(seed, SeedStream.FPF)
        self.sensitivity = Sensitivity()
        self.steps = 0
        self.seconds = 0.0
        self.last_selection: list[str] = []

    def check(self, model: "ContinualModule") -> None:
        if self.modules != ["auto"]:
            resolve_modules(model, self.modules, ".modules")

    def selection(self, model: "ContinualModule") -> list[str]:
        if self.modules == ["auto"]:
            top = self.sensitivity.top(self.top_k)
            return top or resolve_modules(model, DEFAULT_MODULES, ".modules")
        return resolve_modules(model, self.modules, ".modules")

    def run(self, model: "ContinualModule", buffer: ReplayBuffer) -> tuple[int, int]:
        """``iterations`` SGD steps on buffer minibatches, only the selected modules move;
        returns (steps, samples) taken."""
        if buffer.is_empty:
            return 0, 0
        started = time.perf_counter()
        self.last_selection = self.selection(model)
        params = parameters_of(model, self.last_selection)
        if not params:
            return 0, 0
        drawn = [0]

        def loss_fn(batch: Batch) -> Tensor:
            x, y, task, logits = batch
            out = model(x, task)
            loss = torch.nn.functional.cross_entropy(out, y)
            if self.loss == "kd":
                loss = loss + self.kd_alpha * finite_mse(out, logits)
            return loss

        def batches():
            for _ in range(self.iterations):
                m = sample_buffer(buffer, self.batch_size, self.generator)
                drawn[0] += int(m["x"].shape[0])
                yield m["x"], m["y"], m["task"], m.get("logits", m["y"])

        steps = manual_steps(model, params, batches(), loss_fn, torch.optim.SGD(params, lr=self.lr))
        self.steps += steps
        self.seconds += time.perf_counter() - started
        return steps, drawn[0]

    def summary(self, model: "ContinualModule", stream_steps: int, stream_samples: int) -> dict[str, Any]:
        samples = self.steps * self.batch_size
        chosen = self.last_selection or self.selection(model)
        tuned = sum(p.numel() for p in parameters_of(model, chosen))
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {
            "fpf_modules": chosen,
            "fpf_params": tuned,
            "fpf_param_fraction": tuned / total if total else None,
            "fpf_sensitivity": self.sensitivity.scores(),
            "fpf_steps": self.steps,
            "fpf_samples": samples,
            "fpf_seconds": round(self.seconds, 3),
            "stream_steps": stream_steps,
            "stream_samples": stream_samples,
            "fpf_sample_fraction": samples / stream_samples if stream_samples else None,
        }


class FPF(Plugin):
    """Fine-tune the forgetting-prone modules on the memory buffer after the base method."""

    name = "fpf"
    ddp_refusal = "its fine-tuning steps run outside the synchronised training step, so the ranks' weights would drift apart"
    checkpointed = ("tuner", "stream_steps", "stream_samples")  # and the own buffer, below

    def __init__(self, modules: Sequence[str] | str = DEFAULT_MODULES, top_k: int = 3, iterations: int = 100,
                 lr: float = 0.05, batch_size: int = 32, loss: str = "ce", kd_alpha: float = 1.0,
                 when: str = "end", buffer_size: int = 500, memory_bytes: int | None = None, seed: int = 0):
        super().__init__()
        check_choice(".when", when, WHEN)
        check_int(".buffer_size", buffer_size, 1)
        check_int(".memory_bytes", memory_bytes, 1, allow_none=True)
        self.memory_bytes = memory_bytes
        self.tuner = FineTuner(modules, top_k, iterations, lr, batch_size, loss, kd_alpha, seed)
        self.when = when
        self.buffer_size = buffer_size
        self.buffer: ReplayBuffer | None = None  # own buffer, when the base has none to reuse
        self.base_buffer: ReplayBuffer | None = None
        self.buffer_generator = seeded_generator(seed, SeedStream.FPF_BUFFER)
        self.stream_steps = 0
        self.stream_samples = 0

    def setup(self, context: RunContext) -> None:
        """Reuse the base strategy's buffer when it offers one (with logits for ``loss=kd``),
        else keep an own reservoir."""
        super().setup(context)
        self.tuner.check(context.module)
        offered = context.base
        if offered.buffer is not None and (self.tuner.loss == "ce" or offered.stores_logits):
            self.base_buffer, self.buffer = offered.buffer, None
        else:
            self.base_buffer = None
            if self.memory_bytes is not None:  # own buffer: as many samples as fit
                self.buffer_size = samples_for_budget(".memory_bytes", self.memory_bytes,
                                                      sample_nbytes(context.stream, logits=self.tuner.loss == "kd"))
            self.buffer = ReplayBuffer(self.buffer_size, "reservoir", self.buffer_generator)

    def after_optimizer_step(self, batch: Batch) -> None:
        x, y, task = batch
        self.stream_steps += 1
        self.stream_samples += int(x.shape[0])
        if self.buffer is not None:
            if self.tuner.loss == "kd":
                with torch.no_grad():  # our own insertion-time logits (after the step)
                    self.buffer.add(x, y, task, logits=self.module(x, task).float())
            else:
                self.buffer.add(x, y, task)

    def after_experience(self, experience: Experience) -> None:
        self.tuner.sensitivity.record(self.module)  # the CL method's change, before our fine-tuning
        last = experience.index == len(self.stream) - 1
        if self.when == "every_experience" or last:
            steps, samples = self.tuner.run(self.module, self.base_buffer if self.base_buffer is not None else self.buffer)
            self.count_extra_steps("fpf", steps, samples)

    def memory_parts(self) -> dict[str, int]:
        """Own buffer only (a reused base buffer is the base's), plus the sensitivity snapshot."""
        out = {"fpf_" + k: v for k, v in self.buffer.nbytes_by_part().items()} if self.buffer is not None else {}
        out["fpf_snapshot"] = tensor_nbytes(self.tuner.sensitivity.previous)
        return out

    def summary(self) -> dict[str, Any]:
        out = self.tuner.summary(self.module, self.stream_steps, self.stream_samples)
        out["fpf_buffer"] = "base" if self.base_buffer is not None else "own"
        return out

    # the own buffer is None when the base's is reused: it is loaded only where both exist
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": None if self.buffer is None else self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.buffer is not None and state["buffer"] is not None:
            self.buffer.load_state_dict(state["buffer"])


def trigger_steps(total_steps: int, k: int) -> list[int]:
    """The steps (1-based) after which k-FPF fine-tunes: ``round(j * total_steps / k)`` for
    ``j = 1..k`` (halves round up), so the last is ``total_steps``; fewer than ``k`` distinct
    steps when ``k > total_steps`` (then every step triggers)."""
    check_int(".k", k, 1)
    return sorted({(2 * j * total_steps + k) // (2 * k) for j in range(1, k + 1)} - {0})


class KFPF(RehearsalStrategy):
    """k-FPF: replay-free SGD on the stream, FPF on the reservoir buffer ``k`` times."""

    name = "kfpf"
    ddp_refusal = "its fine-tuning steps run outside the synchronised training step on each rank's own buffer, so the ranks' weights would drift apart"
    checkpointed = ("tuner", "steps", "samples", "triggers", "trigger_steps")  # and the rehearsal base's buffer
    #: checkpoints written before the trigger steps were recorded lack them
    checkpoint_defaults = {"trigger_steps": []}

    def __init__(self, buffer_size: int = 500, k: int = 10, every_n_steps: int | None = None,
                 modules: Sequence[str] | str = DEFAULT_MODULES, top_k: int = 3, iterations: int = 20,
                 lr: float = 0.05, batch_size: int = 32, loss: str = "ce", kd_alpha: float = 1.0,
                 memory_bytes: int | None = None, seed: int = 0):
        super().__init__(buffer_size, memory_bytes, seed)
        check_int(".k", k, 1)
        check_int(".every_n_steps", every_n_steps, 1, allow_none=True)
        self.tuner = FineTuner(modules, top_k, iterations, lr, batch_size, loss, kd_alpha, seed)
        self.k, self.every_n_steps = k, every_n_steps
        self.name = f"kfpf_{loss}"
        self.stores_logits = loss == "kd"
        self.steps = 0
        self.samples = 0
        self.triggers = 0
        self.trigger_steps: list[int] = []  # the stream steps after which FPF ran
        self.planned_steps: int | None = None
        self._schedule: frozenset[int] | None = None
        self._logits: Tensor | None = None

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.tuner.check(context.module)

    def _triggers_at(self, step: int) -> bool:
        """Whether FPF runs after stream step ``step`` (1-based): every ``every_n_steps`` steps when
        set, else after steps ``round(j * T / k)``, ``j = 1..k``, of the run's ``T`` planned steps,
        so the last trigger follows the stream's final step (``T // k`` intervals left up to
        ``k - 1`` plain steps after the last trigger: 5 of 325 with the old default budget)."""
        if self.every_n_steps is not None:
            return step % self.every_n_steps == 0
        if self._schedule is None:
            steps_for = self.context.steps_for
            if steps_for is None:  # not run by the experiment loop (unit use)
                raise ConfigError(".every_n_steps", None, "set it when training outside run_experiment "
                                  "(or call Hooks.plan(steps_for) first)")
            self.planned_steps = sum(steps_for(exp.train) for exp in self.stream)
            self._schedule = frozenset(trigger_steps(self.planned_steps, self.k))
        return step in self._schedule

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        out = self.module(x, task)
        self._logits = out.detach()
        return self.criterion(out, y)

    def after_optimizer_step(self, batch: Batch) -> None:
        x, y, task = batch
        if self.stores_logits and self._logits is not None:
            self.buffer.add(x, y, task, logits=self._logits.float())
        else:
            self.buffer.add(x, y, task)
        self._logits = None
        self.steps += 1
        self.samples += int(x.shape[0])
        if self._triggers_at(self.steps):
            steps, samples = self.tuner.run(self.module, self.buffer)
            self.count_extra_steps("fpf", steps, samples)
            self.triggers += 1
            self.trigger_steps.append(self.steps)

    def after_experience(self, experience: Experience) -> None:
        self.tuner.sensitivity.record(self.module)

    def memory_parts(self) -> dict[str, int]:
        return {**super().memory_parts(), "fpf_snapshot": tensor_nbytes(self.tuner.sensitivity.previous)}

    def summary(self) -> dict[str, Any]:
        out = self.tuner.summary(self.module, self.steps, self.samples)
        out.update({"fpf_triggers": self.triggers, "fpf_trigger_steps": list(self.trigger_steps),
                    "fpf_every_n_steps": self.every_n_steps, "fpf_planned_steps": self.planned_steps,
                    **super().summary()})
        return out
