"""Task-conditioned hypernetworks: the backbone and head are *generated*, one weight set per task.

- von Oswald, Henning, Grewe & Sacramento 2020, "Continual learning with hypernetworks" (ICLR;
  arXiv:1906.00695; code ``hypercl`` / ``hypnettorch``): a chunked hypernetwork maps a learned
  task embedding ``e_t`` to all target-network weights; forgetting is prevented by an *output*
  regularizer that keeps the weights generated for old embeddings where they were at the start
  of the current task, evaluated after a look-ahead optimizer step.
- Chandra, Varshney, Srijith & Gupta 2023, "Continual Learning with Dependency Preserving
  Hypernetworks" (WACV; arXiv:2209.07712): an RNN hypernetwork generates the chunks one after
  another (``kind: rnn``), optionally growing its hidden layer for each new task.
- Ortiz, Guttag & Dalca, "Magnitude Invariant Parametrizations Improve Hypernetwork Learning"
  (ICLR 2024; arXiv:2304.07645): bounded-norm embedding encoding plus a learned base ``theta_0``
  (``mip: true``).

One training step (von Oswald's ``train.py`` loop, mapped onto Lightning's automatic step)::

    W = hnet(e_t); L_task = CE(target(x; W) masked to task t's classes, y)   # training_step
    L_task.backward()                                                       # Lightning
    emb_opt.step()                # e_t sees only the task loss            # before_optimizer_step
    dTheta = the step theta_opt would take now (detached look-ahead)
    L_reg = beta / |R| * sum_{j in R} || hnet(e_j; Theta + dTheta) - W*_j ||^2;  L_reg.backward()
    theta_opt.step()                                                        # Lightning

``W*_j`` (targets) are the hypernetwork's outputs at the start of the current task: by default
recomputed at every step from a snapshot ``Theta*`` of its parameters taken then (``targets:
online``, hypnettorch's ``prev_theta``: memory of one generator, whatever the number of tasks,
which is what keeps the method compressive), or stored as ``(T - 1) x N`` floats (``targets:
stored``: no recomputation, as much memory as ``T - 1`` target networks).
The target network is the run's own backbone + head, called through ``torch.func.functional_call``
with generated tensors; its registered parameters are only a shape template (and MIP's
``theta_0`` initialisation) and never trained. The hypernetwork is trained by Lightning's
optimizer through the ``configure_optimizer`` strategy hook; embeddings by their own Adam.

Prediction: with task ids (task-incremental), each sample uses its task's embedding. Without
(class-/domain-incremental), every learned embedding is run and the one whose prediction over its
own task's classes has the lowest entropy is used (HNET+ENT).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from omegaconf import ListConfig
from torch import Tensor, nn
from torch.func import functional_call

from clplat.context import RunContext
from clplat.errors import ConfigError, check_choice, check_float, check_int
from clplat.stream import Experience
from clplat.strategy import Batch, Strategy, tensor_nbytes
from clplat.seeds import SeedStream, seeded_generator

from .parts.task_inference import (INFERENCE, lowest_entropy, resolve_task_inference, task_class_mask,
                                   with_finite_floor)
from .parts.hypernetworks import BODY_INITS, KINDS, RNNHypernet, TargetSpec, build_hypernet

TARGETS = ("online", "stored")


def lookahead_delta(optimizer: torch.optim.Optimizer) -> dict[int, Tensor]:
    """``{id(p): dTheta}``: the update ``optimizer.step()`` would apply with the current gradients.

    von Oswald's ``calc_delta_theta`` replays Adam's update from a copy of its state; so do we,
    for Adam/AdamW and SGD (momentum, dampening, Nesterov, weight decay). Other optimizers get
    the plain ``-lr * grad`` (their ``use_sgd_change``). Nothing is modified.
    """
    deltas: dict[int, Tensor] = {}
    with torch.no_grad():
        for group in optimizer.param_groups:
            lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group.get("maximize", False) else p.grad
                state = optimizer.state.get(p, {})
                if isinstance(optimizer, torch.optim.Adam):  # AdamW subclasses Adam in torch >= 2.x
                    decoupled = isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
                    b1, b2 = group["betas"]
                    step = float(state["step"]) + 1 if "step" in state else 1.0
                    if wd and not decoupled:
                        g = g + wd * p
                    m = b1 * state["exp_avg"] + (1 - b1) * g if "exp_avg" in state else (1 - b1) * g
                    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g if "exp_avg_sq" in state else (1 - b2) * g * g
                    if group.get("amsgrad", False) and "max_exp_avg_sq" in state:
                        v = torch.maximum(state["max_exp_avg_sq"], v)
                    denom = (v / (1 - b2**step)).sqrt() + group["eps"]
                    d = -lr * (m / (1 - b1**step)) / denom
                    if wd and decoupled:
                        d = d - lr * wd * p
                elif isinstance(optimizer, torch.optim.SGD):
                    if wd:
                        g = g + wd * p
                    mom = float(group.get("momentum", 0.0))
                    if mom:
                        buf = state.get("momentum_buffer")
                        buf = g.clone() if buf is None else mom * buf + (1 - float(group["dampening"])) * g
                        g = g + mom * buf if group.get("nesterov", False) else buf
                    d = -lr * g
                else:
                    d = -lr * g
                deltas[id(p)] = d.detach()
    return deltas


class Hypernet(Strategy):
    """A hypernetwork generates backbone + head weights from a learned per-task embedding."""

    name = "hypernet"
    accepts_plugins = False
    plugins_refusal = "they act on the module's parameters, which a hypernetwork generates instead of training"
    ddp_refusal = "the generator it trains is not the module's parameters, which DDP synchronises"
    checkpointed = ("targets", "theta_star", "regularized", "learned", "current", "generator", "last_reg")
    # (and the hypernetwork, below); checkpoints from before ``targets: online`` stored every target
    checkpoint_defaults = {"theta_star": {}, "regularized": None}

    def __init__(self, kind: str = "chunked_mlp", emb_dim: int = 32, chunk_emb_dim: int = 32,
                 chunk_size: int = 13000, hidden: Sequence[int] = (100, 100), rnn_hidden: int = 64,
                 grow: int = 0, beta: float = 3.0, lookahead: bool = True, reg_tasks: int | None = None,
                 lr: float | None = 0.001, emb_lr: float = 0.001, init_from_previous: bool = False, mip: bool = True,
                 mip_encoding: bool | None = False, output_scale: float = 1.0, body_init: str = "he",
                 task_inference: str = "auto", targets: str = "online", seed: int = 0):
        super().__init__()
        check_choice(".kind", kind, KINDS)
        check_int(".emb_dim", emb_dim, 1)
        check_int(".chunk_emb_dim", chunk_emb_dim, 1 if kind == "chunked_mlp" else 0)
        check_int(".chunk_size", chunk_size, 1)
        if not isinstance(hidden, (list, tuple, ListConfig)):
            raise ConfigError(".hidden", hidden, "must be a list of layer widths, e.g. [100, 100] ([] for none)")
        hidden = list(hidden)
        for width in hidden:
            check_int(".hidden", width, 1)
        check_int(".rnn_hidden", rnn_hidden, 1)
        check_int(".grow", grow, 0)
        if grow and kind != "rnn":
            raise ConfigError(".grow", grow, "growth applies to kind=rnn only; use 0 with chunked_mlp")
        check_float(".beta", beta, 0.0)
        check_choice(".lookahead", lookahead, (True, False))
        check_int(".reg_tasks", reg_tasks, 1, allow_none=True)
        for key, value in ((".lr", lr), (".emb_lr", emb_lr)):
            check_float(key, value, 0.0, allow_none=key == ".lr")
            if value is not None and value <= 0:
                raise ConfigError(key, value, "must be a number > 0")
        check_choice(".init_from_previous", init_from_previous, (True, False))
        check_choice(".mip", mip, (True, False))
        check_choice(".mip_encoding", mip_encoding, (True, False, None))
        check_float(".output_scale", output_scale, 0.0)
        if output_scale <= 0:
            raise ConfigError(".output_scale", output_scale, "must be a number > 0")
        check_choice(".body_init", body_init, BODY_INITS)
        check_choice(".task_inference", task_inference, INFERENCE)
        check_choice(".targets", targets, TARGETS)
        self.target_mode = targets
        self.body_init = body_init
        self.kind, self.emb_dim, self.chunk_emb_dim, self.chunk_size = kind, emb_dim, chunk_emb_dim, chunk_size
        self.hidden, self.rnn_hidden, self.grow = hidden, rnn_hidden, grow
        self.beta, self.lookahead, self.reg_tasks = float(beta), lookahead, reg_tasks
        self.lr = None if lr is None else float(lr)
        self.emb_lr, self.init_from_previous, self.mip = float(emb_lr), init_from_previous, mip
        self.mip_encoding, self.output_scale = mip_encoding, float(output_scale)
        self.task_inference = task_inference
        self.generator = seeded_generator(seed, SeedStream.HYPERNET)
        self.hnet: nn.Module | None = None
        self.embeddings = nn.ParameterList()
        self.spec: TargetSpec | None = None
        self.class_mask: Tensor | None = None
        self.regularized: list[int] = []  # the previous tasks, whose outputs the regularizer holds fixed
        self.targets: dict[int, Tensor] = {}  # targets: stored -> task id -> flat weights at this task's start
        self.theta_star: dict[str, Tensor] = {}  # targets: online -> the hypernetwork's parameters then
        self.learned: list[int] = []  # task ids trained so far (the candidates of task inference)
        self.current: int | None = None
        self.theta_optimizer: torch.optim.Optimizer | None = None
        self.emb_optimizer: torch.optim.Optimizer | None = None
        self._pending_emb_state: dict[str, Any] | None = None
        self.last_reg = 0.0
        self._last_reg_tensor: Tensor | None = None

    # -- wiring ------------------------------------------------------------------------------
    def setup(self, context: RunContext) -> None:
        super().setup(context)
        module, stream = context.module, context.stream
        self.task_inference = resolve_task_inference(self.task_inference, stream)
        named = [(n, p) for n, p in module.named_parameters()]
        for _, p in named:
            p.requires_grad_(False)  # a template: the hypernetwork's output replaces it
        self.spec = TargetSpec.of(named)
        template = torch.cat([p.detach().flatten() for _, p in named])
        self.hnet = build_hypernet(self.kind, self.spec, self.emb_dim, self.chunk_size, self.chunk_emb_dim,
                                   self.hidden, self.rnn_hidden, self.mip, template, self.mip_encoding,
                                   self.body_init, self.generator)
        self.hnet.match_output_scale(self.output_scale * float(template.std()), self.generator)
        # von Oswald: task embeddings ~ N(0, 1); one per task id (a task may recur)
        self.embeddings = nn.ParameterList(
            [nn.Parameter(torch.randn(self.emb_dim, generator=self.generator)) for _ in range(stream.num_tasks)])
        self.class_mask = task_class_mask(stream)

    def _sync_device(self) -> None:
        """Keep the hypernetwork with the module (moved in place: optimizers keep their params).
        Called outside inference mode only, so parameters never become inference tensors."""
        device = next(self.module.parameters()).device
        if next(self.hnet.parameters()).device != device:
            self.hnet.to(device)
            self.embeddings.to(device)

    # -- generation --------------------------------------------------------------------------
    def generate(self, tasks: Sequence[int]) -> Tensor:
        """Flat weights ``(len(tasks), N)`` for the given task ids."""
        return self.hnet(torch.stack([self.embeddings[t] for t in tasks]))

    def target_logits(self, flat: Tensor, x: Tensor, task: Tensor, task_id: int) -> Tensor:
        """The backbone + head run with ``flat`` weights, logits masked to ``task_id``'s classes."""
        weights = self.spec.unflatten(flat.to(x.device))
        logits = functional_call(self.module, weights, (x, task))
        return logits.masked_fill(~self.class_mask[task_id].to(logits.device), float("-inf"))

    # -- hooks -------------------------------------------------------------------------------
    def before_experience(self, experience: Experience) -> None:
        super().before_experience(experience)
        self._sync_device()
        t = experience.task_id
        new_task = t not in self.learned
        if new_task and self.learned:
            if isinstance(self.hnet, RNNHypernet) and self.grow:
                self.hnet.grow(self.grow, self.generator)
            if self.init_from_previous:
                with torch.no_grad():
                    self.embeddings[t].copy_(self.embeddings[self.learned[-1]])
        self.regularized = sorted(j for j in self.learned if j != t)
        self.targets, self.theta_star = {}, {}
        if self.regularized and self.target_mode == "stored":
            with torch.no_grad():
                flat = self.generate(self.regularized)
            self.targets = {j: flat[i].clone() for i, j in enumerate(self.regularized)}
        elif self.regularized:
            self.theta_star = {n: p.detach().clone() for n, p in self.hnet.named_parameters()}
        if new_task:
            self.learned.append(t)
        self.current = t

    def configure_optimizer(self, factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
                            ) -> torch.optim.Optimizer:
        """Lightning's optimizer trains the hypernetwork; the current embedding gets its own Adam
        (von Oswald's separate ``emb_optimizer``), both new at every task as in the paper."""
        self._sync_device()
        self.theta_optimizer = factory(list(self.hnet.parameters()))
        if self.lr is not None:  # the run's optimizer type, the hypernetwork's own step size
            for group in self.theta_optimizer.param_groups:
                group["lr"] = self.lr
        self.emb_optimizer = torch.optim.Adam([self.embeddings[self.current]], lr=self.emb_lr)
        pending = self._pending_emb_state
        if pending is not None and pending["task"] == self.current:
            self.emb_optimizer.load_state_dict(pending["state"])
        self._pending_emb_state = None
        return self.theta_optimizer

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        flat = self.hnet(self.embeddings[self.current])
        return self.criterion(self.target_logits(flat, x, task, self.current), y)

    def regularizer(self, delta: dict[int, Tensor] | None = None) -> Tensor:
        """``beta / |R| * sum_j ||hnet(e_j; Theta + dTheta) - W*_j||^2`` over previous tasks ``R``
        (all of them, or ``reg_tasks`` drawn at random each step); ``delta`` is detached."""
        tasks = self.regularized
        if self.reg_tasks is not None and self.reg_tasks < len(tasks):
            pick = torch.randperm(len(tasks), generator=self.generator)[: self.reg_tasks]
            tasks = [tasks[i] for i in pick.tolist()]
        params = {n: p + delta[id(p)] if delta is not None and id(p) in delta else p
                  for n, p in self.hnet.named_parameters()}
        embeddings = torch.stack([self.embeddings[j].detach() for j in tasks])
        out = functional_call(self.hnet, params, (embeddings,))
        return self.beta / len(tasks) * (out - self.target_outputs(tasks)).pow(2).sum()

    def target_outputs(self, tasks: Sequence[int]) -> Tensor:
        """``W*_j`` for the previous tasks ``tasks``, ``(len(tasks), N)``: stored, or generated
        from the snapshot ``Theta*`` with the tasks' (frozen) embeddings."""
        if self.target_mode == "stored":
            return torch.stack([self.targets[j] for j in tasks])
        embeddings = torch.stack([self.embeddings[j].detach() for j in tasks])
        with torch.no_grad():
            return functional_call(self.hnet, self.theta_star, (embeddings,))

    def before_optimizer_step(self) -> None:
        """Gradients of the task loss are in place: step the embedding, then add the output
        regularizer's gradient (at the look-ahead point) before Lightning steps the hypernetwork."""
        if self.emb_optimizer is not None:
            self.emb_optimizer.step()
            self.emb_optimizer.zero_grad(set_to_none=True)
        if self.beta > 0 and self.regularized:
            delta = lookahead_delta(self.theta_optimizer) if self.lookahead and self.theta_optimizer else None
            reg = self.regularizer(delta)
            reg.backward()
            self._last_reg_tensor = reg.detach()

    def after_experience(self, experience: Experience) -> None:
        if self._last_reg_tensor is not None:  # one host sync per task, not per step
            self.last_reg = float(self._last_reg_tensor)

    def predict(self, x: Tensor, task: Tensor) -> Tensor:
        if self.task_inference == "given":
            out = x.new_full((x.shape[0], self.stream.num_classes), float("-inf"))
            ids = task.unique().tolist()
            flat = self.generate(ids)
            for i, t in enumerate(ids):
                rows = task == t
                out[rows] = self.target_logits(flat[i], x[rows], task[rows], t)
            return out
        _, chosen = self.infer_task(x)
        return with_finite_floor(chosen)

    def infer_task(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """HNET+ENT: (task id chosen per sample, its log-probabilities). Candidates are the
        learned embeddings; a sample's task is the one whose prediction is most confident."""
        candidates = self.learned or [0]
        flat = self.generate(candidates)
        logits = torch.stack([
            self.target_logits(flat[i], x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), t)
            for i, t in enumerate(candidates)])
        choice, chosen = lowest_entropy(logits)
        return torch.tensor(candidates, device=x.device)[choice], chosen

    def memory_parts(self) -> dict[str, int]:
        """The generator (parameters and buffers), the task embeddings and the stored outputs
        (the regularizer's targets, or the parameter snapshot they are computed from); the target
        network's own tensors are the model."""
        return {"hypernet": tensor_nbytes(self.hnet), "embeddings": tensor_nbytes(self.embeddings),
                "targets": tensor_nbytes(self.targets, self.theta_star)}

    # -- reporting and checkpoints -----------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        hnet_params = sum(p.numel() for p in self.hnet.parameters())
        out = {
            "hypernet_kind": self.kind,
            "hypernet_params": hnet_params,
            "hypernet_embedding_params": sum(p.numel() for p in self.embeddings),
            "hypernet_target_params": self.spec.numel,
            "hypernet_params_per_target_param": round(hnet_params / self.spec.numel, 4),
            "hypernet_num_chunks": self.hnet.num_chunks,
            "hypernet_targets": self.target_mode,
            "hypernet_stored_target_floats": sum(t.numel() for t in self.targets.values()),
            "hypernet_snapshot_floats": sum(t.numel() for t in self.theta_star.values()),
            "hypernet_task_inference": self.task_inference,
            "hypernet_last_reg": self.last_reg,
        }
        if isinstance(self.hnet, RNNHypernet):
            out["hypernet_rnn_hidden"] = self.hnet.hidden_size
        return out

    # the hypernetwork (resized before loading), the embeddings (one stacked tensor) and the
    # embedding optimizer (restored at the next fit) are saved in forms of their own
    def state_dict(self) -> dict[str, Any]:
        emb_state = None
        if self.emb_optimizer is not None:
            emb_state = {"task": self.current, "state": self.emb_optimizer.state_dict()}
        return {
            **super().state_dict(),
            "hnet": {k: v.detach().cpu().clone() for k, v in self.hnet.state_dict().items()},
            "rnn_hidden": self.hnet.hidden_size if isinstance(self.hnet, RNNHypernet) else None,
            "embeddings": torch.stack([e.detach().cpu() for e in self.embeddings]),
            "emb_optimizer": emb_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.hnet, RNNHypernet) and state["rnn_hidden"] is not None:
            self.hnet.resize(int(state["rnn_hidden"]))
        self.hnet.load_state_dict(state["hnet"])
        with torch.no_grad():
            for e, saved in zip(self.embeddings, state["embeddings"]):
                e.copy_(saved)
        self._pending_emb_state = state["emb_optimizer"]
        super().load_state_dict(state)

    def after_load_state(self) -> None:
        device = next(self.hnet.parameters()).device
        self.targets = {int(j): t.to(device) for j, t in self.targets.items()}
        self.theta_star = {n: t.to(device) for n, t in self.theta_star.items()}
        self.regularized = sorted(self.targets) if self.regularized is None else [int(j) for j in self.regularized]
        if self.targets and not self.theta_star:  # a checkpoint written with stored targets goes on with them
            self.target_mode = "stored"
        self.learned = [int(j) for j in self.learned]


__all__ = ["Hypernet", "lookahead_delta", "lowest_entropy", "INFERENCE"]
