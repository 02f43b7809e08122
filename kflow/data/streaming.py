"""Data larger than memory: CSV (or TFRecord) files read in chunks, image folders per batch.

`CsvStream` never holds the table. Setting up reads the label column once
(to count the classes: the task, the class names, rows per class) and the
file once more for the samples; each epoch reads it once more. What it keeps
in memory does not grow with the file beyond `SKLEARN_SPLIT_ROWS` labelled
rows: the class counts, a sample of at most `sample_rows` training rows and
of `HELD_OUT_SAMPLE_ROWS` validation and test rows. (Up to
`SKLEARN_SPLIT_ROWS` rows it keeps one label a row and each split's row
numbers, 5 bytes a row, to split exactly as in memory.)

- **Splits**: up to `SKLEARN_SPLIT_ROWS` labelled rows, the same stratified,
  seeded `train_val_test_split` as in-memory data (it only needs the
  labels), so a file gives the same train/val/test rows streamed or loaded
  whole. Above, a hashed stratified split that stores nothing per row:
  each class's rows, numbered in file order, are permuted by a seeded
  pseudo-random permutation (`_permute`) and cut with the in-memory split's
  counts (round(n_c * test_fraction) test, round(n_c * val_fraction)
  validation, the rest training); a row's part is computed as the file is
  read, the same on every epoch, run and resume with the same seed.
- **Preprocessing** (imputation, scaling, vocabularies) is fitted, as for
  in-memory tables, by the recipe's `build_model(train)` on `train.x`: here
  a uniform random sample of `sample_rows` training rows (all of them when
  the split is smaller), stated in `run.json` (`meta.preprocessing_fitted_on`).
- **Evaluation**: metrics are computed over the whole streamed splits; for a
  hashed split the confusion matrix too (`StreamPart.confusion_matrix`).
- **Order**: each epoch reads the chunks in file order and shuffles the rows
  within each chunk of `chunk_rows` rows, keyed by `(seed, epoch, chunk)`, so
  a resumed run sees the same batches. This is a weaker shuffle than the
  in-memory pipeline's full permutation; keep `chunk_rows` large, or shuffle
  the file once beforehand if it is sorted (e.g. by label).
- **Columns** are converted exactly as `load_table` converts them (the same
  function), with the column types inferred on the sample; `missing: drop`
  is not available (it would need the whole column).

Example:

```python
stream = kflow.data.streaming.CsvStream("big.csv", target="label")
splits = stream.stream_splits(0.15, 0.15, seed=0)   # what the trainer calls
ds = splits.train.tf_dataset(batch_size=256, training=True, seed=0)
```
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import ConfigError, DataError

#: Above this many labelled rows, `CsvStream` splits with its own hashed stratified split.
SKLEARN_SPLIT_ROWS = 2_000_000
#: Rows of the validation and test samples of a hashed split (kflow.run.samples keeps 5000).
HELD_OUT_SAMPLE_ROWS = 5000

__all__ = ["CsvStream", "StreamPart", "StreamSplits", "ImageFolderStream", "ImagePart"]


@dataclass
class StreamSplits:
    train: StreamPart
    val: StreamPart | None
    test: StreamPart | None


class StreamPart:
    """One split of a `CsvStream`: `len()` rows, `x`/`y` a sample, batches via `tf_dataset`.

    It stands where the trainer expects a `Dataset`: `x`, `y`, `task`,
    `class_names`, `feature_names`, `num_classes` describe the sample the
    preprocessing is fitted on (and the insight probes use); `len()` and
    `tf_dataset` are the whole split, streamed.
    """

    streaming = True
    split = None

    def __init__(self, stream: CsvStream, rows: np.ndarray | None, sample: Dataset, *,
                 part: int | None = None, count: int | None = None):
        self.stream = stream
        if rows is not None:  # the split's row numbers (files of <= SKLEARN_SPLIT_ROWS rows)
            rows = np.asarray(rows)
            rows = rows if np.all(rows[1:] >= rows[:-1]) else np.sort(rows)
        self.rows, self.part = rows, part  # else: part 0/1/2 of a hashed split, `count` rows
        self.count = len(rows) if rows is not None else int(count)
        self.sample = sample
        self.x, self.y = sample.x, sample.y
        self.task, self.class_names = sample.task, sample.class_names
        self.feature_names, self.name = sample.feature_names, sample.name
        self.meta = {**sample.meta, "streaming": True, "rows": self.count,
                     "preprocessing_fitted_on": f"a uniform sample of {len(sample)} of "
                     f"{self.count} rows"}
        self.sample_weight = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 1

    def __len__(self) -> int:
        return self.count

    def subset(self, index: np.ndarray) -> Dataset:
        return self.sample.subset(index)

    def confusion_matrix(self, model: Any, batch_size: int = 2048) -> dict[str, Any] | None:
        """`kflow.insight.confusion.confusion_matrix` over the whole split, streamed."""
        from kflow.insight.confusion import predicted_classes

        if self.task not in ("multiclass", "binary"):
            return None
        k = len(self.class_names)
        matrix = np.zeros((k, k), dtype="int64")
        for x, y in self.tf_dataset(batch_size, training=False):
            pred = predicted_classes(model.predict_on_batch(x), self.task)
            np.add.at(matrix, (y.numpy().astype("int64"), np.clip(pred, 0, k - 1)), 1)
        return {"split": "test", "labels": [str(c) for c in self.class_names],
                "matrix": matrix.tolist(),
                "accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
                "num_samples": int(matrix.sum())}

    def tf_dataset(self, batch_size: int, *, training: bool, seed: int = 0,
                   epoch: Any = None, class_weight: Any = "none") -> Any:
        """`(x, y)` batches (`(x, y, w)` with weights) of this split, read chunk by chunk."""
        import tensorflow as tf

        from kflow.training.features import class_weights

        stream = self.stream
        per_class = None
        if class_weight not in (None, "none") and stream.task != "regression":
            if self.rows is not None:
                per_class = class_weights(stream.labels[self.rows], class_weight,
                                          stream.class_names, len(stream.class_names))
            else:  # from the class counts (the same weights, without a label per row)
                counts = stream._part_class_counts[self.part]
                per_class = class_weights(np.arange(len(counts)), class_weight,
                                          stream.class_names, len(counts))
                if class_weight == "balanced":
                    per_class = np.where(counts > 0, counts.sum() / (
                        len(counts) * np.maximum(counts, 1)), 1.0).astype(np.float32)
        weighted = per_class is not None or stream.weight_column is not None
        keys = stream.keys

        def read() -> Iterator[tuple]:
            if self.rows is None:
                yield from stream.read_part(self.part)
                return
            for first, x, weights in stream.read(self.rows):
                rows = self.rows[first:first + len(next(iter(x.values())))]
                yield x, stream.labels[rows], weights

        def chunks() -> Iterator[tuple]:
            epoch_no = (epoch.epoch if hasattr(epoch, "epoch")
                        else int(epoch or 0))
            for index, (x, y, weights) in enumerate(read()):
                y = y.astype(np.float32 if stream.task == "regression" else np.int64)
                w = np.ones(len(y), np.float32) if weights is None else weights
                if per_class is not None:
                    w = w * per_class[y.astype(np.int64)]
                if training:
                    order = np.random.default_rng([seed, epoch_no, index]).permutation(len(y))
                    x = {k: v[order] for k, v in x.items()}
                    y, w = y[order], w[order]
                yield (x, y, w) if weighted else (x, y)

        x_spec = {k: tf.TensorSpec([None], tf.as_dtype(stream.dtypes[k])) for k in keys}
        y_dtype = tf.float32 if stream.task == "regression" else tf.int64
        signature = (x_spec, tf.TensorSpec([None], y_dtype))
        if weighted:
            signature += (tf.TensorSpec([None], tf.float32),)
        ds = tf.data.Dataset.from_generator(chunks, output_signature=signature)
        ds = ds.rebatch(batch_size).apply(
            tf.data.experimental.assert_cardinality(math.ceil(self.count / batch_size)))
        return ds.prefetch(tf.data.AUTOTUNE)


class CsvStream:
    """A CSV table read in chunks (see the module docstring).

    Args:
        path: The CSV file.
        target: The label column.
        features: Feature columns. Defaults to all but the target and
            `weight_column`.
        column_types: Column type overrides, as for `load_table`.
        missing: "mean", "median", "most_frequent" or "constant" (not "drop").
        missing_by_column: Per-column overrides of `missing`.
        fill_value: The fill value of "constant".
        task: "auto", "multiclass", "binary" or "regression".
        weight_column: A column of per-row loss weights. Defaults to `None`.
        drop_missing_labels: Leave out rows without a label instead of
            raising. Defaults to `False`.
        chunk_rows: Rows per chunk read (and shuffled together). Defaults to
            65536.
        sample_rows: Training rows the preprocessing is fitted on. Defaults
            to 100_000.
        seed: Seed of the preprocessing sample. Defaults to 0.
    """

    def __init__(self, path: str | Path, target: str, *, features: Sequence[str] | None = None,
                 column_types: Mapping[str, str] | None = None, missing: str = "mean",
                 missing_by_column: Mapping[str, str] | None = None, fill_value: float = 0.0,
                 task: str = "auto", weight_column: str | None = None,
                 drop_missing_labels: bool = False, chunk_rows: int = 65536,
                 sample_rows: int = 100_000, seed: int = 0):
        if "drop" in [missing, *(missing_by_column or {}).values()]:
            raise ConfigError("missing: drop is not available for streamed tables (it needs "
                              "whole columns); use mean, median, most_frequent or constant.")
        for name, value in (("chunk_rows", chunk_rows), ("sample_rows", sample_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1. Got {value!r}.")
        self.target, self.weight_column = target, weight_column
        self.missing, self.missing_by_column = missing, dict(missing_by_column or {})
        self.fill_value, self.drop_missing_labels = float(fill_value), drop_missing_labels
        self.chunk_rows, self.sample_rows, self.seed = chunk_rows, sample_rows, seed
        header = self._open(path)
        for col, what in ((target, "Target column"), (weight_column, "Weight column")):
            if col is not None and col not in header:
                raise ConfigError(f"{what} '{col}' is not a column of '{self.path.name}'. "
                                  f"Columns: {', '.join(header)}.")
        self.features = list(features) if features is not None else [
            c for c in header if c not in (target, weight_column)]
        self.column_types = dict(column_types or {})
        self._scan_labels(task)

    def _open(self, path: str | Path) -> list[str]:
        """Checks the source, sets `self.path`; returns the column names."""
        import pandas as pd

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"CSV file '{self.path}' does not exist.")
        return [str(c) for c in pd.read_csv(self.path, nrows=0).columns]

    # -- pass 1: the labels -----------------------------------------------------------------
    def _frames(self, columns: Sequence[str]) -> Iterator[Any]:
        """The file's `columns`, as pandas frames of `chunk_rows` rows, in file order."""
        import pandas as pd

        yield from pd.read_csv(self.path, usecols=list(columns), chunksize=self.chunk_rows)

    def _present(self, s: Any) -> np.ndarray:
        return (s.notna() & (s.astype(str).str.strip() != "")).to_numpy()

    def _scan_labels(self, task: str) -> None:
        """Counts the labels (classes, task, rows per class): no per-row memory.

        Files of at most `SKLEARN_SPLIT_ROWS` labelled rows then read the label
        column once more into `self.labels` (one class id a row) for the
        in-memory split; larger files keep only the counts (see `_split_rows`).
        """
        import pandas as pd

        from kflow.data.tabular import infer_target_task

        text: dict[str, int] = {}
        numbers: dict[float, int] = {}
        offset = missing = 0
        is_numeric = True
        head = None
        for chunk in self._frames([self.target]):
            s = chunk[self.target]
            if head is None:
                head = s
                if task == "auto":
                    task = infer_target_task(head)
            present = self._present(s)
            if not present.all() and not self.drop_missing_labels:
                rows = (np.flatnonzero(~present) + offset)[:10].tolist()
                raise DataError(f"Target column '{self.target}' of '{self.path.name}' has "
                                f"missing values at rows {rows} (0-based); fill them in, or set "
                                "drop_missing_labels: true.")
            missing += int((~present).sum())
            s = s[present]
            parsed = pd.to_numeric(s, errors="coerce")
            if is_numeric and not parsed.notna().all():
                is_numeric = False
            if is_numeric and task != "regression":
                for value, n in zip(*np.unique(parsed.to_numpy(np.float32),
                                               return_counts=True), strict=True):
                    numbers[float(value)] = numbers.get(float(value), 0) + int(n)
            if task != "regression":
                for value, n in s.astype(str).str.strip().value_counts(sort=False).items():
                    text[str(value)] = text.get(str(value), 0) + int(n)
                if len(text) > 30000 and not is_numeric:
                    raise DataError(f"Target column '{self.target}' of '{self.path.name}' has "
                                    "more than 30000 distinct text values; not a label.")
            offset += len(chunk)
        self.num_rows = offset
        self.row_type = np.int32 if offset < 2**31 else np.int64
        self.num_valid = offset - missing
        if head is None or self.num_valid == 0:
            raise DataError(f"'{self.path.name}' has no rows with a label.")
        self.task = task
        self._numeric_labels = is_numeric
        if task == "regression":
            if not is_numeric:
                raise DataError(f"Target column '{self.target}' of '{self.path.name}' is not "
                                "numeric; set task to binary or multiclass.")
            self.class_names = None
            self._classes: Any = None
            self.class_counts = np.array([self.num_valid], np.int64)
        elif is_numeric:
            values = np.array(sorted(numbers), np.float32)
            whole = bool(np.all(values % 1 == 0))
            self._classes = np.unique(values.astype(np.int64) if whole else values)
            self.class_names = [str(c) for c in self._classes]
            self.class_counts = np.zeros(len(self._classes), np.int64)
            np.add.at(self.class_counts, np.searchsorted(self._classes, values),
                      [numbers[float(v)] for v in values])
        else:
            self.class_names = sorted(text)
            self._classes = {name: i for i, name in enumerate(self.class_names)}
            self.class_counts = np.array([text[n] for n in self.class_names], np.int64)
        if task != "regression" and len(self.class_names) < 2:
            raise DataError(f"Target column '{self.target}' of '{self.path.name}' has one "
                            "class only; classification needs at least two.")
        self._label_type = (np.float32 if task == "regression" else
                            np.int8 if len(self.class_names) <= 127 else np.int16)
        self.labels = self.missing_rows = None
        if self.num_valid <= SKLEARN_SPLIT_ROWS:  # small: one class id a row, as in memory
            labels, missing_rows, offset = [], [], 0
            for chunk in self._frames([self.target]):
                ids, present = self._label_ids(chunk[self.target])
                labels.append(np.where(present, ids, 0).astype(self._label_type))
                missing_rows.append(np.flatnonzero(~present).astype(np.int64) + offset)
                offset += len(chunk)
            self.labels = np.concatenate(labels)
            self.missing_rows = np.concatenate(missing_rows)

    def _label_ids(self, s: Any) -> tuple[np.ndarray, np.ndarray]:
        """`(class ids (float32 targets for regression), present)` of a label chunk."""
        import pandas as pd

        present = self._present(s)
        if self.task == "regression":
            return pd.to_numeric(s.where(present), errors="coerce").to_numpy(
                np.float32, na_value=np.nan), present
        if self._numeric_labels:
            values = pd.to_numeric(s.where(present), errors="coerce").to_numpy(
                np.float32, na_value=np.nan)
            ids = np.searchsorted(self._classes, np.where(present, values, 0))
            return np.minimum(ids, len(self._classes) - 1).astype(np.int64), present
        codes = pd.Categorical(s.astype(str).str.strip(), categories=self.class_names).codes
        return codes.astype(np.int64), present & (codes >= 0)

    # -- splits and the sample --------------------------------------------------------------
    def stream_splits(self, val_fraction: float, test_fraction: float, seed: int
                      ) -> StreamSplits:
        """Train/val/test rows (see `_split_rows`) and a sample of each."""
        if self.labels is None:
            return self._hashed_splits(val_fraction, test_fraction, seed)
        rng = np.random.default_rng(seed)
        parts = self._split_rows(val_fraction, test_fraction, seed)
        self._load_sample(parts[0], rng)
        out = []
        for rows in parts:
            if rows is None:
                out.append(None)
                continue
            pick = rows if len(rows) <= self.sample_rows else np.sort(
                rng.choice(rows, self.sample_rows, replace=False))
            out.append(StreamPart(self, rows, self._sample_of(pick)))
        return StreamSplits(*out)

    def _rows_of(self, label: int | None) -> np.ndarray:
        """Row numbers with a label (`None`: every labelled row), in blocks: 4 bytes a row."""
        missing = None
        if len(self.missing_rows):
            missing = np.zeros(self.num_rows, bool)
            missing[self.missing_rows] = True
        pieces, block = [], 1 << 20
        for start in range(0, self.num_rows, block):
            stop = min(start + block, self.num_rows)
            keep = (np.ones(stop - start, bool) if label is None
                    else self.labels[start:stop] == label)
            if missing is not None:
                keep &= ~missing[start:stop]
            pieces.append((np.flatnonzero(keep) + start).astype(self.row_type))
        return np.concatenate(pieces) if pieces else np.zeros(0, self.row_type)

    def _split_rows(self, val_fraction: float, test_fraction: float, seed: int
                    ) -> list[np.ndarray | None]:
        """Sorted row numbers of train, val and test (files of at most `SKLEARN_SPLIT_ROWS`).

        `train_val_test_split` on the labels: the in-memory split, row for row.
        Larger files are split by `_hashed_splits` instead.
        """
        from kflow.data.splits import train_val_test_split

        valid = self._rows_of(None)
        index = Dataset(valid.reshape(-1, 1), self.labels[valid],
                        task=self.task, class_names=self.class_names, name=self.path.name)
        parts = train_val_test_split(index, val_fraction, test_fraction, seed)
        return [None if p is None else np.sort(p.x[:, 0]) for p in
                (parts.train, parts.val, parts.test)]

    # -- the split of large files: computed per row, nothing stored per row -----------------
    def _hashed_splits(self, val_fraction: float, test_fraction: float, seed: int
                       ) -> StreamSplits:
        """Above `SKLEARN_SPLIT_ROWS` labelled rows: a split that stores nothing per row.

        Each class's rows (regression: all rows), numbered 0..n_c-1 in file
        order, are permuted by a seeded pseudo-random permutation of
        0..n_c-1 (`_permute`: a Feistel network keyed by the seed and the
        class) and cut by the fractions: the first round(n_c * test_fraction)
        are test, the next round(n_c * val_fraction) validation, the rest
        training. So the split is stratified with the in-memory split's counts,
        the same on every epoch and every run with the same seed, and a row's
        part is computed while the file is read.
        """
        counts = self.class_counts
        n_test = np.round(counts * test_fraction).astype(np.int64)
        n_val = np.round(counts * val_fraction).astype(np.int64)
        self._cuts = (seed, n_test, n_test + n_val)
        sizes = [int((counts - n_test - n_val).sum()), int(n_val.sum()), int(n_test.sum())]
        self._part_class_counts = [counts - n_test - n_val, n_val, n_test]
        rng = np.random.default_rng(seed)
        # Validation and test keep a smaller sample (the rows `samples.npz` stores): their
        # metrics and confusion matrix are computed over the whole split, streamed.
        limits = [self.sample_rows, HELD_OUT_SAMPLE_ROWS, HELD_OUT_SAMPLE_ROWS]
        picks = [np.sort(rng.choice(n, min(n, limit), replace=False)) if n else None
                 for n, limit in zip(sizes, limits, strict=True)]
        frames: list[list[Any]] = [[], [], []]
        ids: list[list[np.ndarray]] = [[], [], []]
        for _, chunk, parts, y, ordinal in self._part_chunks():
            for p in range(3):
                if picks[p] is None:
                    continue
                where = np.flatnonzero(parts == p)
                take = np.isin(ordinal[p] + np.arange(len(where)), picks[p])
                if take.any():
                    frames[p].append(chunk.iloc[where[take]])
                    ids[p].append(y[where[take]])
        import pandas as pd

        self.keys = None
        out: list[StreamPart | None] = []
        for p in range(3):
            if not sizes[p]:
                out.append(None)
                continue
            frame = pd.concat(frames[p]).reset_index(drop=True)
            if p == 0:
                self._set_kinds(frame)
            y = np.concatenate(ids[p]).astype(np.float32 if self.task == "regression"
                                              else np.int64)
            out.append(StreamPart(self, None, self._dataset_of(frame, y), part=p,
                                  count=sizes[p]))
        return StreamSplits(*out)

    def _parts_of(self, ids: np.ndarray, present: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """The part (0 train, 1 val, 2 test, -1 no label) of each row of a chunk.

        `seen[c]`: rows of class c before this chunk (updated in place).
        """
        seed, test_end, val_end = self._cuts
        parts = np.full(len(ids), -1, np.int8)
        classes = np.zeros(len(ids), np.int64) if self.task == "regression" else ids
        for c in range(len(seen)):
            where = np.flatnonzero(present & (classes == c))
            if not len(where):
                continue
            rank = _permute(seen[c] + np.arange(len(where), dtype=np.int64),
                            int(self.class_counts[c]), seed, c)
            seen[c] += len(where)
            parts[where] = np.where(rank < test_end[c], 2, np.where(rank < val_end[c], 1, 0))
        return parts

    def _part_chunks(self) -> Iterator[tuple[int, Any, np.ndarray, np.ndarray, list[int]]]:
        """`(first row, chunk, part per row, label per row, rows of each part before)`."""
        seen = np.zeros(len(self.class_counts), np.int64)
        before = [0, 0, 0]
        for first, chunk in self._chunks(with_target=True):
            y, present = self._label_ids(chunk[self.target])
            parts = self._parts_of(y, present, seen)
            yield first, chunk, parts, y, list(before)
            for p in range(3):
                before[p] += int((parts == p).sum())

    def _load_sample(self, train_rows: np.ndarray, rng: np.random.Generator) -> None:
        """Reads a uniform sample of training rows; infers the column types on it."""
        import pandas as pd

        pick = np.sort(train_rows) if len(train_rows) <= self.sample_rows else np.sort(
            rng.choice(train_rows, self.sample_rows, replace=False))
        frames = []
        for first, chunk in self._chunks():
            local = pick[(pick >= first) & (pick < first + len(chunk))] - first
            if len(local):
                frames.append(chunk.iloc[local])
        frame = pd.concat(frames) if frames else pd.DataFrame(columns=self.features)
        self._set_kinds(frame)
        self._sample_frame_rows = pick
        self._sample_frame = frame.reset_index(drop=True)

    def _set_kinds(self, frame: Any) -> None:
        """Input names, column types (inferred on the training sample) and dtypes."""
        from kflow.data.tabular import infer_column_type, sanitize_names

        self.keys = sanitize_names(self.features)
        self.kinds = {c: self.column_types.get(c) or infer_column_type(
            frame[c], column=c, source=self.path.name) for c in self.features}
        x, _ = self._convert(frame.reset_index(drop=True))
        self.dtypes = {k: v.dtype for k, v in x.items()}

    def _sample_of(self, rows: np.ndarray) -> Dataset:
        """A `Dataset` of `rows` (taken from the training sample, else read from the file)."""
        import pandas as pd

        pos = np.searchsorted(self._sample_frame_rows, rows)
        inside = (pos < len(self._sample_frame_rows)) & (
            self._sample_frame_rows[np.minimum(pos, len(self._sample_frame_rows) - 1)] == rows)
        if inside.all():
            frame = self._sample_frame.iloc[pos]
        else:
            frames = [chunk.iloc[rows[(rows >= first) & (rows < first + len(chunk))] - first]
                      for first, chunk in self._chunks()]
            frame = pd.concat(frames)
        y = self.labels[rows].astype(np.float32 if self.task == "regression" else np.int64)
        return self._dataset_of(frame.reset_index(drop=True), y)

    def _dataset_of(self, frame: Any, y: np.ndarray) -> Dataset:
        x, weights = self._convert(frame)
        specs = {k: {"column": c, "kind": self.kinds[c],
                     "missing": self.missing_by_column.get(c, self.missing),
                     "fill_value": self.fill_value} for k, c in zip(self.keys, self.features,
                                                                    strict=True)}
        meta = {"source": str(self.path), "target": self.target, "columns": specs,
                "split_column": None, "rows_dropped": self.num_rows - self.num_valid}
        out = object.__new__(Dataset)
        out.__dict__.update(dict(x=x, y=y, task=self.task,
                                 class_names=self.class_names, feature_names=self.keys,
                                 name=self.path.name, meta=meta, split=None,
                                 sample_weight=weights))
        return out

    # -- reading ----------------------------------------------------------------------------
    def _chunks(self, with_target: bool = False) -> Iterator[tuple[int, Any]]:
        first = 0
        usecols = self.features + ([self.weight_column] if self.weight_column else [])
        for chunk in self._frames(usecols + ([self.target] if with_target else [])):
            yield first, chunk
            first += len(chunk)

    def _convert(self, frame: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        from kflow.data.tabular import _convert

        x = {k: _convert(frame[c], self.kinds[c], c, self.path.name)
             for k, c in zip(self.keys, self.features, strict=True)}
        weights = None
        if self.weight_column:
            import pandas as pd

            weights = pd.to_numeric(frame[self.weight_column], errors="coerce").to_numpy(
                np.float32)
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise DataError(f"Weight column '{self.weight_column}' of '{self.path.name}' "
                                "needs a number >= 0 in every row.")
        return x, weights

    def read(self, rows: np.ndarray) -> Iterator[tuple[int, dict[str, np.ndarray],
                                                       np.ndarray | None]]:
        """Yields `(position in rows, x, weights)` for the sorted `rows`, chunk by chunk."""
        for first, chunk in self._chunks():
            lo, hi = np.searchsorted(rows, [first, first + len(chunk)])
            if hi > lo:
                x, w = self._convert(chunk.iloc[rows[lo:hi] - first].reset_index(drop=True))
                yield int(lo), x, w

    def read_part(self, part: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray,
                                                     np.ndarray | None]]:
        """Yields `(x, y, weights)` of the rows of one part of a hashed split, chunk by chunk."""
        for _, chunk, parts, y, _ in self._part_chunks():
            where = np.flatnonzero(parts == part)
            if len(where):
                x, w = self._convert(chunk.iloc[where].reset_index(drop=True))
                yield x, y[where], w

    def part_rows(self, part: int) -> np.ndarray:
        """Row numbers of one part of a hashed split (reads the file; for checks)."""
        return np.concatenate([first + np.flatnonzero(parts == part)
                               for first, _, parts, _, _ in self._part_chunks()])


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _permute(k: np.ndarray, n: int, seed: int, key: int) -> np.ndarray:
    """A seeded pseudo-random permutation of 0..n-1, applied to `k` (values in 0..n-1).

    A 4-round Feistel network on the smallest even number of bits that holds
    n-1, keyed by `(seed, key)`, with cycle walking (values >= n are permuted
    again until they fall below n), so it is a bijection of 0..n-1 computed
    element by element, without storing it.
    """
    bits = max(2, int(n - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    low = np.uint64((1 << (bits // 2)) - 1)
    with np.errstate(over="ignore"):
        keys = [_mix(np.array([(seed * 0x9E3779B97F4A7C15 + key * 0x632BE59BD9B4E019
                                + r * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF],
                              np.uint64))[0] for r in range(4)]

    def once(v: np.ndarray) -> np.ndarray:
        left, right = v >> half, v & low
        for rk in keys:
            left, right = right, left ^ (_mix(right ^ rk) & low)
        return (left << half) | right

    out = once(k.astype(np.uint64))
    bad = out >= np.uint64(n)
    while bad.any():
        out[bad] = once(out[bad])
        bad = out >= np.uint64(n)
    return out.astype(np.int64)


class ImageFolderStream:
    """A folder of class subfolders of images, decoded from disk per batch.

    Only the file paths and labels are held; each epoch decodes and resizes
    the images batch by batch (`tf.io.read_file` + `tf.image.decode_image`,
    as `keras.utils.image_dataset_from_directory` does). The splits are the
    same stratified `train_val_test_split` as in-memory images; each epoch's
    order is the in-memory pipeline's permutation (`epoch_order`), so a
    resumed run sees the same batches. The preprocessing (scaling) is fitted
    on a uniform sample of `sample_rows` training images (all of them when
    fewer), stated in `run.json`.

    Args:
        path: The folder with one subfolder of images per class.
        image_size: `(height, width)` to resize to.
        color_mode: "rgb", "grayscale" or "rgba". Defaults to "rgb".
        sample_rows: Training images the preprocessing is fitted on.
            Defaults to 1000.
    """

    def __init__(self, path: str | Path, image_size: Sequence[int], *,
                 color_mode: str = "rgb", sample_rows: int = 1000):
        from kflow.data.images import IMAGE_EXTENSIONS

        folder = Path(path)
        if not folder.is_dir():
            raise DataError(f"Image folder '{folder}' does not exist or is not a folder; "
                            "expected one subfolder of images per class.")
        self.class_names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        files, labels = [], []
        for i, name in enumerate(self.class_names):
            found = sorted(str(f) for f in (folder / name).rglob("*")
                           if f.suffix.lower() in IMAGE_EXTENSIONS)
            files += found
            labels += [i] * len(found)
        if len(self.class_names) < 2 or not files:
            raise DataError(f"Image folder '{folder}' needs at least two class subfolders "
                            "with images (e.g. cats/001.png, dogs/001.png).")
        self.files = np.array(files)
        self.labels = np.array(labels, dtype=np.int64)
        self.size = tuple(int(s) for s in image_size)
        self.channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[color_mode]
        self.sample_rows, self.name = sample_rows, folder.name
        self.task = "binary" if len(self.class_names) == 2 else "multiclass"

    def decode(self, path: Any) -> Any:
        import tensorflow as tf

        image = tf.io.decode_image(tf.io.read_file(path), channels=self.channels,
                                   expand_animations=False)
        return tf.image.resize(image, self.size)  # float32, values in [0, 255]

    def _images(self, rows: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(self.files[rows]).map(self.decode).batch(256)
        return np.concatenate([b.numpy() for b in ds]) if len(rows) else np.zeros(
            (0, *self.size, self.channels), np.float32)

    def stream_splits(self, val_fraction: float, test_fraction: float, seed: int
                      ) -> StreamSplits:
        from kflow.data.splits import train_val_test_split

        index = Dataset(np.arange(len(self.files)).reshape(-1, 1), self.labels, task=self.task,
                        class_names=self.class_names, name=self.name)
        parts = train_val_test_split(index, val_fraction, test_fraction, seed)
        rng = np.random.default_rng(seed)
        out = []
        for part in (parts.train, parts.val, parts.test):
            if part is None:
                out.append(None)
                continue
            rows = np.sort(part.x[:, 0])
            pick = rows if len(rows) <= self.sample_rows else np.sort(
                rng.choice(rows, self.sample_rows, replace=False))
            sample = Dataset(self._images(pick), self.labels[pick], task=self.task,
                             class_names=self.class_names, name=self.name,
                             meta={"source": "image folder", "image_size": list(self.size)})
            out.append(ImagePart(self, rows, sample))
        return StreamSplits(*out)


class ImagePart(StreamPart):
    """One split of an `ImageFolderStream` (see `StreamPart`)."""

    def __init__(self, stream: ImageFolderStream, rows: np.ndarray, sample: Dataset):
        super().__init__(stream, rows, sample)  # type: ignore[arg-type]

    def tf_dataset(self, batch_size: int, *, training: bool, seed: int = 0,
                   epoch: Any = None, class_weight: Any = "none") -> Any:
        import tensorflow as tf

        from kflow.data.pipeline import _epoch_reader, epoch_order
        from kflow.training.features import class_weights

        stream = self.stream
        files = tf.constant(stream.files[self.rows])
        labels = tf.constant(stream.labels[self.rows])
        per_class = class_weights(stream.labels[self.rows], class_weight, stream.class_names,
                                  len(stream.class_names))
        n = len(self.rows)
        if training:
            read_epoch = _epoch_reader(epoch)
            ds = tf.data.Dataset.from_tensors(0).map(
                lambda _: epoch_order(n, seed, read_epoch())).unbatch()
        else:
            ds = tf.data.Dataset.range(n)
        weights = None if per_class is None else tf.constant(per_class)

        def load(i):
            y = tf.gather(labels, i)
            x = stream.decode(tf.gather(files, i))
            return (x, y) if weights is None else (x, y, tf.gather(weights, y))

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size).apply(
            tf.data.experimental.assert_cardinality(math.ceil(n / batch_size)))
        return ds.prefetch(tf.data.AUTOTUNE)
