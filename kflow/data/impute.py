"""`Impute`: a Keras layer that fills missing values with statistics of the training split.

Importing this module imports keras and TensorFlow. The statistics are
computed by scikit-learn's `SimpleImputer` (see `fit_impute`); the layer
only applies them, so a saved or exported model takes raw rows that still
contain missing values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["Impute", "fit_impute"]

_STRING_MISSING = ""
_INT_MISSING = -1


@keras.saving.register_keras_serializable(package="kflow")
class Impute(keras.layers.Layer):
    """Replaces missing values with fill values fitted on the training split.

    A value is missing when it is NaN (float inputs), the empty string
    (string inputs) or -1 (integer category ids), which is how
    `kflow.data.load_table` writes missing cells. The fill values are part of
    the layer's config, so they travel with `model.keras` and exported
    models. The layer runs TensorFlow ops (string inputs need them).

    Args:
        fill_value: One fill value, or one per feature (the last axis).
        strategy: How the fill values were chosen ("mean", "median",
            "most_frequent", "constant"), kept for the record. Defaults to
            "constant".
        **kwargs: Base layer keyword arguments (`name`, ...).

    Example:

    ```python
    impute = kflow.data.Impute([2.0, 10.0], strategy="mean")
    impute(np.array([[np.nan, 1.0], [3.0, np.nan]], "float32"))
    # [[2., 1.], [3., 10.]]
    ```
    """

    def __init__(
        self, fill_value: Any, strategy: str = "constant", **kwargs: Any
    ):
        super().__init__(**kwargs)
        if isinstance(fill_value, np.ndarray):
            fill_value = fill_value.tolist()
        if isinstance(fill_value, (list, tuple)):
            fill_value = [_plain(v) for v in fill_value]
        else:
            fill_value = _plain(fill_value)
        self.fill_value = fill_value
        self.strategy = strategy
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.supports_jit = False

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs)
        if x.dtype == tf.string:
            missing = tf.equal(x, _STRING_MISSING)
        elif x.dtype.is_floating:
            missing = tf.math.is_nan(x)
        else:
            missing = tf.equal(x, tf.cast(_INT_MISSING, x.dtype))
        fill = tf.cast(tf.constant(self.fill_value), x.dtype) if x.dtype != tf.string else (
            tf.constant(self.fill_value, dtype=tf.string))
        return tf.where(missing, tf.broadcast_to(fill, tf.shape(x)), x)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple:
        return tuple(input_shape)

    def compute_output_spec(self, inputs: Any) -> keras.KerasTensor:
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill_value": self.fill_value,
                "strategy": self.strategy}


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar (NumPy scalars and bytes converted)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def fit_impute(
    values: np.ndarray, strategy: str, fill_value: Any = None
) -> list[Any]:
    """Fill values per column of `values` (rows x columns), with scikit-learn.

    Uses `sklearn.impute.SimpleImputer` on the training rows only. Float
    columns treat NaN as missing, string columns "" and integer columns -1.
    "mean" and "median" only apply to numbers: string and integer category
    columns fall back to "most_frequent".

    Args:
        values: A 2-D array of one kind (float, string or int).
        strategy: "mean", "median", "most_frequent" or "constant".
        fill_value: The value "constant" gives float columns. Defaults to 0.
            String columns get "missing" and integer category columns keep -1,
            a category of its own.

    Returns:
        One fill value per column.
    """
    from sklearn.impute import SimpleImputer

    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    if values.dtype.kind == "f":
        missing_values: Any = np.nan
        default_fill: Any = 0.0
    elif values.dtype.kind in "iu":
        missing_values, default_fill = _INT_MISSING, _INT_MISSING
        strategy = "most_frequent" if strategy in ("mean", "median") else strategy
    else:
        values = values.astype(object)
        missing_values, default_fill = _STRING_MISSING, "missing"
        strategy = "most_frequent" if strategy in ("mean", "median") else strategy
    if strategy == "constant":
        fill = fill_value if fill_value is not None and values.dtype.kind == "f" else default_fill
        return [_plain(fill)] * values.shape[1]
    imputer = SimpleImputer(missing_values=missing_values, strategy=strategy,
                            keep_empty_features=True)
    imputer.fit(values)
    return [_plain(v) for v in imputer.statistics_]
