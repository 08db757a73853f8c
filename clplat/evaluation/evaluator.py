"""``ContinualEvaluator``: accuracy on every seen task, every few iterations, for the price of one pass.

The stability gap (De Lange et al., ICLR 2023) is a transient drop of old tasks' accuracy right
after a boundary; end-of-task evaluation never sees it. Evaluating every few iterations is only
affordable if it is cheap, so the evaluator

- draws a **fixed, seeded** test subset per task once (a subset redrawn at every evaluation adds
  sampling noise that biases min-ACC down and WF^w up),
- stacks all subsets, in task order, into one tensor on the model's device, so "the seen tasks"
  are a prefix of it,
- evaluates that prefix in large batches under ``inference_mode`` and reduces per task with
  ``index_add_``, with a single host synchronisation per evaluation.

Evaluations happen before the first update (``global_iter`` 0), after every ``every_n_iters``-th
optimizer step, and at every experience boundary (called by the experiment loop after the
strategy's ``after_experience``, so end-of-task work such as fine-tuning is included).

Under DDP the model is the same on every rank, so each rank evaluates a contiguous 1/world
slice of the stacked subsets and the per-task sums are all-reduced: the numbers are those of
one process evaluating everything (same subsets, same model), for 1/world of the compute, and
every rank holds them (its results store stays identical to rank 0's, which keeps the periodic
evaluations and the boundary reuse in lock-step). Only rank 0 has loggers.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from clplat.distributed import all_reduce_sum, world
from clplat.errors import check_choice, check_int
from clplat.evaluation.results import Evaluation, ResultsStore
from clplat.stream import Stream
from clplat.strategy import seeded_generator

TASK_SELECTIONS = ("seen", "all")


class ContinualEvaluator(Callback):
    def __init__(self, stream: Stream, every_n_iters: int | None = 10, subset_size: int = 1000,
                 tasks: str = "seen", batch_size: int = 4096, initial: bool = True, seed: int = 0):
        check_int("eval.every_n_iters", every_n_iters, 1, allow_none=True)
        check_int("eval.subset_size", subset_size, 1)
        check_choice("eval.tasks", tasks, TASK_SELECTIONS)
        check_int("eval.batch_size", batch_size, 1)
        self.every_n_iters = every_n_iters
        self.subset_size = subset_size
        self.tasks = tasks
        self.batch_size = batch_size
        self.initial = initial
        self.num_tasks = len(stream)
        self.results = ResultsStore()
        self.experience = 0

        xs, ys, model_tasks, eval_tasks, self.subset_indices = [], [], [], [], []
        for exp in stream:
            n = len(exp.test)
            index = torch.randperm(n, generator=seeded_generator(seed, 7919, exp.index))[: min(subset_size, n)]
            index = index.sort().values
            self.subset_indices.append(index.tolist())
            xs.append(exp.test.x[index])
            ys.append(exp.test.y[index])
            model_tasks.append(exp.test.task[index])
            eval_tasks.append(torch.full((len(index),), exp.index, dtype=torch.long))
        self.x, self.y = torch.cat(xs), torch.cat(ys)
        self.model_task, self.eval_task = torch.cat(model_tasks), torch.cat(eval_tasks)
        sizes = torch.tensor([len(i) for i in self.subset_indices])
        self.counts = sizes.tolist()
        self.offsets = [0, *torch.cumsum(sizes, 0).tolist()]

    # -- the experiment loop drives these ---------------------------------------------------
    def begin_experience(self, index: int) -> None:
        self.experience = index

    def evaluate_boundary(self, trainer: L.Trainer, module: L.LightningModule) -> Evaluation:
        """The end-of-experience evaluation (reuses the periodic one taken at the same step)."""
        step = trainer.global_step
        last = self.results.last
        if last is not None and last.global_iter == step and last.experience == self.experience and not last.initial:
            last.boundary = True
            return last
        return self._evaluate(trainer, module, boundary=True)

    # -- Lightning hooks ---------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._to_device(pl_module.device)
        if self.initial and trainer.global_step == 0 and len(self.results) == 0:
            self._evaluate(trainer, pl_module, initial=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.every_n_iters is not None and trainer.global_step % self.every_n_iters == 0:
            self._evaluate(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"results": self.results.state_dict(), "experience": self.experience,
                "subset_indices": self.subset_indices}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["subset_indices"] != self.subset_indices:
            raise ValueError("checkpoint was evaluated on different test subsets (another stream or seed)")
        self.results.load_state_dict(state_dict["results"])
        self.experience = state_dict["experience"]

    # -- the evaluation itself ---------------------------------------------------------------
    def _to_device(self, device: torch.device) -> None:
        if self.x.device != device:
            self.x, self.y = self.x.to(device), self.y.to(device)
            self.model_task, self.eval_task = self.model_task.to(device), self.eval_task.to(device)

    def _evaluate(self, trainer: L.Trainer, module: L.LightningModule, boundary: bool = False,
                  initial: bool = False) -> Evaluation:
        self._to_device(module.device)
        n_tasks = self.num_tasks if self.tasks == "all" else self.experience + 1
        end = self.offsets[n_tasks]
        rank, world_size = world()
        share = -(-end // world_size)  # this rank's slice [first, last) of the seen prefix
        first, last = min(rank * share, end), min((rank + 1) * share, end)
        correct = torch.zeros(n_tasks, device=module.device, dtype=torch.float64)
        loss_sum = torch.zeros(n_tasks, device=module.device, dtype=torch.float64)
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            for start in range(first, last, self.batch_size):
                stop = min(start + self.batch_size, last)
                y, group = self.y[start:stop], self.eval_task[start:stop]
                logits = module.strategy.predict(self.x[start:stop], self.model_task[start:stop])
                hits = (logits.argmax(dim=1) == y).to(torch.float64)
                correct.index_add_(0, group, hits)
                loss_sum.index_add_(0, group, F.cross_entropy(logits.float(), y, reduction="none").double())
        module.train(was_training)
        counts = self.counts[:n_tasks]
        stats = all_reduce_sum(torch.stack([correct, loss_sum])).cpu().tolist()
        evaluation = Evaluation(
            global_iter=trainer.global_step,
            experience=self.experience,
            correct=[int(round(c)) for c in stats[0]],
            n=counts,
            loss=[s / m for s, m in zip(stats[1], counts)],
            boundary=boundary,
            initial=initial,
        )
        self.results.append(evaluation)
        self._log(trainer, evaluation)
        return evaluation

    def _log(self, trainer: L.Trainer, evaluation: Evaluation) -> None:
        if not trainer.loggers:
            return
        accuracies = evaluation.accuracies
        metrics: dict[str, float] = {f"eval/task_{k}/acc": a for k, a in enumerate(accuracies)}
        seen = accuracies[: evaluation.experience + 1]
        metrics["eval/acc_seen"] = sum(seen) / len(seen)
        metrics["cl/global_iter"] = evaluation.global_iter
        metrics["cl/experience"] = evaluation.experience
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=evaluation.global_iter)
