"""Best-model checkpoint written atomically."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from kflow.train.run_dir import atomic_save

__all__ = ["BestModelCheckpoint"]


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (`.keras`) whenever `monitor` improves.

    The file is written to a temporary name and renamed, so a crash never
    leaves a half-written checkpoint; the previous best stays intact.

    Args:
        filepath: Destination `.keras` file.
        monitor: Logged quantity to watch. Defaults to "val_loss".
        mode: "min" or "max". Defaults to "min".

    Example:

    ```python
    ckpt = BestModelCheckpoint("run/checkpoints/best.keras", monitor="val_loss")
    model.fit(x, y, validation_split=0.2, callbacks=[ckpt])
    ```
    """

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", mode: str = "min"):
        super().__init__()
        self.filepath = Path(filepath)
        self.monitor = monitor
        self.mode = mode
        self.best = np.inf if mode == "min" else -np.inf
        self.best_epoch: int | None = None

    def _better(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if self._better(float(value)):
            self.best, self.best_epoch = float(value), epoch
            atomic_save(self.filepath, self.model.save)
