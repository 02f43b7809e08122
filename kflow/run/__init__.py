"""The run directory: its layout, atomic writes, and the one reader of a run.

No other module names a run file: they ask a `RunDir` for paths and read
runs through `read_run` (plain data, no TensorFlow) or `load_run` (+ model).
"""

from __future__ import annotations

from kflow.run.atomic import atomic_save, atomic_write_bytes, atomic_write_text
from kflow.run.grad_norms import GRAD_NORMS_COLUMNS, TOTAL, GradRows, read_grad_norms
from kflow.run.layout import RunDir, TuneDir, config_hash, json_default, read_json
from kflow.run.reader import Run, load_run, read_config, read_history, read_run
from kflow.run.samples import RunSamples, read_samples, write_samples

__all__ = [
    "RunDir", "TuneDir", "Run", "RunSamples", "read_samples", "write_samples", "read_run",
    "load_run",
    "read_history", "read_config", "read_json",
    "read_grad_norms", "GradRows", "GRAD_NORMS_COLUMNS", "TOTAL",
    "atomic_write_text", "atomic_write_bytes", "atomic_save", "config_hash", "json_default",
]
