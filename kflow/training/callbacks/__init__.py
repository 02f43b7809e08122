"""Training callbacks kflow adds by default."""

from kflow.training.callbacks._writer import finish_all as wait_for_writes
from kflow.training.callbacks.backup import BackupState, ResumableBackup, backup_state
from kflow.training.callbacks.checkpoint import BestModelCheckpoint
from kflow.training.callbacks.early_stopping import ExplainedEarlyStopping
from kflow.training.callbacks.tensorboard import EpochTensorBoard

__all__ = ["ResumableBackup", "BackupState", "backup_state", "BestModelCheckpoint",
           "ExplainedEarlyStopping", "EpochTensorBoard", "wait_for_writes"]
