"""``ContinualEvaluator``: accuracy on every seen task, every few iterations, for the price of one pass.

The stability gap (De Lange et al., ICLR 2023) is a transient drop of old tasks' accuracy right
after a boundary; end-of-task evaluation never sees it. Evaluating every few iterations is only
affordable if it is cheap, so the evaluator

- scores the test data, or with ``eval.split=validation`` the validation data held out of the
  training data (tuning never sees the test data),
- draws a **fixed, seeded** test subset per task once (a subset redrawn at every evaluation adds
  sampling noise that biases min-ACC down and WF^w up), from ``eval.subset_seed`` and not the
  run seed, so runs with different seeds are scored on the same samples and compare pairwise,
- stacks all subsets, in task order, into one tensor on the model's device, so "the seen tasks"
  are a prefix of it,
- evaluates that prefix in large batches under ``inference_mode`` and reduces per task with
  ``index_add_``, with a single host synchronisation per evaluation.

Evaluations happen before the first update (``global_iter`` 0), after every ``every_n_iters``-th
optimizer step, and at every experience boundary. Each describes the model that exists then:

- a periodic evaluation runs after every hook of its step (``StrategyHooks`` runs the strategy's
  post-step hook before this callback);
- the boundary evaluation is called by the experiment loop after the strategy's
  ``after_experience`` and always scores the model afresh, so end-of-task work (fine-tuning,
  rehearsal, masks) is included whatever the cadence. When the periodic evaluation of the same
  step scored exactly the same, that row becomes the boundary row; otherwise both are kept, in
  time order (before and after the end-of-experience work).

Under DDP the model is the same on every rank, so each rank evaluates a contiguous 1/world
slice of the stacked subsets and the per-task sums are all-reduced: the numbers are those of
one process evaluating everything (same subsets, same model), for 1/world of the compute, and
every rank holds them (its results store stays identical to rank 0's). Only rank 0 has loggers.

Each row also records the task's chance level: the mean over its samples of ``1 / K``, with K the
number of classes the model can predict for that sample (its finite logits: a multi-head or a
masked single head restricts them). The stability-gap metrics use it to leave out tasks that are
already at chance when a boundary begins.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from clplat.config import check_values
from clplat.distributed import all_reduce_sum, world
from clplat.errors import ConfigError
from clplat.evaluation.results import Evaluation, ResultsStore
from clplat.seeds import SeedStream, seeded_generator
from clplat.stream import Stream



class ContinualEvaluator(Callback):
    def __init__(self, stream: Stream, every_n_iters: int | None = 10, subset_size: int = 1000,
                 tasks: str = "seen", batch_size: int = 4096, initial: bool = True, subset_seed: int = 0,
                 split: str = "test"):
        check_values("eval", {"every_n_iters": every_n_iters, "subset_size": subset_size, "subset_seed": subset_seed,
                              "split": split, "tasks": tasks, "batch_size": batch_size, "initial": initial})
        if split == "validation" and any(exp.valid is None for exp in stream):
            raise ConfigError("eval.split", split, "needs held-out training data: set validation.fraction "
                              "(e.g. validation.fraction=0.1)")
        self.every_n_iters = every_n_iters
        self.subset_size = subset_size
        self.tasks = tasks
        self.batch_size = batch_size
        self.initial = initial
        self.split = split
        self.num_tasks = len(stream)
        self.results = ResultsStore()
        self.experience = 0

        xs, ys, model_tasks, eval_tasks, self.subset_indices = [], [], [], [], []
        for exp in stream:
            data = exp.evaluation_data(split)
            n = len(data)
            generator = seeded_generator(subset_seed, SeedStream.EVAL_SUBSET, exp.index)
            index = torch.randperm(n, generator=generator)[: min(subset_size, n)]
            index = index.sort().values
            self.subset_indices.append(index.tolist())
            xs.append(data.x[index])
            ys.append(data.y[index])
            model_tasks.append(data.task[index])
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
        """The end-of-experience evaluation of the model as it is now (after ``after_experience``).

        Always scored afresh. A periodic evaluation of this same step that scored exactly the same
        becomes the boundary row instead of a duplicate; one that differs (the strategy changed
        the model after the step) stays, as the state before the end-of-experience work.
        """
        evaluation = self._score(trainer, module, boundary=True)
        last = self.results.last
        if (last is not None and last.global_iter == evaluation.global_iter and not last.initial
                and last.experience == evaluation.experience and last.same_scores(evaluation)):
            last.boundary = True
            return last
        self._record(trainer, evaluation)
        return evaluation

    # -- Lightning hooks ---------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._to_device(pl_module)
        if self.initial and trainer.global_step == 0 and len(self.results) == 0:
            self._record(trainer, self._score(trainer, pl_module, initial=True))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.every_n_iters is not None and trainer.global_step % self.every_n_iters == 0:
            self._record(trainer, self._score(trainer, pl_module))

    def state_dict(self) -> dict[str, Any]:
        return {"results": self.results.state_dict(), "experience": self.experience,
                "subset_indices": self.subset_indices}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["subset_indices"] != self.subset_indices:
            raise ValueError("checkpoint was evaluated on different subsets (another stream, eval.split or "
                             "eval.subset_seed)")
        self.results.load_state_dict(state_dict["results"])
        self.experience = state_dict["experience"]

    # -- the evaluation itself ---------------------------------------------------------------
    def _to_device(self, module: L.LightningModule) -> None:
        """Move the stacked subsets to the module's device, and the inputs to its floating dtype:
        a ``trainer.precision=64`` (or ``16-true``) model takes float64 (float16) inputs, which
        Lightning converts for training batches but not for this callback's own tensors."""
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), self.x.dtype)
        if self.x.device != module.device or self.x.dtype != dtype:
            self.x, self.y = self.x.to(module.device, dtype), self.y.to(module.device)
            self.model_task, self.eval_task = self.model_task.to(module.device), self.eval_task.to(module.device)

    def score(self, module: L.LightningModule, n_tasks: int) -> tuple[list[int], list[float], list[float]]:
        """Correct predictions, mean loss and chance level of each of the first ``n_tasks`` tasks.

        One batched pass over the stacked subsets (this rank's share of them under DDP), reduced
        per task with ``index_add_`` and summed over ranks.
        """
        self._to_device(module)
        end = self.offsets[n_tasks]
        rank, world_size = world()
        share = -(-end // world_size)  # this rank's slice [first, last) of the evaluated prefix
        first, last = min(rank * share, end), min((rank + 1) * share, end)
        sums = torch.zeros(3, n_tasks, device=module.device, dtype=torch.float64)  # correct, loss, 1/K
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            for start in range(first, last, self.batch_size):
                stop = min(start + self.batch_size, last)
                y, group = self.y[start:stop], self.eval_task[start:stop]
                logits = module.hooks.predict(self.x[start:stop], self.model_task[start:stop])
                sums[0].index_add_(0, group, (logits.argmax(dim=1) == y).to(torch.float64))
                sums[1].index_add_(0, group, F.cross_entropy(logits.float(), y, reduction="none").double())
                sums[2].index_add_(0, group, torch.isfinite(logits).sum(dim=1).clamp_min(1).double().reciprocal())
        module.train(was_training)
        counts = self.counts[:n_tasks]
        correct, loss, chance = all_reduce_sum(sums).cpu().tolist()
        return ([int(round(c)) for c in correct], [s / m for s, m in zip(loss, counts)],
                [s / m for s, m in zip(chance, counts)])

    def _score(self, trainer: L.Trainer, module: L.LightningModule, boundary: bool = False,
               initial: bool = False) -> Evaluation:
        n_tasks = self.num_tasks if self.tasks == "all" else self.experience + 1
        correct, loss, chance = self.score(module, n_tasks)
        return Evaluation(global_iter=trainer.global_step, experience=self.experience, correct=correct,
                          n=self.counts[:n_tasks], loss=loss, boundary=boundary, initial=initial, chance=chance)

    def _record(self, trainer: L.Trainer, evaluation: Evaluation) -> None:
        self.results.append(evaluation)
        self._log(trainer, evaluation)

    def _log(self, trainer: L.Trainer, evaluation: Evaluation) -> None:
        if not trainer.loggers:
            return
        metrics = evaluation_metrics(evaluation)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=evaluation.global_iter)


def evaluation_metrics(evaluation: Evaluation) -> dict[str, float]:
    """What the loggers get for one evaluation: per-task accuracy, the mean over seen tasks, and
    the x-axis (``cl/global_iter``) with the experience it falls in."""
    accuracies = evaluation.accuracies
    metrics: dict[str, float] = {f"eval/task_{k}/acc": a for k, a in enumerate(accuracies)}
    seen = accuracies[: evaluation.experience + 1]
    metrics["eval/acc_seen"] = sum(seen) / len(seen)
    metrics["cl/global_iter"] = evaluation.global_iter
    metrics["cl/experience"] = evaluation.experience
    return metrics
