"""Filling missing values with statistics of the training split, inside a Keras model.

Importing this module imports keras. The statistics are computed by
scikit-learn's `SimpleImputer` (see `fit_impute`); the model only applies
them, so a saved or exported model takes raw rows that still contain missing
values.

`impute(x, fill_value)` applies them with built-in `keras.ops`
(`where(isnan(x), fill, x)`) on a symbolic tensor: the functional model that
results holds only Keras' own operations, so plain `keras.saving.load_model`
opens it (no kflow needed). `kflow.data.preprocess_columns` uses it. The
`Impute` layer does the same as one custom layer, for eager use and models
saved by earlier kflow versions; `kflow.training.plain_model.to_plain_model`
replaces it with `impute` in what a run saves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["Impute", "find_imputations", "fit_impute", "impute", "imputed_fill_values",
           "missing_value"]

_STRING_MISSING = ""
_INT_MISSING = -1


def missing_value(dtype: str) -> Any:
    """The value that marks a missing cell in a tensor of `dtype`.

    NaN for floats, "" for strings and -1 for integer category ids: how
    `kflow.data.load_table` writes missing cells.
    """
    dtype = str(dtype)
    if dtype == "string":
        return _STRING_MISSING
    if dtype.startswith(("float", "bfloat")):
        return float("nan")
    return _INT_MISSING


def impute(x: Any, fill_value: Any) -> Any:
    """Replaces the missing values of `x` with `fill_value`, using built-in Keras ops.

    On a symbolic tensor (a `keras.Input` or a layer's output) this adds
    `keras.ops.isnan` / `keras.ops.equal` and `keras.ops.where` nodes to the
    functional graph; they serialize with the model and load with plain
    `keras.saving.load_model` in safe mode. A value is missing when it is NaN
    (float `x`), "" (string `x`) or -1 (integer `x`).

    Args:
        x: A float, string or integer tensor, last axis the features.
        fill_value: One fill value, or one per feature (the last axis).

    Returns:
        A tensor of `x`'s shape and dtype.

    Example:

    ```python
    age = keras.Input((1,), name="age")
    filled = impute(age, [38.5])  # NaN -> 38.5
    model = keras.Model(age, filled)
    model.predict(np.array([[np.nan], [20.0]], "float32"))  # [[38.5], [20.]]
    ```
    """
    dtype = str(x.dtype)
    if isinstance(fill_value, np.ndarray):
        fill_value = fill_value.tolist()
    if isinstance(fill_value, (list, tuple)):
        fill_value = [_plain(v) for v in fill_value]
    else:
        fill_value = _plain(fill_value)
    missing = missing_value(dtype)
    if dtype == "string":
        mask = keras.ops.equal(x, missing)
        fill = fill_value if isinstance(fill_value, str) else [str(v) for v in fill_value]
    else:
        mask = keras.ops.isnan(x) if isinstance(missing, float) else keras.ops.equal(x, missing)
        fill = keras.ops.convert_to_tensor(np.asarray(fill_value, dtype=dtype))
    return keras.ops.where(mask, fill, x)


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _ref(value: dict[str, Any]) -> tuple[str, int, int]:
    name, node, index = value["config"]["keras_history"]
    return str(name), int(node), int(index)


def _constant(value: Any) -> Any:
    """A constant argument of a serialized op call (`None`: not a plain constant)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__tensor__":
            return value["config"]["value"]
        return None
    return value


def find_imputations(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `impute(x, fill)` computations in a functional model's config.

    Reads the serialized graph (`model.get_config()`, the `.keras` format):
    a `where` op whose condition is `isnan(x)` (float `x`) or `equal(x, "")`
    / `equal(x, -1)` and whose other arguments are a constant and `x`.

    Args:
        config: `model.get_config()` of a functional model.

    Returns:
        `{where op name: {"input": (layer, node, tensor), "mask": mask op
        name, "fill_value": ..., "dtype": x's dtype}}`.
    """
    entries = {e["name"]: e for e in config.get("layers", [])}
    found: dict[str, dict[str, Any]] = {}
    for entry in config.get("layers", []):
        if entry.get("class_name") != "Where" or len(entry.get("inbound_nodes", [])) != 1:
            continue
        node = entry["inbound_nodes"][0]
        args = list(node.get("args", []))
        if len(args) != 3 or node.get("kwargs") or not (_is_ref(args[0]) and _is_ref(args[2])):
            continue
        cond, fill, x = args
        fill_value = _constant(fill)
        mask = entries.get(_ref(cond)[0])
        if fill_value is None or mask is None or len(mask.get("inbound_nodes", [])) != 1:
            continue
        mask_args = list(mask["inbound_nodes"][0].get("args", []))
        dtype = x["config"].get("dtype")
        sentinel = missing_value(dtype)
        if not mask_args or not _is_ref(mask_args[0]) or _ref(mask_args[0]) != _ref(x):
            continue
        if mask["class_name"] == "Isnan":
            ok = len(mask_args) == 1 and isinstance(sentinel, float)
        elif mask["class_name"] == "Equal":
            ok = (len(mask_args) == 2 and not isinstance(sentinel, float)
                  and _constant(mask_args[1]) == sentinel)
        else:
            ok = False
        if ok:
            found[entry["name"]] = {"input": _ref(x), "mask": mask["name"],
                                    "fill_value": fill_value, "dtype": dtype}
    return found


def imputed_fill_values(model: keras.Model) -> dict[str, Any]:
    """`{name of the imputed tensor's layer: fill value}` of a functional model.

    Finds the `impute` computations (see `find_imputations`) and the `Impute`
    layers. For a model from `kflow.data.preprocess_columns` the keys are the
    category columns and `numeric_features` (or the one numeric column).

    Example:

    ```python
    kflow.data.impute.imputed_fill_values(run.model)
    # {"numeric_features": [4.0, 7.5, ...], "school": "missing"}
    ```
    """
    out = {info["input"][0]: info["fill_value"]
           for info in find_imputations(model.get_config()).values()}
    for layer in model.layers:
        if isinstance(layer, Impute):
            out[layer.name] = layer.fill_value
    return out


@keras.saving.register_keras_serializable(package="kflow")
class Impute(keras.layers.Layer):
    """Replaces missing values with fill values fitted on the training split.

    A value is missing when it is NaN (float inputs), the empty string
    (string inputs) or -1 (integer category ids), which is how
    `kflow.data.load_table` writes missing cells. The layer runs TensorFlow
    ops (string inputs need them). In a functional model prefer the function
    `impute`, which builds the same computation from built-in Keras ops, so
    that the saved model loads without kflow; a run's saved model has this
    layer replaced by it.

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
