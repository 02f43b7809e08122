"""Confusion matrix of a classifier on a held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["confusion_matrix", "predicted_classes"]


def predicted_classes(probabilities: np.ndarray, task: str) -> np.ndarray:
    """Class ids from a classifier's outputs (softmax rows or sigmoid column)."""
    p = np.asarray(probabilities)
    if task == "binary":
        return (p.reshape(len(p), -1)[:, 0] > 0.5).astype("int64")
    return np.argmax(p, axis=-1).astype("int64")


def confusion_matrix(model: Any, x: Any, y: np.ndarray, task: str,
                     class_names: list[str] | None = None, batch_size: int = 256,
                     split: str = "test") -> dict[str, Any] | None:
    """Predicts `x` and counts (true class, predicted class) pairs.

    Args:
        model: A trained Keras classifier.
        x: Inputs (an array or a dict of arrays).
        y: True class ids.
        task: "multiclass" or "binary"; other tasks return `None`.
        class_names: Names by class id. Defaults to the ids.
        batch_size: Prediction batch size. Defaults to 256.
        split: The split's name, recorded in the result. Defaults to "test".

    Returns:
        `{"split", "labels", "matrix" (rows: true, columns: predicted),
        "accuracy", "num_samples"}`, or `None` for regression.
    """
    if task not in ("multiclass", "binary") or y is None or len(y) == 0:
        return None
    from kflow.data.pipeline import make_dataset

    y = np.asarray(y).astype("int64").reshape(-1)
    probs = model.predict(make_dataset(x, None, batch_size, training=False, cache=False),
                          verbose=0)
    pred = predicted_classes(probs, task)
    k = len(class_names) if class_names else int(max(y.max(), pred.max())) + 1
    matrix = np.zeros((k, k), dtype="int64")
    np.add.at(matrix, (y, np.clip(pred, 0, k - 1)), 1)
    return {
        "split": split,
        "labels": [str(c) for c in (class_names or range(k))],
        "matrix": matrix.tolist(),
        "accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
        "num_samples": int(matrix.sum()),
    }
