"""The allowed values of platform-owned options, in a module free of torch and Lightning.

``clplat.config`` checks a command line against these before anything heavy is imported, so a
misspelt value is answered in about a second; the modules that use the options import them from
here too, so each list is declared once.
"""

from __future__ import annotations

TRAINER_STRATEGIES = ("auto", "ddp")
"""``trainer.strategy``: Lightning's own choice (``ddp`` when devices > 1) or ``ddp``."""
PROCESS_GROUP_BACKENDS = ("gloo", "nccl")
HEAD_TYPES = ("auto", "single", "multi")
LOGGER_KINDS = ("csv", "wandb", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")
TASK_SELECTIONS = ("seen", "all")
"""``eval.tasks``: the tasks seen so far, or every task of the stream (forward transfer)."""
SPLITS = ("test", "validation")
"""``eval.split``: test data, or the validation split held out of the training data (tuning)."""
