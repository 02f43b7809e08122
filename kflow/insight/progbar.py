"""`CompactProgbar`: Keras' progress bar without the per-layer insight columns."""

from __future__ import annotations

import math

import keras

__all__ = ["CompactProgbar", "is_detail_key"]


#: The whole-model gradient norm's log key, kept on the progress line.
TOTAL_KEY = "grad_norm/total"


def is_detail_key(key: str) -> bool:
    """Whether a log key is a per-layer figure (`grad_norm/<layer>`, `dead_relu/<layer>`)."""
    return key.startswith("dead_relu/") or (key.startswith("grad_norm/") and key != TOTAL_KEY)


class CompactProgbar(keras.callbacks.ProgbarLogger):
    """`keras.callbacks.ProgbarLogger` that hides per-layer columns.

    The per-layer gradient norms and dead-unit fractions stay in the logs
    (history.csv, TensorBoard); the progress line keeps `grad_norm/total`,
    except on an epoch where no step was logged (an `InsightModel` logs
    every `grad_log_every` optimizer steps, so short epochs can have none):
    its value is then NaN for want of data, and the line shows nothing
    rather than "nan". A NaN from a logged step (a gradient that overflowed)
    is shown. Put it after the callbacks that add logs; Keras then uses it
    instead of its own progress bar (it follows `fit(verbose=...)`).

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[GradientNormLogger(), CompactProgbar()])
    ```
    """

    def __init__(self):
        super().__init__()
        self._epoch_start_rows: int | None = None

    @staticmethod
    def _compact(logs):
        return {k: v for k, v in (logs or {}).items() if not is_detail_key(k)}

    def _rows(self) -> int | None:
        """Rows the model's gradient statistics recorded so far (`None`: not recording)."""
        state = getattr(self.model, "grad_stats", None)
        return None if state is None else state.rows

    def _logged_a_step(self) -> bool:
        """Whether the gradient logger recorded a step in this epoch (True if unknown)."""
        start, end = self._epoch_start_rows, self._rows()
        if start is None or end is None:
            return True
        return end > start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_rows = self._rows()
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._compact(logs))

    def on_epoch_end(self, epoch, logs=None):
        logs = self._compact(logs)
        total = logs.get(TOTAL_KEY)
        if (total is not None and _is_nan(total)) and not self._logged_a_step():
            del logs[TOTAL_KEY]
        super().on_epoch_end(epoch, logs)


def _is_nan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False
