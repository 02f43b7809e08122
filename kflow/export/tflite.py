"""TFLite: conversion (float32, float16, dynamic range, int8) and evaluation in LiteRT.

Each variant is converted with `tf.lite.TFLiteConverter` from a SavedModel
whose `serving_default` takes the same named inputs as the exported
SavedModel (or, with a preprocessing sidecar, the numeric part's inputs)
and answers with the same outputs: `probabilities` [N, classes] (binary:
[1 - p, p]) and `class_id` [N], or `value` [N]. After conversion the
signature's tensors are renamed after their keys (`probabilities`, not
`StatefulPartitionedCall:0`) and the metadata (class names, inputs in order,
normalization, the missing-value convention) is embedded in the file as a
flatbuffer `metadata` entry named `kflow_metadata` (JSON), besides
`metadata.json` (`read_embedded_metadata` reads it back).

- float32: no optimization, the reference.
- float16: weights stored as float16 (about half the size), float math.
- dynamic: weights int8, activations quantized on the fly.
- int8: full integer, calibrated on a representative sample of the training
  split; inputs and outputs stay float32 unless `int8_io=True`.

Models run in the LiteRT interpreter (`ai_edge_litert`), falling back to
`tf.lite.Interpreter` only when LiteRT is not installed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kflow.errors import UnknownNameError, did_you_mean
from kflow.export.errors import TFLiteConversionError

__all__ = [
    "TFLITE_VARIANTS",
    "parse_variants",
    "head_output_name",
    "write_numeric_saved_model",
    "write_conversion_saved_model",
    "finalize_tflite",
    "read_embedded_metadata",
    "METADATA_NAME",
    "convert",
    "make_interpreter",
    "TFLiteRunner",
    "score",
    "measure_latency",
    "quiet_native_logs",
]

TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")
SIGNATURE_KEY = "serving_default"
METADATA_NAME = "kflow_metadata"


def parse_variants(spec: str | Iterable[str] | None) -> list[str]:
    """`"float32,int8"`, `"all"`, `"none"` or a list -> ordered, validated variant names."""
    if spec is None:
        return []
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if items in (["none"], []):
        return []
    if "all" in items:
        return list(TFLITE_VARIANTS)
    aliases = {"fp32": "float32", "fp16": "float16", "dynamic_range": "dynamic",
               "dynamic-range": "dynamic", "full_integer": "int8", "integer": "int8"}
    result = []
    for item in items:
        name = aliases.get(item.lower(), item.lower())
        if name not in TFLITE_VARIANTS:
            raise UnknownNameError(
                f"Unknown TFLite variant '{item}'{did_you_mean(item, TFLITE_VARIANTS)}. "
                f"Allowed: {', '.join(TFLITE_VARIANTS)} (comma-separated), or 'all'."
            )
        if name not in result:
            result.append(name)
    return [v for v in TFLITE_VARIANTS if v in result]


def head_output_name(task: str) -> str:
    """The output the accuracy gate reads: `probabilities` or `value` (as the SavedModel)."""
    return "value" if task == "regression" else "probabilities"


def write_conversion_saved_model(model: Any, fn: Callable[[dict[str, Any]], dict[str, Any]],
                                 specs: dict[str, Any], path: str | Path) -> None:
    """A SavedModel for the converter: `serving_default` = `fn` on `specs`' named inputs.

    Args:
        model: The Keras model `fn` calls (its variables are tracked).
        fn: `{input name: tensor}` -> `{output name: tensor}`.
        specs: `{input name: tf.TensorSpec}` (batch axis first).
        path: Where to write it.
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, fn, input_signature=[specs])
    archive.write_out(str(path), verbose=False)


def finalize_tflite(blob: bytes, metadata: dict[str, Any] | None) -> bytes:
    """Names the signature's tensors after their keys and embeds `metadata` (JSON).

    Args:
        blob: The converter's flatbuffer.
        metadata: What an app needs (class names, inputs, normalization,
            missing values), stored as the flatbuffer metadata entry
            `kflow_metadata`. `None` embeds nothing.

    Returns:
        The new flatbuffer.
    """
    import json

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    for sig in model.signatureDefs or []:
        tensors = model.subgraphs[sig.subgraphIndex].tensors
        taken = {t.name for t in tensors}
        for entry in [*(sig.inputs or []), *(sig.outputs or [])]:
            key = entry.name if isinstance(entry.name, bytes) else str(entry.name).encode()
            tensor = tensors[entry.tensorIndex]
            if tensor.name != key and key not in taken:
                taken.discard(tensor.name)
                tensor.name = key
                taken.add(key)
    if metadata is not None:
        model.metadata = [m for m in (model.metadata or [])
                          if (m.name.decode() if isinstance(m.name, bytes) else m.name)
                          != METADATA_NAME]
        buffer = schema.BufferT()
        buffer.data = list(json.dumps(metadata, sort_keys=True).encode())
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_embedded_metadata(model: str | Path | bytes) -> dict[str, Any] | None:
    """The `kflow_metadata` entry of a .tflite file (flatbuffer metadata API), or `None`."""
    import json

    from tensorflow.lite.python import schema_py_generated as schema

    data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    fb = schema.Model.GetRootAsModel(data, 0)
    for i in range(fb.MetadataLength()):
        entry = fb.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            raw = fb.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode())
    return None


def write_numeric_saved_model(model: Any, input_names: dict[str, Any] | None, output: str,
                              path: str | Path) -> None:
    """A SavedModel for the converter: `{name: input}` -> `{output: model(...)}`.

    Args:
        model: The Keras model (or its numeric part).
        input_names: `{tflite input name: model input key}`; `None` keeps
            the model's own input names.
        output: The output name.
        path: Where to write it.
    """
    import keras
    import tensorflow as tf

    struct = model.input
    if isinstance(struct, dict):
        keys = list(struct)
        tensors = [struct[k] for k in keys]
    elif isinstance(struct, (list, tuple)):
        keys, tensors = [t.name for t in struct], list(struct)
    else:
        keys, tensors = [struct.name], [struct]
    names = list(input_names) if input_names else keys
    specs = {n: tf.TensorSpec([None, *t.shape[1:]], tf.as_dtype(str(t.dtype)), name=n)
             for n, t in zip(names, tensors, strict=True)}

    def serve(inputs):
        values = [inputs[n] for n in names]
        if isinstance(struct, (dict, list, tuple)):
            x = dict(zip(keys, values, strict=True))  # Keras maps names onto a list too
        else:
            x = values[0]
        from kflow.export.saved_model import single_output

        return {output: single_output(model(x, training=False))}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=[specs])
    archive.write_out(str(path), verbose=False)


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Sends file descriptor 2 to /dev/null while the converter and LiteRT run.

    The converter's MLIR diagnostics and LiteRT's delegate notices are written
    by C++ straight to stderr; errors still surface as Python exceptions (with
    the same text). Active only when `TF_CPP_MIN_LOG_LEVEL` is 1 or more (the
    CLI sets 2 unless `--debug`).
    """
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if not level.isdigit() or int(level) < 1:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter deprecation (calibration)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _unsupported_ops(message: str) -> list[str]:
    ops = re.findall(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op", message)
    ops += re.findall(r"op '(tf\.[A-Za-z0-9_]+)' is not supported", message)
    return sorted(set(ops))


def convert(saved_model_dir: str | Path, variant: str,
            representative: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
            int8_io: bool = False) -> bytes:
    """Converts the SavedModel's `serving_default` to one TFLite variant.

    Args:
        saved_model_dir: From `write_numeric_saved_model`.
        variant: One of `TFLITE_VARIANTS`.
        representative: For int8: a callable yielding `{input name: one-row array}`.
        int8_io: For int8: int8 inputs and outputs instead of float32.

    Raises:
        TFLiteConversionError: The converter rejected the model (the message
            names the unsupported TensorFlow ops).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[SIGNATURE_KEY])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative is None:
            raise TFLiteConversionError("int8 conversion needs a representative dataset.")
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with quiet_native_logs():
            return converter.convert()
    except Exception as exc:  # noqa: BLE001 - ConverterError, RuntimeError...: one line
        text = str(exc)
        ops = _unsupported_ops(text)
        if ops:
            detail = f"unsupported TensorFlow ops {', '.join(ops)}"
        else:
            first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()),
                         text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
            detail = first[:300]
        if "TensorList" in text:  # a recurrent layer's loop over the time steps
            detail += (" (a recurrent layer loops over the time steps with TensorList ops, "
                       "which TFLite builtins lack; build it with unroll=True: kflow's "
                       "recurrent blocks unroll static sequences of up to 100 steps)")
        err = TFLiteConversionError(f"The TFLite converter rejected the {variant} model: {detail}.")
        err.unsupported_ops = ops
        raise err from None


def make_interpreter(model: str | Path | bytes, num_threads: int | None = 1) -> Any:
    """A LiteRT interpreter (`tf.lite.Interpreter` only if `ai_edge_litert` is missing)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - LiteRT is a declared dependency (kflow[tflite])
        import warnings

        import tensorflow as tf

        warnings.warn("ai-edge-litert is not installed; using tf.lite.Interpreter "
                      "(pip install 'kflow[tflite]').", stacklevel=2)
        Interpreter = tf.lite.Interpreter
    kwargs = {"num_threads": num_threads} if num_threads else {}
    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), **kwargs)
    return Interpreter(model_path=str(model), **kwargs)


class TFLiteRunner:
    """Runs a kflow `.tflite` file: quantizes int8 inputs, dequantizes int8 outputs.

    Args:
        model: A path or the model's bytes.
        num_threads: Interpreter threads. Defaults to 1 (device-like latency).
    """

    def __init__(self, model: str | Path | bytes, num_threads: int | None = 1):
        with quiet_native_logs():
            self.interpreter = make_interpreter(model, num_threads)
            self.interpreter.allocate_tensors()  # applies the XNNPACK delegate (logs)
            self.runner = self.interpreter.get_signature_runner(SIGNATURE_KEY)
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def _quantize(self, name: str, x: np.ndarray) -> np.ndarray:
        d = self.inputs[name]
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "iu" and d["quantization"][0]:
            scale, zero = d["quantization"]
            info = np.iinfo(dtype)
            q = np.round(np.asarray(x, "float32") / scale + zero)
            return np.clip(q, info.min, info.max).astype(dtype)
        if dtype.kind in "SUO":
            return np.asarray(x)
        return np.asarray(x).astype(dtype)

    def _dequantize(self, name: str, y: np.ndarray) -> np.ndarray:
        d = self.outputs[name]
        if np.dtype(d["dtype"]).kind in "iu" and d["quantization"][0]:
            scale, zero = d["quantization"]
            return (y.astype("float32") - zero) * scale
        return y

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One invocation on a batch: `{input: array}` -> `{output: float array}`."""
        out = self.runner(**{k: self._quantize(k, v) for k, v in feed.items()})
        return {k: self._dequantize(k, np.asarray(v)) for k, v in out.items()}

    def predict(self, feed: dict[str, np.ndarray], output: str,
                batch_size: int = 1) -> np.ndarray:
        """The `output` for every row, in batches of `batch_size`."""
        n = len(next(iter(feed.values())))
        parts = []
        for start in range(0, n, batch_size):
            batch = {k: v[start:start + batch_size] for k, v in feed.items()}
            parts.append(self(batch)[output])
        return np.concatenate(parts, axis=0) if parts else np.zeros((0,))


def score(task: str, y_true: np.ndarray, head: np.ndarray) -> float:
    """Accuracy (classification) or mean absolute error (regression) of head outputs."""
    head = np.asarray(head, "float64")
    y_true = np.asarray(y_true)
    if task == "regression":
        return float(np.mean(np.abs(head.reshape(len(y_true), -1)
                                    - y_true.reshape(len(y_true), -1))))
    if task == "binary":
        p = head.reshape(len(head), -1)[:, -1]  # (n, 1) sigmoid, or (n, 2) [1 - p, p]
        pred = (p > 0.5).astype("int64")
    else:
        pred = np.argmax(head, axis=-1)
    return float(np.mean(pred == y_true.reshape(-1)))


def measure_latency(runner: TFLiteRunner, feed: dict[str, np.ndarray], samples: int = 100,
                    warmup: int = 5) -> list[float]:
    """Seconds per one-row invocation, for up to `samples` rows (after `warmup` runs)."""
    n = len(next(iter(feed.values())))
    if n == 0:
        return []
    rows = [{k: v[i % n:i % n + 1] for k, v in feed.items()} for i in range(max(samples, 1))]
    for i in range(warmup):
        runner(rows[i % len(rows)])
    times = []
    for row in rows:
        start = time.perf_counter()
        runner(row)
        times.append(time.perf_counter() - start)
    return times

