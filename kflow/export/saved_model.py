"""The SavedModel: a `serving_default` signature of named raw inputs and named outputs.

Outputs a client understands, by task:

- multiclass: `probabilities` (batch x classes), `class_id` (int64) and, when
  the run knows its class names, `class_name` (string, from a constant table);
- binary: `probabilities` (batch x 2: [1 - p, p]), `class_id` (p > 0.5),
  `class_name`;
- regression: `value` (batch, or batch x targets), in the target's units
  (a scaled target is un-scaled inside the model).

Next to `serving_default`, a classification export has a `classification`
signature (method `tensorflow/serving/classify`: one input `inputs` of
serialized `tf.Example`s; outputs `classes` and `scores`) and a
single-target regression export a `regression` signature (method
`tensorflow/serving/regress`: output `outputs`), so TF Serving's `:classify`
and `:regress` endpoints answer with `"signature_name": "classification"` /
`"regression"`. A feature of an Example may use the signature key
(`previous_score`) or the file's column name (`previous score`); an absent
feature is a missing value.

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
    "CLASSIFY_KEY",
    "REGRESS_KEY",
    "head_outputs",
    "example_signature_key",
    "BINARY_THRESHOLD",
    "serving_outputs",
    "write_saved_model",
    "check_saved_model",
    "main_output",
    "keras_predict",
    "serialize_examples",
]

SIGNATURE_KEY = "serving_default"
CLASSIFY_KEY = "classification"
REGRESS_KEY = "regression"
BINARY_THRESHOLD = 0.5
_METHODS = {CLASSIFY_KEY: "tensorflow/serving/classify",
            REGRESS_KEY: "tensorflow/serving/regress"}


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


def head_outputs(y: Any, task: str, names: Any = None) -> dict[str, Any]:
    """The signature's outputs from the model's head output (TF ops).

    Shared by the SavedModel and the TFLite files, so both answer with the same
    names and shapes: `probabilities` [N, classes] (binary: [1 - p, p]),
    `class_id` [N] int64, `class_name` [N] when `names` (a string constant)
    is given; `value` [N] (or [N, targets]) for regression.
    """
    import tensorflow as tf

    y = tf.cast(single_output(y), tf.float32)
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


def _serving_fn(model: Any, layout: InputLayout, task: str, class_names: list[str] | None):
    import tensorflow as tf

    names = tf.constant([str(c) for c in class_names]) if class_names else None

    def serve(inputs):
        return head_outputs(model(layout.to_model_tf(inputs), training=False), task, names)

    return serve


def example_signature_key(task: str, width: int) -> str | None:
    """`classification`, `regression` (one target only) or `None`."""
    if task in ("binary", "multiclass"):
        return CLASSIFY_KEY
    return REGRESS_KEY if width == 1 else None


def _example_fn(model: Any, layout: InputLayout, task: str, class_names: list[str] | None):
    """`serialized tf.Example [N]` -> classify (`classes`, `scores`) or regress (`outputs`)."""
    import tensorflow as tf

    serve = _serving_fn(model, layout, task, None)
    spec, aliases = {}, {}
    for s in layout.signature_inputs:
        dtype = tf.as_dtype(s.dtype)
        default = (float("nan") if dtype.is_floating else "" if dtype == tf.string
                   else -1 if dtype.is_integer else None)
        if s.shape != () or default is None:
            spec[s.name] = tf.io.FixedLenFeature(list(s.shape), dtype)
            continue
        spec[s.name] = tf.io.FixedLenFeature([], dtype, default_value=default)
        if s.feature and s.feature != s.name and s.feature not in spec:
            spec[s.feature] = tf.io.FixedLenFeature([], dtype, default_value=default)
            aliases[s.name] = s.feature
    labels = [str(c) for c in class_names] if class_names else None

    def from_examples(inputs):
        parsed = tf.io.parse_example(inputs, spec)
        feed = {}
        for s in layout.signature_inputs:
            value = parsed[s.name]
            if s.name in aliases:  # the file's column name wins where it is given
                alias = parsed[aliases[s.name]]
                absent = tf.math.is_nan(alias) if alias.dtype.is_floating else (
                    tf.equal(alias, "") if alias.dtype == tf.string else tf.equal(alias, -1))
                value = tf.where(absent, value, alias)
            feed[s.name] = value
        out = serve(feed)
        if task == "regression":
            return {"outputs": out["value"]}
        scores = out["probabilities"]
        n = tf.shape(scores)[0]
        k = scores.shape[-1]
        names = tf.constant(labels if labels else [str(i) for i in range(k)])
        return {"classes": tf.tile(names[None, :], tf.stack([n, 1])), "scores": scores}

    return from_examples


def _set_method_names(path: str | Path, keys: list[str]) -> None:
    """Writes TF Serving's method names (classify / regress) into `saved_model.pb`.

    The TF2 saver writes every signature as `tensorflow/serving/predict`; TF
    Serving (with `--enable_signature_method_name_check`) and
    `saved_model_cli` read the method name.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(path) / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(pb.read_bytes())
    for graph in proto.meta_graphs:
        for key in keys:
            if key in graph.signature_def:
                graph.signature_def[key].method_name = _METHODS[key]
    pb.write_bytes(proto.SerializeToString())


def write_saved_model(model: Any, layout: InputLayout, task: str,
                      class_names: list[str] | None, path: str | Path) -> None:
    """Writes a SavedModel whose `serving_default` takes the layout's named inputs,
    plus a `classification` or `regression` signature of `tf.Example`s.

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
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, _serving_fn(model, layout, task, class_names),
                         input_signature=[layout.signature_specs()])
    extra = example_signature_key(task, width)
    if extra is not None:
        archive.add_endpoint(extra, _example_fn(model, layout, task, class_names),
                             input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    archive.write_out(str(path), verbose=False)
    if extra is not None:
        _set_method_names(path, [extra])


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
    for key in (CLASSIFY_KEY, REGRESS_KEY):
        if key in loaded.signatures and all(s.shape == () for s in layout.signature_inputs):
            ex = loaded.signatures[key](inputs=tf.constant(serialize_examples(feed)))
            got_ex = ex["outputs" if key == REGRESS_KEY else "scores"].numpy()
            ex_diff = max_abs_diff(got_ex, expected)
            report[f"{key}_max_abs_diff"] = ex_diff
            if not ex_diff <= tolerance:
                raise ParityError(
                    f"The SavedModel's '{key}' signature (tf.Example input) differs from the "
                    f"Keras model by up to {ex_diff:.3g}; nothing was published.")
    return report


def serialize_examples(feed: dict[str, np.ndarray], names: dict[str, str] | None = None
                       ) -> list[bytes]:
    """Rows of `{signature input: array}` as serialized `tf.Example`s (one value per
    feature: float_list, int64_list or bytes_list); NaN, "" and -1 are left out
    (a missing value). `names` renames features (`{signature key: column name}`)."""
    import tensorflow as tf

    names = names or {}
    n = len(next(iter(feed.values()))) if feed else 0
    out = []
    for i in range(n):
        features = {}
        for key, column in feed.items():
            v = column[i]
            if isinstance(v, (bytes, str)):
                if v in ("", b""):
                    continue
                feat = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[v.encode() if isinstance(v, str) else v]))
            elif np.issubdtype(np.asarray(v).dtype, np.integer):
                if v == -1:
                    continue
                feat = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
            else:
                if np.isnan(v):
                    continue
                feat = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
            features[names.get(key, key)] = feat
        out.append(tf.train.Example(
            features=tf.train.Features(feature=features)).SerializeToString())
    return out
