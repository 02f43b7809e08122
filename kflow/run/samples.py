"""`samples.npz`: the rows a run keeps so that exports never re-run recipe code.

Export checks each artifact against the Keras model on the run's own test
rows and calibrates int8 on training rows. Re-making the splits would mean
importing the recipe (code from whoever wrote the run directory) and loading
the data again (which may be gone). So training stores, once, up to
`MAX_TEST_ROWS` test rows (all of them for most data sets) and
`MAX_TRAIN_ROWS` training rows, exactly as the model takes them: one array,
or one array per named input (strings, NaN cells and all). The file is a
plain NumPy archive read with `allow_pickle=False`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kflow.run.atomic import atomic_save
from kflow.run.layout import RunDir

__all__ = ["RunSamples", "write_samples", "read_samples", "MAX_TEST_ROWS", "MAX_TRAIN_ROWS"]

#: Test rows kept (a seeded sample when the split is larger).
MAX_TEST_ROWS = 5000
#: Training rows kept for int8 calibration.
MAX_TRAIN_ROWS = 1000


@dataclass
class RunSamples:
    """Rows of a run: test inputs and targets, training inputs (`reason` says why not).

    Attributes:
        test_x: Test inputs (an array, or `{input name: array}`), or `None`.
        test_y: Test targets, or `None`.
        train_x: Training inputs (int8 calibration), or `None`.
        test_rows_total: Rows of the whole test split.
        reason: Why there are no rows (empty when there are).
    """

    test_x: Any = None
    test_y: Any = None
    train_x: Any = None
    test_rows_total: int = 0
    reason: str = ""


def _rows(x: Any, n: int, seed: int) -> tuple[Any, int]:
    total = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    index = (np.arange(total) if total <= n else
             np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False)))
    if isinstance(x, dict):
        return {k: np.asarray(v)[index] for k, v in x.items()}, total
    return np.asarray(x)[index], total


def _put(arrays: dict[str, np.ndarray], prefix: str, x: Any) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            v = np.asarray(v)
            arrays[f"{prefix}/{k}"] = v.astype(str) if v.dtype == object else v
    else:
        arrays[prefix] = np.asarray(x)


def write_samples(rd: RunDir, test: Any, train: Any, seed: int = 0) -> None:
    """Writes `samples.npz` from the test part (or validation) and the training part."""
    arrays: dict[str, np.ndarray] = {}
    if test is not None:
        test_x, total = _rows(test.x, MAX_TEST_ROWS, seed)
        test_y, _ = _rows(test.y, MAX_TEST_ROWS, seed)
        _put(arrays, "test_x", test_x)
        arrays["test_y"] = np.asarray(test_y)
        arrays["test_rows_total"] = np.asarray(total)
    train_x, _ = _rows(train.x, MAX_TRAIN_ROWS, seed + 1)
    _put(arrays, "train_x", train_x)

    def save(path: str) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_save(rd.samples, save)


def _get(files: Any, prefix: str) -> Any:
    if prefix in files:
        return files[prefix]
    cols = {k.split("/", 1)[1]: files[k] for k in files if k.startswith(prefix + "/")}
    return cols or None


def read_samples(path: str | Path) -> RunSamples:
    """Reads a run's `samples.npz` (`reason` set when it is missing or unreadable)."""
    rd = RunDir(path)
    if not rd.samples.is_file():
        return RunSamples(reason=f"the run has no {rd.samples.name} (trained by an older kflow)")
    try:
        with np.load(rd.samples, allow_pickle=False) as npz:
            files = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        return RunSamples(reason=f"{rd.samples.name} is unreadable ({exc})")
    test_x = _get(files, "test_x")
    return RunSamples(
        test_x=test_x, test_y=files.get("test_y"), train_x=_get(files, "train_x"),
        test_rows_total=int(files.get("test_rows_total", 0)),
        reason="" if test_x is not None else "the run has no test or validation split",
    )
