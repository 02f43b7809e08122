"""scikit-learn's bundled datasets (no download)."""

from __future__ import annotations

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import UnknownNameError, did_you_mean

__all__ = ["load_sklearn", "SKLEARN_DATASETS"]

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")


def load_sklearn(name: str, *, images: bool = False) -> Dataset:
    """Loads one of scikit-learn's bundled datasets.

    Args:
        name: One of digits, iris, wine, breast_cancer, diabetes.
        images: For digits, return 8x8x1 images instead of 64 flat features.
            Defaults to `False`.

    Example:

    ```python
    ds = kflow.data.load_sklearn("iris")
    ds.x.shape, ds.num_classes  # ((150, 4), 3)
    ```
    """
    from sklearn import datasets

    key = name.replace("-", "_").lower()
    if key not in SKLEARN_DATASETS:
        raise UnknownNameError(
            f"Unknown scikit-learn dataset '{name}'{did_you_mean(name, SKLEARN_DATASETS)}. "
            f"Allowed: {', '.join(SKLEARN_DATASETS)}."
        )
    bunch = getattr(datasets, f"load_{key}")()
    x = np.asarray(bunch.data, dtype="float32")
    feature_names = [str(f) for f in getattr(bunch, "feature_names", [])] or None
    if key == "diabetes":
        return Dataset(x, np.asarray(bunch.target, "float32"), task="regression",
                       feature_names=feature_names, name=key)
    y = np.asarray(bunch.target, dtype="int64")
    class_names = [str(c) for c in bunch.target_names]
    if key == "digits" and images:
        x = x.reshape(-1, 8, 8, 1)
        feature_names = None
    task = "binary" if len(class_names) == 2 else "multiclass"
    return Dataset(x, y, task=task, class_names=class_names,
                   feature_names=feature_names, name=key)
