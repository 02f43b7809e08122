"""Tiny SavedModels in a TF Serving model base, for tests and benchmarks.

Everything here is written with TensorFlow alone (no `kflow.export`), so the
server's tests do not depend on the exporter. Weights are fixed, so expected
outputs can be computed with NumPy:

- `multi` (versions 1, 2; labels `stable`=1, `canary`=2; policy `all`): a Keras
  model with named inputs `a` [4] and `b` [2]; `serving_default` returns
  `probabilities` [3] and `class_id`. Version v adds v to the logits' bias of
  class v-1, so the answering version shows in `class_id`.
- `single` (version 1): one input `x` [3] -> `y` = x . [1, 2, 3] + 0.5;
  signature `two` returns `y` and `y_squared`.
- `strings` (version 1): `text` (string) -> `length` (int64) and `upper_bytes`
  (bytes, written as base64); signature `typed` takes `flag` (bool), `count`
  (int32), `big` (int64), `wide` (double) and echoes them.
- `examples` (version 1): tf.Example signatures. `serving_default` classifies
  (`classes`, `scores` over "neg"/"pos" from feature `x`), `regress` returns
  `outputs` = 2x + `offset` (a context-friendly feature, default 0), `predict`
  is a plain predict signature on the serialized examples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "build_test_base", "shared_test_base", "TFServingProcess", "free_port",
    "write_scale_version", "write_broken_version", "multi_expected",
    "MODELS_CONFIG_TEXT", "SINGLE_W", "SINGLE_B",
]

SINGLE_W = np.array([1.0, 2.0, 3.0], np.float32)
SINGLE_B = np.float32(0.5)
_MULTI_KERNEL = (np.arange(18, dtype=np.float32).reshape(6, 3) - 8.0) / 10.0


def _multi_bias(version: int) -> np.ndarray:
    bias = np.zeros(3, np.float32)
    bias[(version - 1) % 3] = 5.0 * version
    return bias


def multi_expected(a: np.ndarray, b: np.ndarray, version: int) -> tuple[np.ndarray, np.ndarray]:
    """`(probabilities, class_id)` of the `multi` model at `version`."""
    logits = np.concatenate([a, b], axis=-1).astype(np.float32) @ _MULTI_KERNEL
    logits = logits + _multi_bias(version)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    return probs.astype(np.float32), probs.argmax(axis=-1)


MODELS_CONFIG_TEXT = """\
model_config_list {{
  config {{
    name: "multi"
    base_path: "{base}/multi"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "single"
    base_path: "{base}/single"
    model_platform: "tensorflow"
  }}
  config {{
    name: "strings"
    base_path: "{base}/strings"
    model_platform: "tensorflow"
  }}
  config {{
    name: "examples"
    base_path: "{base}/examples"
    model_platform: "tensorflow"
  }}
}}
"""


def _atomic_save(save, target: Path) -> Path:
    """Writes a version into a temporary sibling, then renames it into place,
    the way an exporter should publish versions to a polled base."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(str(tmp))
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _patch_method_names(path: Path, methods: dict[str, str]) -> None:
    """Sets `method_name` of signatures (TF2's saver writes predict for all);
    TF Serving checks it for :classify and :regress."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(pb.read_bytes())
    for key, method in methods.items():
        sm.meta_graphs[0].signature_def[key].method_name = method
    pb.write_bytes(sm.SerializeToString())


def _save_multi(path: str, version: int) -> None:
    import keras
    import tensorflow as tf

    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    x = keras.layers.Concatenate()([a, b])
    dense = keras.layers.Dense(3, name="logits")
    probs = keras.layers.Softmax()(dense(x))
    model = keras.Model({"a": a, "b": b}, probs)
    dense.set_weights([_MULTI_KERNEL, _multi_bias(version)])

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="a"),
                                  tf.TensorSpec([None, 2], tf.float32, name="b")])
    def serve(a, b):
        p = model({"a": a, "b": b})
        return {"probabilities": p, "class_id": tf.argmax(p, axis=-1)}

    module = tf.Module()
    module.model = model
    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def _save_single(path: str, scale: float = 1.0) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(SINGLE_W * np.float32(scale))
    module.b = tf.Variable(SINGLE_B)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(x):
        return {"y": tf.reduce_sum(x * module.w, axis=-1) + module.b}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def two(x):
        y = tf.reduce_sum(x * module.w, axis=-1) + module.b
        return {"y": y, "y_squared": y * y}

    tf.saved_model.save(module, path, signatures={"serving_default": serve, "two": two})


def _save_strings(path: str) -> None:
    import tensorflow as tf

    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        return {"length": tf.cast(tf.strings.length(text), tf.int64),
                "upper_bytes": tf.strings.upper(text)}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.bool, name="flag"),
        tf.TensorSpec([None], tf.int32, name="count"),
        tf.TensorSpec([None], tf.int64, name="big"),
        tf.TensorSpec([None], tf.float64, name="wide")])
    def typed(flag, count, big, wide):
        return {"flag_out": tf.logical_not(flag), "count_out": count + 1, "big_out": big,
                "wide_out": wide * 2.0}

    tf.saved_model.save(module, path, signatures={"serving_default": serve, "typed": typed})


def _save_examples(path: str) -> None:
    import tensorflow as tf

    module = tf.Module()
    spec = {"x": tf.io.FixedLenFeature([1], tf.float32),
            "offset": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        x = tf.io.parse_example(inputs, spec)["x"][:, 0]
        p = tf.sigmoid(x)
        scores = tf.stack([1.0 - p, p], axis=-1)
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(inputs):
        f = tf.io.parse_example(inputs, spec)
        return {"outputs": 2.0 * f["x"][:, 0] + f["offset"][:, 0]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def predict(inputs):
        return {"x_times_3": 3.0 * tf.io.parse_example(inputs, spec)["x"][:, 0]}

    tf.saved_model.save(module, path, signatures={
        "serving_default": classify, "regress": regress, "predict": predict})
    _patch_method_names(Path(path), {"serving_default": "tensorflow/serving/classify",
                                     "regress": "tensorflow/serving/regress"})


def write_scale_version(base: str | Path, name: str, version: int, scale: float | None = None
                        ) -> Path:
    """A `single`-shaped model whose weights are scaled by `scale` (default: the
    version number), written atomically to `base/name/version`."""
    scale = float(version if scale is None else scale)
    return _atomic_save(lambda p: _save_single(p, scale), Path(base) / name / str(version))


def write_broken_version(base: str | Path, name: str, version: int) -> Path:
    """A version directory whose `saved_model.pb` is garbage: loading it fails."""
    target = Path(base) / name / str(version)

    def save(path: str) -> None:
        Path(path, "saved_model.pb").write_bytes(b"this is not a SavedModel")
        Path(path, "variables").mkdir()

    return _atomic_save(save, target)


def build_test_base(root: str | Path, config: bool = True) -> Path:
    """Writes `multi`, `single`, `strings` and `examples` under `root` and, with
    `config`, a `models.config` (absolute paths) next to them. Returns `root`."""
    root = Path(root).resolve()
    _atomic_save(lambda p: _save_multi(p, 1), root / "multi" / "1")
    _atomic_save(lambda p: _save_multi(p, 2), root / "multi" / "2")
    _atomic_save(_save_single, root / "single" / "1")
    _atomic_save(_save_strings, root / "strings" / "1")
    _atomic_save(_save_examples, root / "examples" / "1")
    if config:
        (root / "models.config").write_text(MODELS_CONFIG_TEXT.format(base=root))
    return root


def shared_test_base(directory: str | Path) -> Path:
    """`build_test_base` under `directory/serve-test-base`, built once and reused
    (test modules of one session share it; a lock guards concurrent builders)."""
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / "serve-test-base"
    marker = directory / "serve-test-base.complete"
    with open(directory / "serve-test-base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(base, ignore_errors=True)
            build_test_base(base)
            marker.touch()
    return base


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TFServingProcess:
    """The real `tensorflow_model_server` on a models.config, for conformance runs.

    Args:
        model_config_file: TF Serving's `--model_config_file`.
        binary: Path or name of `tensorflow_model_server`.
        log_path: Where its output goes.
    """

    def __init__(self, model_config_file: str | Path, binary: str = "tensorflow_model_server",
                 log_path: str | Path | None = None, extra_args: tuple[str, ...] = ()):
        self.config = str(model_config_file)
        self.binary = binary
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.log_path = Path(log_path or tempfile.mktemp(suffix="-tfs.log"))
        self.extra_args = extra_args
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, ready_model: str, timeout: float = 180.0) -> TFServingProcess:
        import subprocess
        import time
        import urllib.request

        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [self.binary, f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
             f"--model_config_file={self.config}", "--file_system_poll_wait_seconds=1",
             "--allow_version_labels_for_unavailable_models=true", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tensorflow_model_server exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models/{ready_model}", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"tensorflow_model_server did not become ready; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except Exception:  # noqa: BLE001
                self.process.kill()
        self.process = None
