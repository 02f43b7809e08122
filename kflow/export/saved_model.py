"""The SavedModel: a `serving_default` signature of named raw inputs and named outputs.

Outputs a client understands, by task:

- multiclass: `probabilities` (batch x classes), `class_id` (int64) and, when
  the run knows its class names, `class_name` (string, from a constant table);
- binary: `probabilities` (batch x 2: [1 - p, p]), `class_id` (p > 0.5),
  `class_name`;
- regression: `value` (batch, or batch x targets).

The preprocessing fitted on the training split lives inside the Keras model,
so the signature takes raw rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kflow.export.errors import ExportError, ParityError
from kflow.export.layout import InputLayout

__all__ = [
    "SIGNATURE_KEY",
    "BINARY_THRESHOLD",
    "serving_outputs",
    "write_saved_model",
    "check_saved_model",
    "main_output",
    "keras_predict",
]

SIGNATURE_KEY = "serving_default"
BINARY_THRESHOLD = 0.5


def serving_outputs(task: str, class_names: list[str] | None) -> list[str]:
    """Names of the signature's outputs for a task."""
    if task == "regression":
        return ["value"]
    return ["probabilities", "class_id", *(["class_name"] if class_names else [])]


def single_output(y: Any) -> Any:
    """The one output of a model that returns it alone, in a dict or in a list."""
    if isinstance(y, dict):
        return next(iter(y.values()))
    if isinstance(y, (list, tuple)):
        return y[0]
    return y


def _serving_fn(model: Any, layout: InputLayout, task: str, class_names: list[str] | None):
    import tensorflow as tf

    names = tf.constant([str(c) for c in class_names]) if class_names else None

    def serve(inputs):
        y = single_output(model(layout.to_model_tf(inputs), training=False))
        y = tf.cast(y, tf.float32)
        if task == "regression":
            return {"value": y[:, 0] if y.shape[-1] == 1 else y}
        if task == "binary":
            p = y[:, :1] if y.shape[-1] == 1 else y[:, 1:2]
            probabilities = tf.concat([1.0 - p, p], axis=-1)
            class_id = tf.cast(p[:, 0] > BINARY_THRESHOLD, tf.int64)
        else:
            probabilities = y
            class_id = tf.argmax(y, axis=-1, output_type=tf.int64)
        out = {"probabilities": probabilities, "class_id": class_id}
        if names is not None:
            out["class_name"] = tf.gather(names, class_id)
        return out

    return serve


def write_saved_model(model: Any, layout: InputLayout, task: str,
                      class_names: list[str] | None, path: str | Path) -> None:
    """Writes a SavedModel whose `serving_default` takes the layout's named inputs.

    Uses `keras.export.ExportArchive`, which tracks the model's variables and
    lookup tables (StringLookup vocabularies) so the artifact is standalone.
    """
    import keras

    width = model.outputs[0].shape[-1]
    if task == "multiclass" and class_names and width != len(class_names):
        raise ExportError(
            f"Model '{model.name}' outputs {width} class probabilities but the run has "
            f"{len(class_names)} class names; the run directory is inconsistent."
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, _serving_fn(model, layout, task, class_names),
                         input_signature=[layout.signature_specs()])
    archive.write_out(str(path), verbose=False)


def main_output(task: str, y: np.ndarray) -> np.ndarray:
    """The Keras model's output as the signature reports it (probabilities / value)."""
    y = np.asarray(y, dtype="float32")
    if task == "regression":
        return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    if task == "binary":
        p = y[:, :1] if y.shape[-1] == 1 else y[:, 1:2]
        return np.concatenate([1.0 - p, p], axis=-1)
    return y


def keras_predict(model: Any, layout: InputLayout, x: Any, batch_size: int = 256) -> np.ndarray:
    """The Keras model's output on a split's rows (string columns go through tf.data)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(layout.model_feed(x)).batch(batch_size)
    return np.asarray(single_output(model.predict(ds, verbose=0)))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b|; NaN where only one side is NaN counts as infinite."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.abs(np.where(both_nan, 0.0, a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max()) if diff.size else 0.0


def check_saved_model(path: str | Path, model: Any, layout: InputLayout, task: str,
                      class_names: list[str] | None, x: Any,
                      tolerance: float = 1e-5) -> dict[str, Any]:
    """Loads the SavedModel with `tf.saved_model.load` and compares it with the Keras model.

    Args:
        path: The SavedModel directory.
        model: The live Keras model.
        layout: The input layout the SavedModel was written with.
        task: The run's task.
        class_names: The run's class names.
        x: Feature rows (a split's `x`).
        tolerance: Largest allowed max abs difference. Defaults to 1e-5.

    Returns:
        `{"max_abs_diff", "rows", "class_id_agreement", "tolerance"}`.

    Raises:
        ParityError: The outputs differ by more than `tolerance`.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures[SIGNATURE_KEY]
    feed = layout.signature_feed(x)
    out = sig(**{k: tf.constant(v) for k, v in feed.items()})
    out = {k: v.numpy() for k, v in out.items()}
    expected = main_output(task, keras_predict(model, layout, x))
    got = out["value" if task == "regression" else "probabilities"]
    diff = max_abs_diff(got, expected)
    report: dict[str, Any] = {"max_abs_diff": diff, "rows": int(len(got)),
                              "tolerance": tolerance}
    if task != "regression":
        want = (np.argmax(expected, axis=-1) if task == "multiclass"
                else (expected[:, 1] > BINARY_THRESHOLD).astype("int64"))
        report["class_id_agreement"] = float(np.mean(out["class_id"] == want))
        if class_names:
            names = np.asarray([str(c) for c in class_names], dtype=object)
            got_names = np.asarray([n.decode() for n in out["class_name"]], dtype=object)
            if not np.array_equal(got_names, names[out["class_id"]]):
                raise ParityError("The SavedModel's class_name output does not match its "
                                  "class_id output; nothing was published.")
    if not diff <= tolerance:
        raise ParityError(
            f"The SavedModel's outputs differ from the Keras model's by up to {diff:.3g} "
            f"on {len(got)} rows (allowed: {tolerance:g}); nothing was published."
        )
    return report
