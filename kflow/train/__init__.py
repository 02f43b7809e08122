"""Training: the engine, strategies, callbacks and run directories."""

from kflow.train.engine import train
from kflow.train.run import Run, load_run, read_history
from kflow.train.run_dir import RunDir

__all__ = ["train", "Run", "load_run", "read_history", "RunDir"]
