"""Learning without Forgetting.

Li & Hoiem 2016, "Learning without Forgetting" (ECCV; arXiv:1606.09282); loss and defaults as in
mammoth ``models/lwf.py`` (``alpha`` 0.5, temperature 2).

At the start of task t > 0 the old network's outputs on the new task's data are the targets that
keep old behaviour: training minimises ``CE(new labels) + alpha * KL_T(old outputs || new outputs)``
on the *old* outputs only, with ``KL_T(a, b) = -mean sum softmax(a/T) log softmax(b/T)`` (mammoth's
``modified_kl_div`` of ``smooth(softmax, T)``, which equals ``softmax(logits / T)``).

What "old outputs" are depends on the head:

- single head (class- and domain-incremental): the logits of the classes seen before task t;
- multi-head (task-incremental): each previous task's head on the new data, the original LwF
  setting, one distillation term per old head (summed, as in Li & Hoiem).

Warm-up (Li & Hoiem Sec. 3, mammoth ``begin_task``): before training task t, the output rows of the
classes that are *new* in task t are trained alone on its data for ``warmup_epochs`` with the
features frozen. Domain-incremental tasks bring no new classes, so there is no warm-up there.

**Deviation.** mammoth records the old logits of every training sample once, before the task. Our
batches carry no sample index, so we keep a frozen copy of the network before the task (eval mode)
and compute its logits on the fly. Without data augmentation the values are identical (the
warm-up only moves new-class rows, which are not distilled); it costs one forward per step and one
model copy instead of a logit table.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clplat.errors import check_float, check_int
from clplat.heads import MultiHead
from clplat.stream import Experience
from clplat.strategy import Batch, Strategy, tensor_nbytes
from clplat.seeds import SeedStream, seeded_generator

from .parts.common import epoch_batches, manual_steps


def distillation(old_logits: Tensor, new_logits: Tensor, temperature: float) -> Tensor:
    """``-mean_batch sum_c softmax(old/T) * log softmax(new/T)`` (mammoth's modified KL)."""
    target = F.softmax(old_logits / temperature, dim=1)
    return -(target * F.log_softmax(new_logits / temperature, dim=1)).sum(dim=1).mean()


class LwF(Strategy):
    """Cross-entropy on the new task plus distillation of the pre-task network's old outputs."""

    name = "lwf"
    supports_ddp = True  # the teacher is a copy of weights every rank shares; distillation is per sample
    # the teacher and groups are not saved: before_experience rebuilds them from the restored network
    checkpointed = ("generator", "warmup_steps")

    def __init__(self, alpha: float = 0.5, temperature: float = 2.0, warmup_epochs: int = 1,
                 warmup_batch_size: int = 64, seed: int = 0):
        super().__init__()
        check_float(".alpha", alpha, 0.0)
        check_float(".temperature", temperature, 1e-6)
        check_int(".warmup_epochs", warmup_epochs, 0)
        check_int(".warmup_batch_size", warmup_batch_size, 1)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.warmup_epochs, self.warmup_batch_size = warmup_epochs, warmup_batch_size
        self.generator = seeded_generator(seed, SeedStream.LWF)
        self.teacher: nn.ModuleDict | None = None
        # (head task id or None for the batch's own ids, class indices) per distillation term
        self.groups: list[tuple[int | None, Tensor]] = []
        self.warmup_steps = 0

    def before_experience(self, experience: Experience) -> None:
        super().before_experience(experience)
        previous = self.stream.experiences[: experience.index]
        if not previous:
            self.teacher, self.groups = None, []
            return
        module = self.module
        device = next(module.parameters()).device
        self.teacher = copy.deepcopy(nn.ModuleDict({"backbone": module.backbone, "head": module.head})).eval()
        self.teacher.requires_grad_(False)
        if isinstance(module.head, MultiHead):
            old_tasks = sorted({e.task_id for e in previous} - {experience.task_id})
            self.groups = [(t, torch.tensor(self.stream.task_classes[t], device=device)) for t in old_tasks]
        else:
            old_classes = sorted({c for e in previous for c in e.classes})
            self.groups = [(None, torch.tensor(old_classes, device=device))]
        seen = {c for e in previous for c in e.classes}
        new_classes = sorted(set(experience.classes) - seen)
        if new_classes and self.warmup_epochs > 0:
            self._warm_up(experience, new_classes)

    def _warm_up(self, experience: Experience, new_classes: list[int]) -> None:
        """Train the new classes' output rows alone on the task's data, features frozen."""
        module = self.module
        device = next(module.parameters()).device
        classes = torch.tensor(new_classes, device=device)
        position = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long, device=device)
        position[classes] = torch.arange(len(new_classes), device=device)
        train = experience.train
        keep = torch.isin(train.y, torch.tensor(new_classes))
        data = train.subset(torch.nonzero(keep).squeeze(1))
        if len(data) == 0:
            return

        def loss_fn(batch: Batch) -> Tensor:
            x, y, task = batch
            with torch.no_grad():
                module.backbone.eval()
                features = module.backbone(x)
                module.backbone.train()
            logits = module.head(features, task)[:, classes]
            return F.cross_entropy(logits, position[y])

        head_params = [p for p in module.head.parameters() if p.requires_grad]
        steps = manual_steps(
            module, head_params, epoch_batches(data, self.warmup_batch_size, self.warmup_epochs, self.generator), loss_fn)
        self.warmup_steps += steps
        self.count_extra_steps("warmup", steps, len(data) * self.warmup_epochs)

    def training_step(self, batch: Batch) -> Tensor:
        x, y, task = batch
        module = self.module
        features = module.backbone(x)
        loss = self.criterion(module.head(features, task), y)
        if self.teacher is None or self.alpha == 0:
            return loss
        with torch.no_grad():
            old_features = self.teacher["backbone"](x)
        for head_task, classes in self.groups:
            ids = task if head_task is None else torch.full_like(task, head_task)
            new = module.head(features, ids)[:, classes]
            with torch.no_grad():
                old = self.teacher["head"](old_features, ids)[:, classes]
            loss = loss + self.alpha * distillation(old, new, self.temperature)
        return loss

    def memory_parts(self) -> dict[str, int]:
        return {"teacher": tensor_nbytes(self.teacher)}

    def summary(self) -> dict[str, Any]:
        return {"lwf_warmup_steps": self.warmup_steps}
