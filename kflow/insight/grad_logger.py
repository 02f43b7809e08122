"""`GradientNormLogger`: writes the statistics an `InsightModel` records.

Rows go to `grad_norms.csv` (one per logged step and layer, plus a `total`
row), the per-epoch mean of each layer's gradient norm to the epoch logs
(`grad_norm/<layer>`, `grad_norm/total`: history.csv, `History`,
TensorBoard's `epoch_*` scalars) and each logged step to TensorBoard as
`grad_norm/<layer>` and `grad_norm/total` at the optimizer step.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kflow.run import GRAD_NORMS_COLUMNS, TOTAL

__all__ = ["GradientNormLogger"]


class GradientNormLogger(keras.callbacks.Callback):
    """Writes the gradient norms, weight norms and update ratios of an `InsightModel`.

    The model keeps the figures of its last logged steps in a small buffer
    (with this callback, every epoch's first step is one of them);
    this callback reads it at the end of every epoch (and in between when
    the buffer could fill up), so training is not slowed by reads. A
    resumed run drops the rows of the steps it will redo.

    Must come before `CSVLogger` and `TensorBoard` in the callback list so
    that they see the `grad_norm/*` epoch logs. Does nothing for models that
    are not `InsightModel`s or have logging off.

    Args:
        csv_path: The CSV file (`step, epoch, layer, kind, grad_norm,
            weight_norm, update_ratio`). Defaults to `None` (no file).
        tensorboard_dir: Folder for per-step TensorBoard scalars.
            Defaults to `None` (none).
        epoch_logs: Add `grad_norm/<layer>` epoch means to the logs.
            Defaults to `True`.

    Example:

    ```python
    model = kflow.insight.InsightModel(inputs, outputs, grad_log_every=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=5,
                        callbacks=[kflow.insight.GradientNormLogger("grad_norms.csv")])
    history.history["grad_norm/total"]
    ```
    """

    def __init__(self, csv_path: str | Path | None = None,
                 tensorboard_dir: str | Path | None = None, epoch_logs: bool = True):
        super().__init__()
        self.csv_path = Path(csv_path) if csv_path else None
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir else None
        self.epoch_logs = epoch_logs
        self.rows: list[dict[str, Any]] = []  # rows of the current epoch
        self._writer = None
        self._last_step = -1.0
        self._epoch = 0
        self._steps_unread = 0
        self._prev_batch = -1
        self._started = False

    # -- helpers --------------------------------------------------------------
    def _state(self):
        return getattr(self.model, "grad_stats", None)

    def _iterations(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _drop_redone_rows(self, after_step: int) -> None:
        """Removes CSV rows of steps > `after_step` (a resumed run redoes them)."""
        from kflow.run import atomic_write_text

        if self.csv_path is None or not self.csv_path.is_file():
            return
        lines = self.csv_path.read_text().splitlines(keepends=True)
        kept = lines[:1] + [
            ln for ln in lines[1:]
            if ln.split(",", 1)[0].strip().isdigit() and int(ln.split(",", 1)[0]) <= after_step
        ]
        if len(kept) != len(lines):
            atomic_write_text(self.csv_path, "".join(kept))

    def flush(self) -> list[dict[str, Any]]:
        """Reads the rows recorded since the last read and writes them out."""
        state = self._state()
        if state is None:
            return []
        data = state.read()
        fresh = np.flatnonzero(data["steps"] > self._last_step)
        fresh = fresh[np.argsort(data["steps"][fresh])]
        self._steps_unread = 0
        if not len(fresh):
            return []
        self._last_step = float(data["steps"][fresh[-1]])
        names = self._layer_names()
        kinds = [g.kind for g in state.groups] + [TOTAL]
        rows = []
        for i in fresh:
            step = int(data["steps"][i])
            for j, name in enumerate(names):
                rows.append({
                    "step": step, "epoch": self._epoch, "layer": name, "kind": kinds[j],
                    "grad_norm": float(data["grad"][i, j]),
                    "weight_norm": float(data["weight"][i, j]),
                    "update_ratio": float(data["ratio"][i, j]),
                })
        self.rows.extend(rows)
        self._write_csv(rows)
        self._write_tensorboard(rows)
        return rows

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        if self.csv_path is None:
            return
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        with self.csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=GRAD_NORMS_COLUMNS)
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                                 for k, v in row.items()})

    def _write_tensorboard(self, rows: list[dict[str, Any]]) -> None:
        """Appends `grad_norm/<layer>` scalars (plain event protos: no TF ops, no tracing)."""
        if self.tensorboard_dir is None or not rows:
            return
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self._writer is None:
            self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(str(self.tensorboard_dir))
        by_step: dict[int, list[Any]] = {}
        for r in rows:
            if math.isfinite(r["grad_norm"]):
                by_step.setdefault(r["step"], []).append(
                    Summary.Value(tag=f"grad_norm/{r['layer']}", simple_value=r["grad_norm"]))
        now = time.time()
        for step, values in by_step.items():
            self._writer.add_event(Event(wall_time=now, step=step,
                                         summary=Summary(value=values)))

    def _layer_names(self) -> list[str]:
        return [g.name for g in self._state().groups] + [TOTAL]

    # -- callback hooks -------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1  # grad_norms.csv counts epochs from 1, as history.csv does
        self.rows = []
        self._prev_batch = -1
        state = self._state()
        if state is not None:
            state.due = 0  # every epoch's first train-function call records: a row per epoch
        if not self._started and self._state() is not None:
            # After BackupAndRestore: the steps already done are final.
            self._started = True
            done = self._iterations()
            self._drop_redone_rows(done)
            self._last_step = float(done)

    def on_train_batch_end(self, batch, logs=None):
        state = self._state()
        if state is None:
            return
        self._steps_unread += batch - self._prev_batch
        self._prev_batch = batch
        spe = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        if (self._steps_unread + spe) // state.every + 1 >= state.capacity:
            self.flush()

    def on_epoch_end(self, epoch, logs=None):
        state = self._state()
        if state is None:
            return
        self.flush()
        if not self.epoch_logs or logs is None:
            return
        for name in self._layer_names():
            values = [r["grad_norm"] for r in self.rows if r["layer"] == name]
            logs[f"grad_norm/{name}"] = float(np.mean(values)) if values else float("nan")

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
