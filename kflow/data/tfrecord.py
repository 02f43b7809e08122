"""TFRecord files of `tf.train.Example` rows, streamed like a CSV file.

`TFRecordStream` is a `CsvStream` whose chunks come from TFRecord files
instead of a CSV file: one record is one table row, one feature of the
record one column (one value: a `float_list`, `int64_list` or `bytes_list`
of length 1; an absent feature or an empty list is a missing value). So
everything else is the CSV stream's: the split (the in-memory stratified
split up to `SKLEARN_SPLIT_ROWS` labelled records, else the hashed
per-class split of `kflow.data.streaming`, by record number in the files
taken in sorted order), the preprocessing fitted on a sample of the
training split and saved inside the model, the column types (numeric,
boolean, categorical, inferred on that sample or set with `column_types`),
and the per-epoch order.

- **Files**: one file, a folder (every `*.tfrecord`, `*.tfrecords`,
  `*.tfr` file in it, `.gz` too) or a glob (`data/part-*.tfrecord`), read in
  sorted file-name order. Files ending in `.gz` are GZIP-compressed.
- **Columns**: the features seen in the first `SCHEMA_RECORDS` records, with
  the wire type of their values; the column order is `features` when given,
  else the features sorted by name (a record's features have no order).
  Bytes are UTF-8 text (categories, yes/no, class names), `int64` whole
  numbers, `float` 32-bit numbers.

Example:

```python
stream = kflow.data.tfrecord.TFRecordStream("data/*.tfrecord", target="label")
splits = stream.stream_splits(0.15, 0.15, seed=0)
```
"""

from __future__ import annotations

import glob as globbing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kflow.data.streaming import CsvStream
from kflow.errors import DataError

__all__ = ["TFRecordStream", "is_tfrecord_path", "tfrecord_files", "SUFFIXES"]

#: File name endings read as TFRecord files (each also with `.gz`).
SUFFIXES = (".tfrecord", ".tfrecords", ".tfr")
#: Records read to find the features and their types.
SCHEMA_RECORDS = 1000


def _is_tfrecord_name(name: str) -> bool:
    name = name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return name.endswith(SUFFIXES)


def is_tfrecord_path(path: str | Path) -> bool:
    """Whether `path` names TFRecord input: such a file, a glob of them, or a folder of them."""
    path = Path(path)
    if _is_tfrecord_name(path.name):
        return True
    return path.is_dir() and any(_is_tfrecord_name(p.name) for p in path.iterdir())


def tfrecord_files(path: str | Path) -> list[str]:
    """The TFRecord files of a file, folder or glob, sorted; a `DataError` when none."""
    path = Path(path)
    if path.is_dir():
        files = [str(p) for p in path.iterdir() if p.is_file() and _is_tfrecord_name(p.name)]
    elif globbing.has_magic(str(path)):
        files = [f for f in globbing.glob(str(path)) if Path(f).is_file()]
    else:
        files = [str(path)] if path.is_file() else []
    if not files:
        raise DataError(f"No TFRecord file at '{path}' (a .tfrecord file, a folder of them, "
                        "or a glob such as data/part-*.tfrecord).")
    return sorted(files)


def _compression(files: Sequence[str]) -> str:
    gz = {f.lower().endswith(".gz") for f in files}
    if len(gz) > 1:
        raise DataError("Mix of GZIP (.gz) and plain TFRecord files; use one kind.")
    return "GZIP" if gz.pop() else ""


def _bad_file(files: Sequence[str], exc: Exception) -> DataError:
    what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    names = ", ".join(Path(f).name for f in files[:3]) + (" ..." if len(files) > 3 else "")
    return DataError(f"Could not read the TFRecord files ({names}): {what}. Each file must "
                     "be a TFRecord file (tf.io.TFRecordWriter; .gz for GZIP) of "
                     "tf.train.Example records with one value per feature.")


class TFRecordStream(CsvStream):
    """TFRecord files of `tf.train.Example` rows, read in chunks (see the module docstring).

    Takes `CsvStream`'s arguments; `path` is a TFRecord file, a folder of
    them, or a glob.
    """

    def _open(self, path: str | Path) -> list[str]:
        self.files = tfrecord_files(path)
        self.compression = _compression(self.files)
        self.path = Path(self.files[0]) if len(self.files) == 1 else Path(path)
        self.wire_types = self._schema()
        if getattr(self, "_declared_features", None) is None:
            return sorted(self.wire_types)
        return list(self.wire_types)

    def __init__(self, path: str | Path, target: str, *, features: Sequence[str] | None = None,
                 **kwargs: Any):
        self._declared_features = list(features) if features is not None else None
        super().__init__(path, target, features=features, **kwargs)
        unknown = [c for c in self.features if c not in self.wire_types]
        if unknown:
            raise DataError(f"Feature(s) {', '.join(map(repr, unknown))} are in none of the "
                            f"first {SCHEMA_RECORDS} records of '{self.path.name}'. Features: "
                            f"{', '.join(sorted(self.wire_types))}.")

    def _records(self, batch: int) -> Iterator[Any]:
        """Serialized records, `batch` at a time (NumPy arrays of bytes)."""
        import tensorflow as tf

        ds = tf.data.TFRecordDataset(self.files, compression_type=self.compression)
        try:
            for records in ds.batch(batch):
                yield records.numpy()
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
                tf.errors.NotFoundError, tf.errors.UnimplementedError) as exc:
            raise _bad_file(self.files, exc) from None

    def _schema(self) -> dict[str, str]:
        """`{feature: "float" | "int64" | "bytes"}` from the first `SCHEMA_RECORDS` records."""
        import tensorflow as tf

        types: dict[str, str] = {}
        records = next(self._records(SCHEMA_RECORDS), None)
        if records is None:
            raise DataError(f"The TFRecord files at '{self.path}' hold no records.")
        for i, raw in enumerate(records):
            try:
                example = tf.train.Example.FromString(raw)
            except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and others
                raise DataError(f"Record {i} of '{Path(self.files[0]).name}' is not a "
                                f"tf.train.Example ({type(exc).__name__}).") from None
            for name, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                if kind is None:
                    continue
                values = getattr(feature, kind).value
                if len(values) > 1:
                    raise DataError(f"Feature '{name}' of record {i} has {len(values)} values; "
                                    "a table row has one value per feature (write one "
                                    "feature per column).")
                kind = kind.replace("_list", "")
                if types.setdefault(name, kind) != kind:
                    raise DataError(f"Feature '{name}' is {types[name]} in one record and "
                                    f"{kind} in record {i}; one type per feature.")
        if not types:
            raise DataError(f"The first records of '{self.path.name}' have no features.")
        if self._declared_features is not None:  # the declared order first
            order = [c for c in self._declared_features if c in types]
            types = {c: types[c] for c in order + [c for c in types if c not in order]}
        return types

    def _frames(self, columns: Sequence[str]) -> Iterator[Any]:
        """`columns` as pandas frames of `chunk_rows` records, as `pandas.read_csv` gives them.

        Floats become float64, whole numbers int64 (float64 with NaN where a
        record lacks the value), bytes text (NaN where missing).
        """
        import pandas as pd
        import tensorflow as tf

        dtypes = {"float": tf.float32, "int64": tf.int64, "bytes": tf.string}
        spec = {c: tf.io.RaggedFeature(dtypes[self.wire_types[c]]) for c in columns}
        for records in self._records(self.chunk_rows):
            try:
                parsed = tf.io.parse_example(records, spec)
            except (tf.errors.InvalidArgumentError, ValueError) as exc:
                raise _bad_file(self.files, exc) from None
            frame = {}
            for c in columns:
                lengths = parsed[c].row_lengths().numpy()
                values = parsed[c].flat_values.numpy()
                if (lengths > 1).any():
                    raise DataError(f"Feature '{c}' has {int(lengths.max())} values in a "
                                    "record; a table row has one value per feature.")
                one = lengths == 1
                kind = self.wire_types[c]
                if kind == "bytes":
                    column = np.full(len(records), np.nan, object)
                    column[one] = [v.decode("utf-8", "replace") for v in values]
                elif kind == "int64" and one.all():
                    column = values
                else:
                    column = np.full(len(records), np.nan, np.float64)
                    column[one] = values
                frame[c] = column
            yield pd.DataFrame(frame, columns=list(columns))
