"""Training callbacks kflow adds by default."""

from kflow.train.callbacks.backup import ResumableBackup
from kflow.train.callbacks.checkpoint import BestModelCheckpoint
from kflow.train.callbacks.early_stopping import ExplainedEarlyStopping

__all__ = ["ResumableBackup", "BestModelCheckpoint", "ExplainedEarlyStopping"]
