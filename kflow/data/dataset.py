"""`Dataset`: features, labels and what the task is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kflow.errors import DataError

__all__ = ["Dataset", "infer_task", "num_rows", "take_rows", "concat_datasets"]


def infer_task(y: np.ndarray) -> str:
    """Guesses the task from labels: 'binary', 'multiclass' or 'regression'."""
    y = np.asarray(y)
    if y.dtype.kind in "OUSb":
        return "binary" if len(np.unique(y)) == 2 else "multiclass"
    if y.dtype.kind in "iu":
        n = len(np.unique(y))
        return "binary" if n == 2 else "multiclass"
    return "regression"


def num_rows(x: Any) -> int:
    """The number of samples in `x`: an array, a DataFrame or a dict of columns."""
    if isinstance(x, dict):
        return len(next(iter(x.values()))) if x else 0
    return len(x)


def take_rows(x: Any, index: np.ndarray) -> Any:
    """The rows of `x` (array, DataFrame or dict of column arrays) at `index`."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[index] for k, v in x.items()}
    return x.iloc[index] if hasattr(x, "iloc") else x[index]


@dataclass
class Dataset:
    """Features and labels of a supervised problem.

    Args:
        x: Features: an array whose first axis is the sample, or (tabular
            data) a dict of named column arrays: float32 with NaN for missing
            numbers, strings with "" for missing categories.
        y: Labels: integer class ids (classification) or floats (regression).
        task: "multiclass", "binary" or "regression". Defaults to inferred from `y`.
        class_names: Names of the classes, index = class id. Defaults to `None`.
        feature_names: Names of the feature columns. Defaults to `None`.
        name: Dataset name for logs. Defaults to "data".
        meta: Facts about the source (file, column types...). Defaults to `{}`.
        split: A predefined split per row ("train", "val" or "test", e.g. from
            a split column), used by `train_val_test_split` instead of random
            fractions. Defaults to `None`.
        sample_weight: A loss weight per row (e.g. a table's weight column),
            or `None`. Defaults to `None`.
    """

    x: Any
    y: np.ndarray
    task: str = ""
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    name: str = "data"
    meta: dict[str, Any] = field(default_factory=dict)
    split: np.ndarray | None = None
    sample_weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y)
        n_x = num_rows(self.x)
        if n_x != len(self.y):
            raise DataError(
                f"Dataset '{self.name}' has {n_x} feature rows but {len(self.y)} labels; "
                "they must match."
            )
        if isinstance(self.x, dict):
            lengths = {k: len(v) for k, v in self.x.items()}
            if len(set(lengths.values())) > 1:
                raise DataError(
                    f"The feature columns of dataset '{self.name}' have different lengths "
                    f"({lengths}); every column needs one value per row."
                )
        if self.split is not None:
            self.split = np.asarray(self.split)
            if len(self.split) != len(self.y):
                raise DataError(
                    f"Dataset '{self.name}' has {len(self.split)} split assignments for "
                    f"{len(self.y)} rows; they must match."
                )
        if self.sample_weight is not None:
            self.sample_weight = np.asarray(self.sample_weight, dtype=np.float32)
            w = self.sample_weight
            if w.shape != (len(self.y),) or not np.isfinite(w).all() or (w < 0).any():
                raise DataError(
                    f"Dataset '{self.name}' needs one finite sample weight >= 0 per row "
                    f"({len(self.y)}); got shape {w.shape}, or values that are negative "
                    "or missing.")
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
        index = np.asarray(index)
        out = object.__new__(Dataset)
        out.__dict__.update(replace_dict(
            self, x=take_rows(self.x, index), y=self.y[index],
            split=None if self.split is None else self.split[index],
            sample_weight=(None if getattr(self, "sample_weight", None) is None
                           else self.sample_weight[index]),
        ))
        return out


def concat_datasets(parts: Sequence[Dataset | None]) -> Dataset:
    """Stacks the rows of datasets with the same columns (e.g. train + validation).

    `None` parts are skipped; the metadata of the first part is kept.
    """
    parts = [p for p in parts if p is not None]
    if not parts:
        raise DataError("concat_datasets() needs at least one dataset; got none.")
    first = parts[0]
    if isinstance(first.x, dict):
        x: Any = {k: np.concatenate([np.asarray(p.x[k]) for p in parts]) for k in first.x}
    elif hasattr(first.x, "iloc"):
        import pandas as pd

        x = pd.concat([p.x for p in parts])
    else:
        x = np.concatenate([np.asarray(p.x) for p in parts])
    split = (None if any(p.split is None for p in parts)
             else np.concatenate([p.split for p in parts]))
    weights = (None if any(getattr(p, "sample_weight", None) is None for p in parts)
               else np.concatenate([p.sample_weight for p in parts]))
    out = object.__new__(Dataset)
    out.__dict__.update(replace_dict(
        first, x=x, y=np.concatenate([p.y for p in parts]), split=split,
        sample_weight=weights,
    ))
    return out


def replace_dict(ds: Dataset, **changes: Any) -> dict[str, Any]:
    d = dict(ds.__dict__)
    d.update(changes)
    return d


_ = replace  # re-exported helper for callers that want full validation
