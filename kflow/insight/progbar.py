"""`CompactProgbar`: Keras' progress bar without the per-layer insight columns."""

from __future__ import annotations

import keras

__all__ = ["CompactProgbar", "is_detail_key"]


def is_detail_key(key: str) -> bool:
    """Whether a log key is a per-layer figure (`grad_norm/<layer>`, `dead_relu/<layer>`)."""
    return key.startswith("dead_relu/") or (key.startswith("grad_norm/")
                                           and key != "grad_norm/total")


class CompactProgbar(keras.callbacks.ProgbarLogger):
    """`keras.callbacks.ProgbarLogger` that hides per-layer columns.

    The per-layer gradient norms and dead-unit fractions stay in the logs
    (history.csv, TensorBoard); the progress line keeps `grad_norm/total`.
    Put it after the callbacks that add logs; Keras then uses it instead of
    its own progress bar (it follows `fit(verbose=...)`).

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[GradientNormLogger(), CompactProgbar()])
    ```
    """

    @staticmethod
    def _compact(logs):
        return {k: v for k, v in (logs or {}).items() if not is_detail_key(k)}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._compact(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._compact(logs))
