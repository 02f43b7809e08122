"""`NanGuard`: stop on a NaN/Inf loss, say where, keep the last good weights."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras

__all__ = ["NanGuard"]


class NanGuard(keras.callbacks.Callback):
    """Stops training as soon as the loss is NaN or infinite, and says where.

    Replaces `keras.callbacks.TerminateOnNaN`. The loss is checked after
    every `train_function` call (every `steps_per_execution` steps) and at
    each epoch end. When it is not finite, training stops, the weights of the
    last epoch that ended with a finite loss are restored (the initial
    weights if there is none), and a sentence naming the epoch and step is
    kept in `self.message` and printed, e.g.
    "Epoch 3, step 12 of 40 (optimizer step 92): the training loss is nan; ...".
    Checkpoints written before are untouched. Keeping the last good weights
    costs one host copy of the weights per epoch.

    Args:
        log: Function used to print the message. Defaults to `print`.

    Attributes:
        message: The sentence, or "" when the loss stayed finite.
        epoch: 1-based epoch of the non-finite loss (or `None`).
        step: 1-based step within that epoch (or `None`).
        restored_epoch: 1-based epoch whose weights were restored (0: the
            initial weights; `None` when not stopped).

    Example:

    ```python
    guard = NanGuard()
    model.fit(x, y, epochs=50, callbacks=[guard])
    if guard.message:
        print(guard.message)
    ```
    """

    def __init__(self, log: Callable[[str], Any] | None = print):
        super().__init__()
        self.log = log
        self.message = ""
        self.epoch: int | None = None
        self.step: int | None = None
        self.value: float | None = None
        self.restored_epoch: int | None = None
        self._good_weights = None
        self._good_epoch = 0
        self._epoch = 0
        from kflow.training.callbacks._writer import VariableReader

        self._read = VariableReader()  # all weights in one call, not one eager op each

    def on_train_begin(self, logs=None):
        self.message, self.epoch, self.step, self.value, self.restored_epoch = (
            "", None, None, None, None)
        self._good_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._good_weights is None:  # after every on_train_begin (and a backup restore)
            self._good_weights = self._read(self.model.weights)
            self._good_epoch = epoch

    def _check(self, logs, step: int | None) -> bool:
        loss = (logs or {}).get("loss")
        if loss is None or self.epoch is not None:
            return False
        loss = float(loss)
        if math.isfinite(loss):
            return False
        self.epoch, self.step, self.value = self._epoch + 1, step, loss
        self.model.stop_training = True
        return True

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, None)
        if self.epoch is None:
            self._good_weights = self._read(self.model.weights)
            self._good_epoch = epoch + 1
            return
        if self.restored_epoch is not None:
            return
        self.model.set_weights(self._good_weights)
        self.restored_epoch = self._good_epoch
        steps = (self.params or {}).get("steps")
        iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        where = f"Epoch {self.epoch}"
        if self.step is not None:
            where += f", step {self.step}" + (f" of {steps}" if steps else "")
        spe = int(getattr(self.model, "steps_per_execution", 1) or 1)
        checked = (f" (the loss is checked every {spe} steps; optimizer step {iterations})"
                   if spe > 1 else f" (optimizer step {iterations})")
        restored = (f"restored the weights of epoch {self._good_epoch}, the last with a "
                    "finite loss" if self._good_epoch else "restored the initial weights")
        self.message = (
            f"{where}{checked}: the training loss is {self.value}; stopped training and "
            f"{restored}. Earlier checkpoints are kept. Likely causes: a learning rate "
            "that is too large, exploding gradients (large initial weights, no "
            "normalization), or unscaled inputs; see `kflow doctor`."
        )
        if self.log:
            self.log(self.message)
