"""Early stopping that explains itself and survives a resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kflow.run import atomic_save, atomic_write_text
from kflow.training.callbacks import _writer

__all__ = ["ExplainedEarlyStopping"]


class ExplainedEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` that says why it stopped and can resume.

    When training stops it records a sentence such as "Epoch 14: val_loss did
    not improve for 5 epochs (best 0.0810 at epoch 9); stopped and restored
    the weights of epoch 9." in `self.message`, and prints it. With
    `state_dir`, its counters and best weights are saved every epoch, so a
    run resumed by `BackupAndRestore` continues counting where it stopped.

    Args:
        state_dir: Folder for the resumable state. Defaults to `None` (off).
        log: Function used to print the message. Defaults to `print`.
        **kwargs: Passed to `keras.callbacks.EarlyStopping`
            (`monitor`, `patience`, `mode`, `restore_best_weights`, ...).

    Example:

    ```python
    stop = ExplainedEarlyStopping(monitor="val_loss", patience=3,
                                  restore_best_weights=True)
    model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[stop])
    print(stop.message)
    ```
    """

    def __init__(self, state_dir: str | None = None, log=print, **kwargs: Any):
        kwargs.setdefault("restore_best_weights", True)
        super().__init__(**kwargs)
        self.state_dir = Path(state_dir) if state_dir else None
        self.log = log
        self.message = ""
        self._first_epoch = False

    # -- resume -------------------------------------------------------------
    def _state_file(self) -> Path:
        return self.state_dir / "early_stopping.json"

    def _weights_file(self) -> Path:
        # `best_weights` as arrays (`np.savez`): ~10x cheaper than `save_weights`.
        return self.state_dir / "early_stopping_best.npz"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.message = ""
        self._first_epoch = True
        if self.state_dir is not None:
            _writer.finish(os.path.abspath(self._state_file()))  # a crashed run's last write

    def on_epoch_begin(self, epoch, logs=None):
        # The first epoch of this `fit` tells whether it resumes (BackupAndRestore or
        # `initial_epoch` start it after 0): public, unlike `model._initial_epoch`.
        first, self._first_epoch = getattr(self, "_first_epoch", False), False
        if not first or self.state_dir is None or epoch == 0 or not self._state_file().is_file():
            return
        state = json.loads(self._state_file().read_text())
        self.wait = state["wait"]
        self.best = state["best"] if state["best"] is not None else self.best
        self.best_epoch = state["best_epoch"]
        if self.restore_best_weights and self._weights_file().is_file():
            with np.load(self._weights_file(), allow_pickle=False) as f:
                self.best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]

    def on_epoch_end(self, epoch, logs=None):
        # Keras' own decision and `best_weights` (`model.get_weights()`, ~2.6 ms more
        # per improving epoch than one batched read for a small CNN: not worth a copy
        # of Keras' logic that the next Keras could silently break).
        best_before = self.best_weights
        super().on_epoch_end(epoch, logs)
        if self.state_dir is None:
            return
        # Written in the background while the next epoch trains (see `_writer`).
        weights = self.best_weights if (self.restore_best_weights
                                        and self.best_weights is not best_before) else None
        best = None if self.best is None or not np.isfinite(self.best) else float(self.best)
        state = json.dumps({"wait": self.wait, "best": best, "best_epoch": self.best_epoch})

        def write():
            if weights is not None:
                atomic_save(self._weights_file(), lambda p: np.savez(p, *weights))
            atomic_write_text(self._state_file(), state)

        _writer.start(os.path.abspath(self._state_file()), write)

    def on_train_end(self, logs=None):
        restored = self.stopped_epoch > 0 and self.restore_best_weights
        super().on_train_end(logs)
        if self.stopped_epoch > 0:
            best = "n/a" if self.best is None else f"{float(self.best):.4g}"
            self.message = (
                f"Epoch {self.stopped_epoch + 1}: {self.monitor} did not improve for "
                f"{self.wait} epochs (best {best} at epoch {self.best_epoch + 1}); stopped"
                + (f" and restored the weights of epoch {self.best_epoch + 1}." if restored
                   else ".")
            )
            if self.log:
                self.log(self.message)
        if self.state_dir is not None:
            _writer.finish(os.path.abspath(self._state_file()))
            for f in (self._state_file(), self._weights_file()):
                if f.exists():
                    os.unlink(f)
