"""`history.csv`: one row per epoch, epochs counted from 1 (as kflow's messages count)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import keras

from kflow.run import atomic_write_text

__all__ = ["HistoryCSV", "truncate_history"]


class HistoryCSV(keras.callbacks.Callback):
    """Appends each epoch's logs to a CSV file, `epoch` first and counting from 1.

    Args:
        path: The CSV file.
        append: Continue an existing file (a resumed run). Defaults to `False`.
    """

    def __init__(self, path: str | Path, append: bool = False):
        super().__init__()
        self.path = Path(path)
        self.append = append
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.append and self.path.is_file():
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            self._keys = [k for k in header[1:]] if header else None
        else:
            self._keys = None
            if self.path.exists():
                self.path.unlink()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        if self._keys is None:
            self._keys = sorted(logs)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(["epoch", *self._keys])
        row = [epoch + 1] + [_cell(logs.get(k)) for k in self._keys]
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(row)
            f.flush()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return "nan" if math.isnan(value) else repr(value)


def truncate_history(path: str | Path, keep_epochs: int) -> None:
    """Keeps the header and the rows of epochs 1..`keep_epochs` (for a resumed run)."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].strip().isdigit()
                        and 1 <= int(r[0]) <= keep_epochs]
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept)
    atomic_write_text(path, out.getvalue())
