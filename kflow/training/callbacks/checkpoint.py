"""Best-model checkpoint written atomically."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from kflow.run import atomic_save
from kflow.training.callbacks import _writer

__all__ = ["BestModelCheckpoint"]


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model (`.keras`) whenever `monitor` improves, as a plain Keras model.

    What is saved is `kflow.training.plain_model.to_plain_model(model)`: a
    functional model of built-in Keras layers and operations (no training
    wrappers) that plain `keras.saving.load_model` opens without kflow. The
    plain copy is built once and refreshed with the current weights at each
    write.

    The file is written to a temporary name and renamed, so a crash never
    leaves a half-written checkpoint; the previous best stays intact.

    Writing a `.keras` file costs tens of milliseconds even for a tiny model,
    which is a large share of a sub-second epoch. So writes are paced to take
    at most `max_overhead` of the training time: an improvement that comes
    sooner after the previous write is kept in memory (weights and optimizer
    state) and written at a later epoch end, and always when training ends.
    When epochs are slow, every improvement is written at once.

    Args:
        filepath: Destination `.keras` file.
        monitor: Logged quantity to watch. Defaults to "val_loss".
        mode: "min" or "max". Defaults to "min".
        max_overhead: Largest fraction of the training time spent writing;
            `1.0` writes every improvement immediately. Defaults to `0.05`.
            Training time is counted from the first batch of an epoch to its
            end (pauses before an epoch's first batch, such as other
            callbacks waiting, do not make writes due sooner).

    Example:

    ```python
    ckpt = BestModelCheckpoint("run/checkpoints/best.keras", monitor="val_loss")
    model.fit(x, y, validation_split=0.2, callbacks=[ckpt])
    ```
    """

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", mode: str = "min",
                 max_overhead: float = 0.05):
        super().__init__()
        if not 0.0 < max_overhead <= 1.0:
            raise ValueError(f"max_overhead must be in (0, 1]. Got {max_overhead!r}.")
        self.filepath = Path(filepath)
        self.monitor = monitor
        self.mode = mode
        self.max_overhead = max_overhead
        self.best = np.inf if mode == "min" else -np.inf
        self.best_epoch: int | None = None
        self._pending: list[np.ndarray] | None = None  # best state not yet on disk
        self._read = _writer.VariableReader()
        self._clock = 0.0  # training seconds so far (first batch to epoch end, each epoch)
        self._epoch_start: float | None = None
        self._next_write = 0.0  # training time before which writes are deferred
        self._plain = None  # PlainModelCopy of self.model, built at the first write
        self._on_disk: tuple[float, int | None] = (self.best, None)  # what best.keras holds

    def _better(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def _variables(self) -> list:
        optimizer = self.model.optimizer
        return list(self.model.weights) + (list(optimizer.variables) if optimizer else [])

    def _save(self, path: str) -> None:
        from kflow.training.plain_model import PlainModelCopy

        if self._plain is None or self._plain.source is not self.model:
            self._plain = PlainModelCopy(self.model)
        self._plain.sync().save(path)

    def _write(self) -> None:
        start = time.perf_counter()
        if self._pending is None:
            atomic_save(self.filepath, self._save)
        else:  # write the remembered best state, then put the current one back
            variables = self._variables()
            current = self._read(variables)
            for v, value in zip(variables, self._pending, strict=True):
                v.assign(value)
            try:
                atomic_save(self.filepath, self._save)
            finally:
                for v, value in zip(variables, current, strict=True):
                    v.assign(value)
            self._pending = None
        self._on_disk = (self.best, self.best_epoch)
        cost = time.perf_counter() - start
        self._clock += cost
        self._next_write = self._clock + cost * (1.0 / self.max_overhead - 1.0)

    def get_resume_state(self) -> dict:
        """What a resumed run needs: the best value and epoch that `best.keras` holds."""
        best, epoch = self._on_disk
        return {"best": float(best), "best_epoch": epoch}

    def set_resume_state(self, state: dict) -> None:
        self.best = float(state["best"])
        self.best_epoch = state.get("best_epoch")
        self._on_disk = (self.best, self.best_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch_start is None:
            self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_start is not None:
            self._clock += time.perf_counter() - self._epoch_start
            self._epoch_start = None
        value = (logs or {}).get(self.monitor)
        due = self._clock >= self._next_write
        if value is not None and np.isfinite(value) and self._better(float(value)):
            self.best, self.best_epoch = float(value), epoch
            self._pending = None
            if not due:
                self._pending = self._read(self._variables())
                return
        elif self._pending is None or not due:
            return
        self._write()

    def on_train_end(self, logs=None):
        if self._pending is not None:
            self._write()
