"""`HistoryCSV`: one row per epoch in `history.csv`, epochs counted from 1.

`keras.callbacks.CSVLogger` writes the 0-based epoch index, while kflow's
messages, `metrics.json` (`best_epoch`, `epochs_run`) and the doctor count
epochs from 1. This callback writes the same columns as `CSVLogger` with
`epoch` counting from 1, appends each row with a single write and a flush
(a kill leaves whole rows, or at most one partial last line that
`truncate_history` drops), and `truncate_history` cuts the file back to the
epochs a resumed run keeps.
"""

from __future__ import annotations

import collections.abc
import csv
import io
from pathlib import Path
from typing import Any

import keras
import numpy as np

__all__ = ["HistoryCSV", "truncate_history", "EPOCH"]

#: The first column: the 1-based epoch number.
EPOCH = "epoch"
#: What a row holds for a column its epoch did not log (as `CSVLogger` writes it).
MISSING = "NA"


def _cell(value: Any) -> Any:
    """A log value as `CSVLogger` writes it (1-D iterables as "[a, b]")."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, collections.abc.Iterable):
        return f"[{', '.join(map(str, value))}]"
    return value


def _epoch_of(line: str, separator: str) -> int | None:
    """The epoch number of a data line, or `None` for a partial or foreign line."""
    if not line.endswith("\n"):
        return None
    head = line.split(separator, 1)[0].strip()
    return int(head) if head.isdigit() else None


def truncate_history(path: str | Path, keep_epochs: int, separator: str = ",") -> int:
    """Keeps the header and the rows of epochs <= `keep_epochs` of a history CSV.

    A resumed run calls it before training with the number of epochs its
    backup holds, so that the epochs it trains again are not listed twice.
    A partial last line (a kill while writing) and lines that are not rows
    are dropped too. The file is rewritten atomically, only when something
    changes; a missing file is left missing.

    Args:
        path: The CSV file (`history.csv`).
        keep_epochs: The last epoch (1-based) to keep; 0 keeps the header only.
        separator: The column separator. Defaults to ",".

    Returns:
        The number of rows kept.

    Example:

    ```python
    truncate_history("runs/digits-cnn-1a2b3c4d/history.csv", keep_epochs=4)
    ```
    """
    from kflow.run import atomic_write_text

    if isinstance(keep_epochs, bool) or not isinstance(keep_epochs, int) or keep_epochs < 0:
        raise ValueError(f"keep_epochs must be an int >= 0. Got {keep_epochs!r} instead.")
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return 0
    header = lines[0] if lines[0].endswith("\n") else ""
    rows = []
    for line in lines[1:]:
        epoch = _epoch_of(line, separator)
        if epoch is not None and 1 <= epoch <= keep_epochs:
            rows.append(line)
    kept = ([header] if header else []) + rows
    if kept != lines:
        atomic_write_text(path, "".join(kept))
    return len(rows)


class HistoryCSV(keras.callbacks.Callback):
    """Streams each epoch's logs to a CSV file, with `epoch` counting from 1.

    The columns are those of `keras.callbacks.CSVLogger`: `epoch`, then the
    first epoch's log keys sorted (with a `val_` twin for each when the
    first epoch has no validation logs). A key that first appears in a
    later epoch adds a column: the file is rewritten once with the wider
    header, earlier rows holding "NA" there. Each row is written with one
    `write` and flushed, so other programs (and a resumed run) read whole
    rows while training runs.

    Args:
        path: The CSV file; its folder is created when missing.
        append: Continue an existing file (a resumed run) instead of
            replacing it. Call `truncate_history` first so that epochs
            trained again are not listed twice.
        separator: The column separator. Defaults to ",".

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[HistoryCSV("history.csv", append=False)])
    # history.csv: epoch,loss,val_loss
    #              1,0.91,0.88
    ```
    """

    def __init__(self, path: str | Path, append: bool = False, separator: str = ","):
        super().__init__()
        self.path = Path(path)
        self.append = append
        self.separator = separator
        self.keys: list[str] | None = None

    # -- file -------------------------------------------------------------------
    def _format(self, rows: list[dict[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[EPOCH, *self.keys], delimiter=self.separator,
                                restval=MISSING, extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def _read_existing(self) -> tuple[list[str] | None, list[dict[str, str]]]:
        """The columns (without `epoch`) and rows of the file to continue."""
        if not self.path.is_file():
            return None, []
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f, delimiter=self.separator)
            columns = [c for c in (reader.fieldnames or []) if c != EPOCH]
            rows = list(reader)
        return (columns or None), rows

    def _append(self, text: str) -> None:
        with self.path.open("a", newline="") as f:
            f.write(text)  # one write per row: readers never see half a row's columns
            f.flush()

    # -- callback hooks -----------------------------------------------------------
    def on_train_begin(self, logs=None):
        from kflow.run import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.keys = None
        if self.append:
            self.keys, _ = self._read_existing()
            if self.keys is not None:
                text = self.path.read_text()
                if not text.endswith("\n"):  # a partial last line from a kill
                    atomic_write_text(self.path, text[: text.rfind("\n") + 1])
                return
        atomic_write_text(self.path, "")  # CSVLogger's "w": start empty

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {EPOCH: epoch + 1, **{k: _cell(v) for k, v in logs.items()}}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
            self._append(self._format([row], header=True))
            return
        new = [k for k in sorted(logs) if k not in self.keys]
        if new:
            self._widen(new)
        self._append(self._format([row], header=False))

    def _widen(self, new_keys: list[str]) -> None:
        """Rewrites the file with the new columns added (earlier rows: "NA")."""
        from kflow.run import atomic_write_text

        _, rows = self._read_existing()
        self.keys = [*self.keys, *new_keys]
        atomic_write_text(self.path, self._format(rows, header=True))
