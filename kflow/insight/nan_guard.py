"""`NanGuard`: stop on a NaN/Inf loss or weights, say where, keep the last good weights."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

__all__ = ["NanGuard"]


class NanGuard(keras.callbacks.Callback):
    """Stops training as soon as the loss or the weights are NaN or infinite, and says where.

    Replaces `keras.callbacks.TerminateOnNaN`. The loss is checked after
    every `train_function` call (every `steps_per_execution` steps) and at
    each epoch end; the weights at each epoch end. The weights can overflow
    while the loss stays finite: a ReLU turns a NaN input into 0, so a
    network whose hidden weights are NaN can still output finite
    probabilities. When either is not finite, training stops, the weights of
    the last epoch that ended with finite loss and weights are restored (the
    initial weights if there is none), and a sentence naming the epoch and
    step is kept in `self.message` and printed, e.g.
    "Epoch 3, step 12 of 40 (optimizer step 92): the training loss is nan; ...".
    Checkpoints written before are untouched. Keeping the last good weights
    costs one host copy of the weights per epoch; checking them is one
    `np.isfinite` pass over that copy.

    Args:
        log: Function used to print the message. Defaults to `print`.

    Attributes:
        message: The sentence, or "" when the loss and weights stayed finite.
        what: What was not finite: "loss" or "weights" (or `None`).
        epoch: 1-based epoch of the non-finite loss or weights (or `None`).
        step: 1-based step within that epoch (or `None`; always `None` for
            weights, which are checked at the epoch's end).
        value: The non-finite value (the loss, or the first bad weight).
        variable: The path of the first non-finite weight (`None` for the loss).
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
        self.what: str | None = None
        self.variable: str | None = None
        self.epoch: int | None = None
        self.step: int | None = None
        self.value: float | None = None
        self.restored_epoch: int | None = None
        self._good_weights = None
        self._good_epoch = 0
        self._epoch = 0
        from kflow.training.callbacks._writer import VariableReader

        self._read = VariableReader()  # all weights in one call, not one eager op each

    def stop_info(self) -> dict[str, Any]:
        """What `metrics.json` records as `nan_stop` (`{}` when training was not stopped)."""
        if not self.message:
            return {}
        return {"what": self.what, "epoch": self.epoch, "step": self.step,
                "value": str(self.value), "variable": self.variable,
                "restored_epoch": self.restored_epoch}

    def on_train_begin(self, logs=None):
        self.message, self.epoch, self.step, self.value, self.restored_epoch = (
            "", None, None, None, None)
        self.what = self.variable = None
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
        self.epoch, self.step, self.value, self.what = self._epoch + 1, step, loss, "loss"
        self.model.stop_training = True
        return True

    def _check_weights(self, values: list[Any]) -> bool:
        """Records the first non-finite weight of `values` (host copies); False if none."""
        for variable, value in zip(self.model.weights, values, strict=True):
            value = np.asarray(value)
            if value.dtype.kind != "f":
                continue
            bad = ~np.isfinite(value)
            if bad.any():
                self.epoch, self.step, self.what = self._epoch + 1, None, "weights"
                self.value = float(value[bad].flat[0])
                self.variable = str(getattr(variable, "path", None)
                                    or getattr(variable, "name", "a weight"))
                self.model.stop_training = True
                return True
        return False

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, None)
        if self.epoch is None:
            values = self._read(self.model.weights)
            if not self._check_weights(values):
                self._good_weights = values
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
                   if spe > 1 and self.what == "loss" else f" (optimizer step {iterations})")
        restored = (f"restored the weights of epoch {self._good_epoch}, the last with a "
                    "finite loss and weights" if self._good_epoch
                    else "restored the initial weights")
        if self.what == "weights":
            loss = (logs or {}).get("loss")
            seen = (f"the weights of {self.variable} are {self.value} at the end of the "
                    "epoch" + (f", although the training loss is finite ({float(loss):.4g})"
                               if loss is not None else ""))
        else:
            seen = f"the training loss is {self.value}"
        self.message = (
            f"{where}{checked}: {seen}; stopped training and "
            f"{restored}. Earlier checkpoints are kept. Likely causes: a learning rate "
            "that is too large, exploding gradients (large initial weights, no "
            "normalization), or unscaled inputs; see `kflow doctor`."
        )
        if self.log:
            self.log(self.message)
