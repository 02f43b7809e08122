"""TF Serving warmup records: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays these `PredictionLog` records when it loads a version, so
the graph is traced and the first real request is not slow. kflow writes one
`PredictRequest` per row (batch 1), from a few real rows of the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kflow.export.saved_model import SIGNATURE_KEY

__all__ = ["WARMUP_FILE", "write_warmup_requests", "read_warmup_requests"]

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def write_warmup_requests(version_dir: str | Path, model_name: str,
                          feed: dict[str, np.ndarray], rows: int = 5) -> int:
    """Writes up to `rows` one-row predict requests; returns how many were written.

    Args:
        version_dir: The SavedModel directory (the version being published).
        model_name: The model's name in the base (`model_spec.name`).
        feed: `{signature input name: array}` of real rows.
        rows: Requests to write. Defaults to 5.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    n = min(rows, len(next(iter(feed.values())))) if feed else 0
    if n <= 0:
        return 0
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = SIGNATURE_KEY
            for key, values in feed.items():
                row = values[i:i + 1]
                if row.dtype == object:
                    row = np.asarray([str(v).encode("utf-8") for v in row.reshape(-1)],
                                     dtype=object).reshape(row.shape)
                request.inputs[key].CopyFrom(tf.make_tensor_proto(row))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return n


def read_warmup_requests(version_dir: str | Path) -> list[Any]:
    """Parses the warmup file back into `PredictionLog` protos."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    path = Path(version_dir) / WARMUP_FILE
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
