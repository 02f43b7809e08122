"""Time series as supervised windows, split in time order.

`load_windows` turns a table of time steps into `(window, features)`
inputs and `(horizon * targets)` outputs, and assigns each window to
train, validation or test by *time*: the first part of the series trains,
the next validates, the last tests. A window whose input or target span
crosses a boundary is dropped, so no value of a later part is ever seen
by an earlier one (shuffling happens inside the training part only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import DataError

__all__ = ["make_windows", "load_windows", "time_split_labels"]


def make_windows(values: np.ndarray, targets: np.ndarray, window: int, horizon: int = 1,
                 stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sliding windows over a series.

    Args:
        values: Inputs `(steps, features)`.
        targets: Targets `(steps, targets)`.
        window: Input steps per window.
        horizon: Future steps to predict after each window. Defaults to 1.
        stride: Steps between window starts. Defaults to 1.

    Returns:
        `x (n, window, features)`, `y (n, horizon * targets)` and the index
        of each window's first step `(n,)`.
    """
    steps = len(values)
    starts = np.arange(0, steps - window - horizon + 1, stride)
    if len(starts) == 0:
        raise DataError(f"A series of {steps} steps is too short for window={window} and "
                        f"horizon={horizon}.")
    x = np.stack([values[s:s + window] for s in starts]).astype("float32")
    y = np.stack([targets[s + window:s + window + horizon].reshape(-1)
                  for s in starts]).astype("float32")
    return x, y, starts


def time_split_labels(starts: np.ndarray, window: int, horizon: int, steps: int,
                      val_fraction: float, test_fraction: float) -> np.ndarray:
    """"train"/"val"/"test"/"" per window: parts in time order, straddling windows dropped ("")."""
    val_start = int(round(steps * (1 - val_fraction - test_fraction)))
    test_start = int(round(steps * (1 - test_fraction)))
    first, last = starts, starts + window + horizon - 1
    labels = np.full(len(starts), "", dtype=object)
    labels[last < val_start] = "train"
    labels[(first >= val_start) & (last < test_start)] = "val"
    labels[first >= test_start] = "test"
    return labels


def load_windows(source: Any, *, features: list[str], targets: list[str], window: int,
                 horizon: int = 1, stride: int = 1, time_column: str | None = None,
                 val_fraction: float = 0.15, test_fraction: float = 0.15) -> Dataset:
    """A time-series table as a regression `Dataset` of windows with a time-ordered split.

    Example:

    ```python
    ds = load_windows("sunspots.csv", features=["sunspots"], targets=["sunspots"],
                      window=24, time_column="year")
    ds.x.shape, ds.split[:3]     # (n, 24, 1), ['train', 'train', 'train']
    ```

    Args:
        source: CSV/Parquet path, DataFrame or dict of columns.
        features: Input columns.
        targets: Columns to forecast.
        window: Input steps.
        horizon: Steps ahead to forecast. Defaults to 1.
        stride: Steps between windows. Defaults to 1.
        time_column: Sorts the rows by this column first. Defaults to `None`
            (file order).
        val_fraction: Share of the series (by time) for validation.
        test_fraction: Share of the series (the end) for the test.

    Returns:
        A `Dataset` with `split` set; `meta` records the columns and window.
    """
    from kflow.data.tabular import read_table

    frame, name = read_table(source)
    for column in [*features, *targets, *([time_column] if time_column else [])]:
        if column not in frame.columns:
            raise DataError(f"{name} has no column '{column}'. Columns: "
                            f"{', '.join(map(str, frame.columns))}.")
    if time_column:
        frame = frame.sort_values(time_column, kind="stable")
    values = frame[features].to_numpy(dtype="float32")
    target_values = frame[targets].to_numpy(dtype="float32")
    if np.isnan(values).any() or np.isnan(target_values).any():
        raise DataError(f"{name} has missing values in {features + targets}; fill or drop "
                        "them before windowing (a gap would silently shift the windows).")
    x, y, starts = make_windows(values, target_values, window, horizon, stride)
    labels = time_split_labels(starts, window, horizon, len(frame), val_fraction, test_fraction)
    keep = labels != ""
    return Dataset(x[keep], y[keep], task="regression", feature_names=list(features),
                   name=str(name).rsplit(".", 1)[0], split=labels[keep].astype(str),
                   meta={"features": list(features), "targets": list(targets),
                         "window": window, "horizon": horizon, "stride": stride,
                         "target_index": [features.index(t) if t in features else None
                                          for t in targets]})
