"""Optimizers and learning-rate schedules by name.

Importing this package does not import keras; `build_optimizer` and
`build_schedule` do.
"""

from kflow.optim.optimizers import OPTIMIZERS, build_optimizer
from kflow.optim.schedules import SCHEDULES, build_schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_schedule"]
