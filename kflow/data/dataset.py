"""`Dataset`: features, labels and what the task is."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kflow.errors import DataError

__all__ = ["Dataset", "infer_task"]


def infer_task(y: np.ndarray) -> str:
    """Guesses the task from labels: 'binary', 'multiclass' or 'regression'."""
    y = np.asarray(y)
    if y.dtype.kind in "OUSb":
        return "binary" if len(np.unique(y)) == 2 else "multiclass"
    if y.dtype.kind in "iu":
        n = len(np.unique(y))
        return "binary" if n == 2 else "multiclass"
    return "regression"


@dataclass
class Dataset:
    """Features and labels of a supervised problem.

    Args:
        x: Feature array, first axis is the sample.
        y: Labels: integer class ids (classification) or floats (regression).
        task: "multiclass", "binary" or "regression". Defaults to inferred from `y`.
        class_names: Names of the classes, index = class id. Defaults to `None`.
        feature_names: Names of the feature columns. Defaults to `None`.
        name: Dataset name for logs. Defaults to "data".
    """

    x: Any
    y: np.ndarray
    task: str = ""
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    name: str = "data"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y)
        n_x = len(self.x)
        if n_x != len(self.y):
            raise DataError(
                f"Dataset '{self.name}' has {n_x} feature rows but {len(self.y)} labels; "
                "they must match."
            )
        if self.y.dtype.kind == "f" and np.isnan(self.y).any():
            rows = np.flatnonzero(np.isnan(self.y))[:10].tolist()
            raise DataError(
                f"Dataset '{self.name}' has NaN labels at rows {rows}; drop or fix those rows."
            )
        if not self.task:
            self.task = infer_task(self.y)
        if self.task not in ("multiclass", "binary", "regression"):
            raise DataError(
                f"Dataset task must be one of: multiclass, binary, regression. "
                f"Got {self.task!r} instead."
            )
        if self.task in ("multiclass", "binary"):
            n = len(np.unique(self.y))
            if n < 2:
                raise DataError(
                    f"Dataset '{self.name}' has labels of one class only "
                    f"({np.unique(self.y).tolist()}); classification needs at least two."
                )

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return int(np.max(self.y)) + 1

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> Dataset:
        """The rows at `index`, keeping the metadata (no validation of class counts)."""
        x = self.x.iloc[index] if hasattr(self.x, "iloc") else self.x[index]
        out = object.__new__(Dataset)
        out.__dict__.update(replace_dict(self, x=x, y=self.y[index]))
        return out


def replace_dict(ds: Dataset, **changes: Any) -> dict[str, Any]:
    d = dict(ds.__dict__)
    d.update(changes)
    return d


_ = replace  # re-exported helper for callers that want full validation
