"""`LearningRateLogger`: the learning rate of each epoch, in the history."""

from __future__ import annotations

import keras

__all__ = ["LearningRateLogger"]


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate` (the rate of the epoch's last step) to the epoch logs.

    Keras logs it to TensorBoard only; with this callback before `CSVLogger`
    it is in `history.csv` too, so the report can plot schedules.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[LearningRateLogger()])
    ```
    """

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if logs is None or optimizer is None:
            return
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
