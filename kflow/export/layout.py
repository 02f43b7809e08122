"""`InputLayout`: how a Keras model's inputs become a signature of named raw inputs.

A serving client sends one value per named feature and row. The layout maps
those signature inputs onto the model's own inputs:

- a dict-input model (tabular: one `keras.Input(shape=(1,))` per column) gets
  one signature input per model input, with the `(1,)` axis dropped, so a row
  is `{"age": 41.0, "city": "Lyon"}`;
- a single vector input with known feature names (`breast-cancer-mlp`: 30
  named features) gets one signature input per feature, stacked back into
  the vector inside the signature;
- any other input (`digits-cnn`: an 8x8x1 image) keeps its name and shape.

The same layout turns a data split (`Dataset.x`: an array, a dict of column
arrays or a DataFrame) into the model's inputs and into signature inputs, so
parity checks, warmup requests and TFLite evaluation all see the same rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kflow.errors import DataError
from kflow.export.errors import ExportError

__all__ = ["ModelInput", "SignatureInput", "InputLayout", "signature_name", "num_rows"]

_NAME_RE = re.compile(r"[^0-9A-Za-z_]+")


def signature_name(raw: Any, taken: set[str] | None = None) -> str:
    """A valid SavedModel signature key for `raw`: letters, digits, `_`; unique in `taken`."""
    name = _NAME_RE.sub("_", str(raw)).strip("_") or "input"
    if name[0].isdigit():
        name = f"f_{name}"
    candidate, i = name, 2
    while taken is not None and candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    if taken is not None:
        taken.add(candidate)
    return candidate


def num_rows(x: Any) -> int:
    """Rows in an array, a DataFrame, a dict of columns or a list of arrays."""
    if isinstance(x, dict):
        return len(next(iter(x.values()))) if x else 0
    if isinstance(x, (list, tuple)):
        return len(x[0]) if x else 0
    return len(x)


def take(x: Any, index: Any) -> Any:
    """The rows `index` (an array of ints or a slice) of `x`."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[index] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(v)[index] for v in x]
    if hasattr(x, "iloc"):
        return x.iloc[index]
    return np.asarray(x)[index]


def _np_dtype(dtype: str) -> Any:
    return object if dtype == "string" else np.dtype(dtype)


@dataclass(frozen=True)
class ModelInput:
    """One input of the Keras model: its name, dtype and shape without the batch axis."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class SignatureInput:
    """One named input of the serving signature.

    Attributes:
        name: The signature key a client uses.
        dtype: "float32", "int64", "string"...
        shape: Shape without the batch axis (`()` for one value per row).
        source: The model input it feeds.
        column: Index in the source's last axis when a vector input is split
            into named features; `None` otherwise.
        feature: The original feature name (before sanitizing), if any.
        parse: "boolean" when a boolean column is sent as text ("yes"/"no",
            "true"/"false", "1"/"0", "" for missing) and parsed to the model's
            float (1, 0, NaN) inside the signature; `None` otherwise.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    source: str
    column: int | None = None
    feature: str | None = None
    parse: str | None = None


@dataclass
class InputLayout:
    """The model's inputs, the signature's inputs, and the mapping between them.

    Attributes:
        structure: How the model takes its inputs: "single", "dict" or "list".
        model_inputs: The model's inputs, in the model's order.
        signature_inputs: The signature's named inputs.
        feed_dict: Feed the model a `{input name: tensor}` dict (a functional
            model whose inputs are a list or dict maps names onto them).
    """

    structure: str
    model_inputs: list[ModelInput]
    signature_inputs: list[SignatureInput] = field(default_factory=list)
    feed_dict: bool = False

    @classmethod
    def from_model(cls, model: Any, feature_names: list[str] | None = None,
                   split_features: bool = True,
                   columns: dict[str, dict[str, Any]] | None = None) -> InputLayout:
        """Reads the inputs of a Keras model.

        Args:
            model: A built Keras model.
            feature_names: The data's feature names (from `run.json`).
            split_features: Give each named feature of a single vector input
                its own signature input (not for image-like names such as
                `pixel_0_0`: an image is one tensor). Defaults to `True`.
            columns: `{model input: {"column": name in the file, "kind": ...}}`
                of a table (from `run.json`): boolean columns are then text
                inputs ("yes"/"no") and the file's names are recorded.
        """
        struct = model.input
        as_dict = isinstance(struct, (list, tuple, dict))
        if isinstance(struct, (list, tuple)) and len(struct) == 1:
            struct = struct[0]  # a loaded functional model may list its single input
        if isinstance(struct, dict):
            structure, tensors = "dict", list(struct.items())
        elif isinstance(struct, (list, tuple)):
            structure, tensors = "list", [(t.name, t) for t in struct]
        else:
            structure, tensors = "single", [(struct.name, struct)]
        inputs = [
            ModelInput(str(key), str(t.dtype), tuple(t.shape[1:])) for key, t in tensors
        ]
        layout = cls(structure, inputs, feed_dict=as_dict)
        taken: set[str] = set()
        sig: list[SignatureInput] = []
        columns = columns or {}
        for mi in inputs:
            width = mi.shape[0] if len(mi.shape) == 1 else None
            if (split_features and structure == "single" and feature_names
                    and width is not None and width > 1 and len(feature_names) == width
                    and not _image_like(feature_names)):
                for j, feat in enumerate(feature_names):
                    sig.append(SignatureInput(signature_name(feat, taken), mi.dtype, (),
                                              mi.name, column=j, feature=str(feat)))
            elif mi.shape == (1,):
                spec = columns.get(mi.name) or {}
                boolean = spec.get("kind") == "boolean" and mi.dtype.startswith("float")
                sig.append(SignatureInput(
                    signature_name(mi.name, taken), "string" if boolean else mi.dtype, (),
                    mi.name, feature=str(spec.get("column") or mi.name),
                    parse="boolean" if boolean else None))
            else:
                sig.append(SignatureInput(signature_name(mi.name, taken), mi.dtype, mi.shape,
                                          mi.name))
        layout.signature_inputs = sig
        return layout

    # -- description -----------------------------------------------------------
    @property
    def split(self) -> bool:
        """Whether a vector input is split into one signature input per feature."""
        return any(s.column is not None for s in self.signature_inputs)

    def describe(self) -> dict[str, Any]:
        """The signature inputs as JSON: `{name: {"dtype", "shape", "feature", "parse"}}`.

        `feature` is the user's column name where it differs from the signature
        key (`"previous score"` for `previous_score`: signature keys cannot
        hold spaces); `parse` is "boolean" for a yes/no column sent as text.
        """
        return {
            s.name: {"dtype": s.dtype, "shape": [None, *s.shape],
                     **({"feature": s.feature} if s.feature and s.feature != s.name else {}),
                     **({"parse": s.parse, "missing": ""} if s.parse else
                        {"missing": "NaN"} if s.dtype.startswith("float") else
                        {"missing": ""} if s.dtype == "string" else
                        {"missing": -1} if s.dtype.startswith("int") and s.shape == () else {})}
            for s in self.signature_inputs
        }

    def column_names(self) -> dict[str, str]:
        """`{the user's column name: signature key}` for every input whose names differ."""
        return {s.feature: s.name for s in self.signature_inputs
                if s.feature and s.feature != s.name}

    # -- TensorFlow side (inside the signature) --------------------------------
    def signature_specs(self) -> dict[str, Any]:
        """`{name: tf.TensorSpec}` of the signature's inputs (batch axis first)."""
        import tensorflow as tf

        return {s.name: tf.TensorSpec([None, *s.shape], tf.as_dtype(s.dtype), name=s.name)
                for s in self.signature_inputs}

    def to_model_tf(self, inputs: dict[str, Any]) -> Any:
        """Maps the signature's tensors to the model's input structure (TF ops)."""
        import tensorflow as tf

        values: dict[str, Any] = {}
        for mi in self.model_inputs:
            parts = [s for s in self.signature_inputs if s.source == mi.name]
            if parts[0].column is not None:
                parts = sorted(parts, key=lambda s: s.column)
                values[mi.name] = tf.stack([inputs[s.name] for s in parts], axis=-1)
            elif parts[0].shape == () and mi.shape == (1,):
                value = inputs[parts[0].name]
                if parts[0].parse == "boolean":
                    value = parse_boolean_tf(value, parts[0].name)
                values[mi.name] = tf.expand_dims(value, -1)
            else:
                values[mi.name] = inputs[parts[0].name]
        return self._structure(values)

    def _structure(self, values: dict[str, Any]) -> Any:
        # Keras maps a dict onto a list of inputs by input name, so several inputs
        # always travel as a dict (tf.data cannot slice a list of mixed dtypes).
        if self.structure == "single" and not self.feed_dict:
            return values[self.model_inputs[0].name]
        return values

    # -- NumPy side (data splits) ----------------------------------------------
    def model_arrays(self, x: Any) -> dict[str, np.ndarray]:
        """`{model input name: array}` from a data split's features."""
        if hasattr(x, "iloc") and hasattr(x, "columns"):  # a DataFrame
            x = {str(c): x[c].to_numpy() for c in x.columns}
        if isinstance(x, dict):
            missing = [mi.name for mi in self.model_inputs if mi.name not in x]
            if missing and len(self.model_inputs) == 1 and len(x) == 1:
                x = {self.model_inputs[0].name: next(iter(x.values()))}
            elif missing:
                raise DataError(
                    f"The data has no column(s) {missing} for the model's inputs; "
                    f"it has: {', '.join(map(str, x))}."
                )
            arrays = {mi.name: x[mi.name] for mi in self.model_inputs}
        elif isinstance(x, (list, tuple)) and self.structure == "list":
            arrays = {mi.name: v for mi, v in zip(self.model_inputs, x, strict=True)}
        elif len(self.model_inputs) == 1:
            arrays = {self.model_inputs[0].name: x}
        else:
            raise DataError(
                f"The model takes {len(self.model_inputs)} inputs "
                f"({', '.join(mi.name for mi in self.model_inputs)}) but the data is one "
                f"{type(x).__name__}."
            )
        out = {}
        for mi in self.model_inputs:
            a = np.asarray(arrays[mi.name])
            a = a.astype(_np_dtype(mi.dtype)) if mi.dtype != "string" else _strings(a)
            if a.ndim == 1 and mi.shape == (1,):
                a = a[:, None]
            expected = tuple(d for d in mi.shape)
            if a.shape[1:] != expected and None not in expected:
                raise DataError(
                    f"Model input '{mi.name}' takes rows of shape {expected}; the data's "
                    f"rows have shape {a.shape[1:]}."
                )
            out[mi.name] = a
        return out

    def model_feed(self, x: Any) -> Any:
        """The data split's features in the model's input structure (for `predict`)."""
        return self._structure(self.model_arrays(x))

    def signature_feed(self, x: Any) -> dict[str, np.ndarray]:
        """`{signature input name: array}` from a data split's features."""
        arrays = self.model_arrays(x)
        feed = {}
        for s in self.signature_inputs:
            a = arrays[s.source]
            if s.column is not None:
                a = a[..., s.column]
            elif s.shape == () and a.ndim == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if s.parse == "boolean":
                a = boolean_text(a)
            feed[s.name] = a
        return feed

    def synthetic(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """`n` made-up rows per model input (when the run's data cannot be loaded)."""
        rng = np.random.default_rng(seed)
        out = {}
        for mi in self.model_inputs:
            shape = (n, *[d or 1 for d in mi.shape])
            if mi.dtype == "string":
                out[mi.name] = np.full(shape, "", dtype=object)
            elif mi.dtype.startswith(("int", "uint")):
                out[mi.name] = rng.integers(0, 2, size=shape).astype(mi.dtype)
            elif mi.dtype == "bool":
                out[mi.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                out[mi.name] = rng.normal(size=shape).astype(mi.dtype)
        return out


TRUE_TEXT = ("true", "yes", "y", "t", "1", "1.0")
FALSE_TEXT = ("false", "no", "n", "f", "0", "0.0")
_IMAGE_NAME = re.compile(r"^pixel[_ ]?\d+([_ ]\d+)*$", re.IGNORECASE)


def _image_like(names: list[str]) -> bool:
    """Whether feature names are pixel positions (`pixel_0_0`...): an image, not columns."""
    return all(_IMAGE_NAME.match(str(n)) for n in names)


def boolean_text(a: np.ndarray) -> np.ndarray:
    """Float booleans (1, 0, NaN) as the text a client sends ("true", "false", "")."""
    a = np.asarray(a, dtype="float64")
    out = np.where(np.isnan(a), "", np.where(a > 0.5, "true", "false"))
    return out.astype(object)


def parse_boolean_tf(x: Any, name: str = "input") -> Any:
    """Text booleans -> float32 1 / 0, NaN for "" (a missing value), inside a signature.

    The same words as training (`kflow.data.tabular`): true/yes/y/t/1 and
    false/no/n/f/0, any case, spaces ignored. Other text fails the request
    with an InvalidArgument error naming the input.
    """
    import tensorflow as tf

    text = tf.strings.lower(tf.strings.strip(x))
    is_true = tf.reduce_any(tf.equal(text[..., None], tf.constant(TRUE_TEXT)), axis=-1)
    is_false = tf.reduce_any(tf.equal(text[..., None], tf.constant(FALSE_TEXT)), axis=-1)
    empty = tf.equal(text, "")
    check = tf.debugging.Assert(
        tf.reduce_all(is_true | is_false | empty),
        [f"Input '{name}' takes true/false, yes/no, 1/0 or \"\" (missing); got:",
         tf.boolean_mask(x, ~(is_true | is_false | empty))[:3]], summarize=3)
    with tf.control_dependencies([check]):
        nan = tf.fill(tf.shape(text), float("nan"))
        return tf.where(is_true, tf.ones_like(nan), tf.where(is_false, tf.zeros_like(nan), nan))


def _strings(a: np.ndarray) -> np.ndarray:
    """An object array of Python `str` (bytes decoded), as TF and LiteRT take them."""
    out = np.empty(a.shape, dtype=object)
    flat = a.reshape(-1)
    res = out.reshape(-1)
    for i, v in enumerate(flat):
        res[i] = v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return out


def check_single_output(model: Any) -> None:
    """Raises `ExportError` unless the model has exactly one output tensor."""
    outputs = model.outputs
    if len(outputs) != 1:
        raise ExportError(
            f"kflow export takes models with one output (the task head); model "
            f"'{model.name}' has {len(outputs)}."
        )
