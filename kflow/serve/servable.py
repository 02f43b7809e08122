"""One loaded model version: its SavedModel, signatures, warm-up and calls.

A :class:`Servable` is what TF Serving calls a servable: one version directory
(`BASE/NAME/VERSION/`) loaded with TensorFlow. Signatures are read from the
SavedModel's `serve` meta graph (the same `SignatureDef` protos TF Serving
reads, which the metadata endpoint returns), and called through the functions
`tf.saved_model.load` restores.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kflow.serve.signature import (
    DEFAULT_SIGNATURE,
    SignatureInfo,
    dtype_string,
)
from kflow.serve.status import Code, ServingError

__all__ = ["Servable", "read_meta_graph", "version_fingerprint", "WARMUP_FILE",
           "MAX_WARMUP_RECORDS"]

log = logging.getLogger("kflow.serve")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses more (saved_model_warmup_util.cc)


def read_meta_graph(path: str | Path, tags: tuple[str, ...] = ("serve",)):
    """The `MetaGraphDef` with `tags` from `path/saved_model.pb` (or `.pbtxt`)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(path)
    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    elif (path / "saved_model.pbtxt").is_file():
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    else:
        raise ServingError(Code.NOT_FOUND, f"SavedModel not found in export directory: {path}")
    for meta_graph in saved_model.meta_graphs:
        if set(tags) <= set(meta_graph.meta_info_def.tags):
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ServingError(Code.NOT_FOUND,
                       "Could not find meta graph def matching supplied tags: "
                       f"{{ {', '.join(tags)} }}. Available tags: {available}. To inspect "
                       "available tag-sets in the SavedModel, please use the SavedModel CLI: "
                       "`saved_model_cli`")


def version_fingerprint(path: str | Path) -> tuple:
    """Names, sizes and modification times of a version's files: a changed
    fingerprint means the directory was (re)written, so a failed load is retried."""
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


class Servable:
    """A loaded SavedModel version.

    Args:
        name: Model name.
        version: Version number (the directory name).
        path: The version directory.

    Use :meth:`load` to build one; it is safe to call :meth:`run` from several
    threads at once.
    """

    def __init__(self, name: str, version: int, path: str | Path, meta_graph: Any,
                 module: Any):
        self.name = name
        self.version = int(version)
        self.path = Path(path)
        self.meta_graph = meta_graph
        self.signatures: dict[str, SignatureInfo] = {
            key: SignatureInfo.from_proto(key, sig)
            for key, sig in meta_graph.signature_def.items()
        }
        self._module = module
        self._functions = dict(module.signatures)
        self._lock = threading.Lock()
        self.loaded_at = time.time()

    @classmethod
    def load(cls, name: str, version: int, path: str | Path) -> Servable:
        import tensorflow as tf

        meta_graph = read_meta_graph(path)
        try:
            module = tf.saved_model.load(str(path), tags=["serve"])
        except Exception as exc:  # noqa: BLE001 - any loader failure is a failed load
            raise ServingError(Code.UNKNOWN, f"Failed to load SavedModel {path}: "
                               f"{type(exc).__name__}: {_first_line(exc)}") from exc
        return cls(name, version, path, meta_graph, module)

    # ------------------------------------------------------------------ signatures

    def signature(self, name: str) -> SignatureInfo:
        """The signature `name` ("" for `serving_default`), as the predict input map
        lookup finds it (`GetInfoMap` in http_rest_api_handler.cc)."""
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise ServingError.invalid_argument(
                f'Serving signature name: "{key}" not found in signature def') from None

    def classify_regress_signature(self, name: str, method: str) -> SignatureInfo:
        """The signature for `:classify` / `:regress`, checked as TF Serving's
        `GetClassificationSignatureDef` / `PreProcessClassification` (classifier.cc)
        and their regressor.cc twins check it by default: by its structure (one
        input `inputs`; outputs `classes` and/or `scores`, or `outputs`), not by
        its `method_name`, which TF Serving only checks with
        `--enable_signature_method_name_check` (off by default). So Estimator /
        TF1 classify and regress signatures and TF2 signatures of the same shape
        (whose method name the TF2 saver writes as predict) both work."""
        key = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise ServingError.invalid_argument(f"No signature was found with the name: {key}")
        kind = "classification" if method == "classify" else "regression"
        if len(sig.inputs) != 1:
            raise ServingError.invalid_argument("Expected one input Tensor.")
        if method == "classify":
            if len(sig.outputs) not in (1, 2):
                raise ServingError.invalid_argument(
                    f"Expected one or two output Tensors, found {len(sig.outputs)}")
        elif len(sig.outputs) != 1:
            raise ServingError.invalid_argument("Expected one output Tensor.")
        if "inputs" not in sig.inputs:
            raise ServingError.invalid_argument(
                f"No {kind} inputs found in SignatureDef: {self._debug_string(key)}")
        if method == "classify":
            if "classes" not in sig.outputs and "scores" not in sig.outputs:
                raise ServingError.invalid_argument(
                    'Expected classification signature outputs to contain at least one of '
                    f'"classes" or "scores". Signature was: {self._debug_string(key)}')
        elif "outputs" not in sig.outputs:
            raise ServingError.invalid_argument(
                f"No regression outputs found in SignatureDef: {self._debug_string(key)}")
        return sig

    def _debug_string(self, key: str) -> str:
        """The SignatureDef in protobuf text format (`DebugString()`)."""
        return str(self.meta_graph.signature_def[key])

    def check_feeds(self, sig: SignatureInfo, feeds: Mapping[str, np.ndarray]) -> None:
        """Input names (`VerifyRequestInputsSize`) and shapes against the signature."""
        if set(feeds) != set(sig.inputs):
            sent, want = sorted(feeds), sorted(sig.inputs)
            raise ServingError.invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(want)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(want)}}}). "
                f"Sent extra: {{{','.join(sorted(set(sent) - set(want)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(want) - set(sent)))}}}.")
        for name, arr in feeds.items():
            info = sig.inputs[name]
            if not info.compatible_shape(arr.shape):
                raise ServingError.invalid_argument(
                    f"The shape of input '{name}' is [{','.join(map(str, arr.shape))}], "
                    f"which is incompatible with the signature's shape {info.shape_string()} "
                    f"({dtype_string(info.dtype)}).")

    # ------------------------------------------------------------------ calls

    def run(self, signature_name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls a signature on NumPy feeds and returns NumPy outputs.

        Raises:
            ServingError: with TensorFlow's error code and message when the
                model rejects the inputs.
        """
        import tensorflow as tf

        key = signature_name or DEFAULT_SIGNATURE
        fn = self._functions.get(key)
        if fn is None:
            raise ServingError.failed_precondition(f'Serving signature key "{key}" not found.')
        try:
            result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
        except tf.errors.OpError as exc:
            code = Code(exc.error_code) if exc.error_code in Code._value2member_map_ else (
                Code.UNKNOWN)
            raise ServingError(code, clean_tf_message(exc.message)) from None
        except (TypeError, ValueError) as exc:
            raise ServingError.invalid_argument(_first_line(exc)) from None
        if not isinstance(result, Mapping):
            result = {"output_0": result}
        return {k: v.numpy() for k, v in result.items()}

    def warm_up(self) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` (TF Serving's format:
        a TFRecord of `PredictionLog`), or, without that file, calls every predict
        signature once on zeros. Returns the number of warm-up calls.

        Raises:
            ServingError: when a warm-up record fails (then the version fails to
                load, as in TF Serving).
        """
        path = self.path / WARMUP_FILE
        if path.is_file():
            return self._replay_warmup_records(path)
        calls = 0
        for key in self._functions:
            sig = self.signatures.get(key)
            if sig is None or not sig.inputs:
                continue
            feeds = {}
            for name, info in sig.inputs.items():
                from kflow.serve.signature import NUMPY_DTYPES

                if info.shape is None or info.dtype not in NUMPY_DTYPES or info.dtype == 7:
                    break
                shape = tuple(1 if d < 0 else d for d in info.shape)
                feeds[name] = np.zeros(shape, NUMPY_DTYPES[info.dtype])
            else:
                try:
                    self.run(key, feeds)
                    calls += 1
                except ServingError as exc:  # zeros may be meaningless to a model: fine
                    log.debug("Synthetic warm-up of %s/%s signature %s failed: %s",
                              self.name, self.version, key, exc)
        return calls

    def _replay_warmup_records(self, path: Path) -> int:
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
        if len(records) > MAX_WARMUP_RECORDS:
            raise ServingError.invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
        for raw in records:
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(raw)
            kind = entry.WhichOneof("log_type")
            if kind == "predict_log":
                request = entry.predict_log.request
                feeds = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                self.run(request.model_spec.signature_name, feeds)
            elif kind in ("classify_log", "regress_log"):
                request = getattr(entry, kind).request
                examples = serialized_examples(request.input)
                self.run(request.model_spec.signature_name,
                         {"inputs": np.asarray(examples, dtype=object)})
            else:
                raise ServingError.unimplemented(
                    f"Unsupported log_type for warmup: {kind}")
        return len(records)


def serialized_examples(input_proto: Any) -> list[bytes]:
    """The serialized tf.Examples of a `tensorflow.serving.Input` proto."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context.SerializeToString()
        return [ctx + e.SerializeToString()
                for e in input_proto.example_list_with_context.examples]
    raise ServingError.invalid_argument("Input is empty.")


def clean_tf_message(message: str) -> str:
    """TensorFlow's error text without the eager-mode preamble ("Graph execution
    error", "Detected at node ...", the `[Op:...]` suffix), as TF Serving's
    session errors read."""
    lines = [line for line in message.strip().splitlines()
             if line.strip() and not line.startswith(("Graph execution error",
                                                      "Detected at node", "<stack traces"))]
    text = "\n".join(lines)
    cut = text.rfind(" [Op:")
    if cut > 0 and text.endswith("]"):
        text = text[:cut]
    return text.strip() or message.strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
