"""Training callbacks kflow adds by default."""

from kflow.train.callbacks._writer import finish_all as wait_for_writes
from kflow.train.callbacks.backup import ResumableBackup
from kflow.train.callbacks.checkpoint import BestModelCheckpoint
from kflow.train.callbacks.early_stopping import ExplainedEarlyStopping
from kflow.train.callbacks.tensorboard import EpochTensorBoard

__all__ = ["ResumableBackup", "BestModelCheckpoint", "ExplainedEarlyStopping", "EpochTensorBoard",
           "wait_for_writes"]
