"""The allowed values of platform-owned options, in a module free of torch and Lightning.

The schema of ``clplat.config`` refers to these, and checks a command line against them before
anything heavy is imported, so a misspelt value is answered in about a second; components that
take the same options (the evaluator, the head) check them through that schema.
"""

from __future__ import annotations

TRAINER_STRATEGIES = ("auto", "ddp")
"""``trainer.strategy``: Lightning's own choice (``ddp`` when devices > 1) or ``ddp``."""
PROCESS_GROUP_BACKENDS = ("gloo", "nccl")
HEAD_TYPES = ("auto", "single", "multi")
WANDB_MODES = ("auto", "online", "offline", "disabled")
TASK_SELECTIONS = ("seen", "all")
"""``eval.tasks``: the tasks seen so far, or every task of the stream (forward transfer)."""
SPLITS = ("test", "validation")
"""``eval.split``: test data, or the validation split held out of the training data (tuning)."""
