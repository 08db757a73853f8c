"""The results store: the tidy table every metric, plot, logger and notebook reads.

One record per evaluation, expanded to one row per evaluated task only when a table is asked
for, so appending during training costs a list append.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

COLUMNS = ("global_iter", "experience", "eval_task", "correct", "n", "loss", "accuracy", "chance", "boundary",
           "initial")


@dataclass
class Evaluation:
    global_iter: int
    experience: int
    correct: list[int]  # per evaluated task 0..len-1
    n: list[int]
    loss: list[float]  # mean cross-entropy per task
    boundary: bool = False
    initial: bool = False
    chance: list[float] | None = None  # per task: mean of 1/(classes the model could predict)

    @property
    def accuracies(self) -> list[float]:
        return [c / m if m else float("nan") for c, m in zip(self.correct, self.n)]

    def same_scores(self, other: "Evaluation") -> bool:
        """Whether ``other`` scored exactly the same on the same samples (the same predictions
        as far as any metric can tell)."""
        return (self.correct, self.n, self.loss) == (other.correct, other.n, other.loss)


class ResultsStore:
    def __init__(self) -> None:
        self.evaluations: list[Evaluation] = []

    def __len__(self) -> int:
        return len(self.evaluations)

    @property
    def last(self) -> Evaluation | None:
        return self.evaluations[-1] if self.evaluations else None

    def append(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for e in self.evaluations:
            chance = e.chance if e.chance is not None else [float("nan")] * len(e.correct)
            for task, (c, m, loss, acc, p) in enumerate(zip(e.correct, e.n, e.loss, e.accuracies, chance)):
                rows.append((e.global_iter, e.experience, task, c, m, loss, acc, p, e.boundary, e.initial))
        return pd.DataFrame(rows, columns=list(COLUMNS))

    def save_csv(self, path: Path) -> None:
        """Write atomically: a crash mid-write never leaves a truncated table behind."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        self.to_frame().to_csv(tmp, index=False)
        tmp.replace(path)

    def state_dict(self) -> dict:
        return {"evaluations": [vars(e).copy() for e in self.evaluations]}

    def load_state_dict(self, state: dict) -> None:
        self.evaluations = [Evaluation(**e) for e in state["evaluations"]]
