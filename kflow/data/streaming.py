"""Data larger than memory: CSV files read in chunks, image folders read per batch.

`CsvStream` never holds the table. What it keeps in memory, for N rows:
the labels (4-8 bytes a row), each split's row numbers (8 bytes a row) and
a sample of at most `sample_rows` training rows. Setting up reads the file
twice, chunk by chunk: once for the labels (classes, task, the split), once
for the sample. Each epoch reads it once more.

- **Splits**: the same stratified, seeded `train_val_test_split` as
  in-memory data (it only needs the labels), so a file gives the same
  train/val/test rows streamed or loaded whole.
- **Preprocessing** (imputation, scaling, vocabularies) is fitted, as for
  in-memory tables, by the recipe's `build_model(train)` on `train.x`: here
  a uniform random sample of `sample_rows` training rows (all of them when
  the split is smaller), stated in `run.json` (`meta.preprocessing_fitted_on`).
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

#: Above this many labelled rows, `CsvStream` splits with its own light stratified split.
SKLEARN_SPLIT_ROWS = 2_000_000

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

    def __init__(self, stream: CsvStream, rows: np.ndarray, sample: Dataset):
        self.stream = stream
        rows = np.asarray(rows)
        self.rows = rows if np.all(rows[1:] >= rows[:-1]) else np.sort(rows)
        self.sample = sample
        self.x, self.y = sample.x, sample.y
        self.task, self.class_names = sample.task, sample.class_names
        self.feature_names, self.name = sample.feature_names, sample.name
        self.meta = {**sample.meta, "streaming": True, "rows": len(self.rows),
                     "preprocessing_fitted_on": f"a uniform sample of {len(sample)} of "
                     f"{len(self.rows)} rows"}
        self.sample_weight = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 1

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index: np.ndarray) -> Dataset:
        return self.sample.subset(index)

    def tf_dataset(self, batch_size: int, *, training: bool, seed: int = 0,
                   epoch: Any = None, class_weight: Any = "none") -> Any:
        """`(x, y)` batches (`(x, y, w)` with weights) of this split, read chunk by chunk."""
        import tensorflow as tf

        from kflow.training.features import class_weights

        stream = self.stream
        per_class = None
        if class_weight not in (None, "none") and stream.task != "regression":
            per_class = class_weights(stream.labels[self.rows], class_weight, stream.class_names,
                                      len(stream.class_names))
        weighted = per_class is not None or stream.weight_column is not None
        keys = stream.keys

        def chunks() -> Iterator[tuple]:
            epoch_no = (epoch.epoch if hasattr(epoch, "epoch")
                        else int(epoch or 0))
            for index, (first, x, weights) in enumerate(stream.read(self.rows)):
                rows = self.rows[first:first + len(next(iter(x.values())))]
                y = stream.labels[rows].astype(np.float32 if stream.task == "regression"
                                               else np.int64)
                w = np.ones(len(rows), np.float32) if weights is None else weights
                if per_class is not None:
                    w = w * per_class[y.astype(np.int64)]
                if training:
                    order = np.random.default_rng([seed, epoch_no, index]).permutation(len(rows))
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
            tf.data.experimental.assert_cardinality(math.ceil(len(self.rows) / batch_size)))
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
        import pandas as pd

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"CSV file '{self.path}' does not exist.")
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
        header = [str(c) for c in pd.read_csv(self.path, nrows=0).columns]
        for col, what in ((target, "Target column"), (weight_column, "Weight column")):
            if col is not None and col not in header:
                raise ConfigError(f"{what} '{col}' is not a column of '{self.path.name}'. "
                                  f"Columns: {', '.join(header)}.")
        self.features = list(features) if features is not None else [
            c for c in header if c not in (target, weight_column)]
        self.column_types = dict(column_types or {})
        self._scan_labels(task)

    # -- pass 1: the labels -----------------------------------------------------------------
    def _scan_labels(self, task: str) -> None:
        import pandas as pd

        from kflow.data.tabular import infer_target_task

        numeric: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        names: dict[str, int] = {}
        missing: list[np.ndarray] = []
        offset = 0
        is_numeric = True
        head = None
        for chunk in pd.read_csv(self.path, usecols=[self.target], chunksize=self.chunk_rows):
            s = chunk[self.target]
            head = s if head is None else head
            present = (s.notna() & (s.astype(str).str.strip() != "")).to_numpy()
            if not present.all() and not self.drop_missing_labels:
                rows = (np.flatnonzero(~present) + offset)[:10].tolist()
                raise DataError(f"Target column '{self.target}' of '{self.path.name}' has "
                                f"missing values at rows {rows} (0-based); fill them in, or set "
                                "drop_missing_labels: true.")
            if not present.all():
                missing.append((np.flatnonzero(~present) + offset).astype(np.int64))
            s = s[present]
            parsed = pd.to_numeric(s, errors="coerce")
            if is_numeric and parsed.notna().all():
                numeric.append(parsed.to_numpy(np.float32))
            else:
                is_numeric, numeric = False, []
            if not is_numeric:
                local, uniques = pd.factorize(s.astype(str).str.strip().to_numpy())
                mapping = np.array([names.setdefault(str(u), len(names)) for u in uniques],
                                   dtype=np.int64)
                if len(names) > 30000:
                    raise DataError(f"Target column '{self.target}' of '{self.path.name}' has "
                                    "more than 30000 distinct text values; not a label.")
                codes.append(mapping[local].astype(np.int16))
            offset += len(chunk)
        self.num_rows = offset
        self.row_type = np.int32 if offset < 2**31 else np.int64
        self.missing_rows = np.concatenate(missing) if missing else np.zeros(0, np.int64)
        self.num_valid = offset - len(self.missing_rows)
        if not is_numeric and not codes:  # pragma: no cover - an empty file
            raise DataError(f"'{self.path.name}' has no rows.")
        if task == "auto":
            task = infer_target_task(head)
        self.task = task
        if task == "regression":
            if not is_numeric:
                raise DataError(f"Target column '{self.target}' of '{self.path.name}' is not "
                                "numeric; set task to binary or multiclass.")
            labels = np.concatenate(numeric)
            self.class_names = None
        elif is_numeric:
            values = np.concatenate(numeric)
            whole = np.all(values % 1 == 0)
            classes = np.unique(values.astype(np.int64) if whole else values)
            labels = np.searchsorted(classes, values).astype(np.int16)
            self.class_names = [str(c) for c in classes]
        else:
            order = sorted(names)
            rank = np.empty(len(names), np.int16)
            for i, name in enumerate(order):
                rank[names[name]] = i
            joined = np.concatenate(codes)
            codes.clear()
            labels = rank[joined]
            del joined
            self.class_names = order
        if task != "regression" and len(self.class_names) <= 127:
            labels = labels.astype(np.int8)  # 1 byte a row
        if task != "regression" and len(self.class_names) < 2:
            raise DataError(f"Target column '{self.target}' of '{self.path.name}' has one "
                            "class only; classification needs at least two.")
        # Indexed by row number in the file (rows without a label keep a 0 they never use).
        if self.num_valid == self.num_rows:
            self.labels = labels
        else:
            self.labels = np.zeros(self.num_rows, labels.dtype)
            self.labels[self._rows_of(None)] = labels
        del labels

    # -- splits and the sample --------------------------------------------------------------
    def stream_splits(self, val_fraction: float, test_fraction: float, seed: int
                      ) -> StreamSplits:
        """Train/val/test rows by `train_val_test_split` on the labels; samples for each."""
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
        """Sorted row numbers of train, val and test.

        Up to `SKLEARN_SPLIT_ROWS` labelled rows: `train_val_test_split` (the
        in-memory split, row for row). Above, a split that needs only a few
        bytes a row: each class's rows (regression: all rows) are permuted
        with `numpy.random.default_rng(seed)` and cut by the fractions.
        """
        from kflow.data.splits import train_val_test_split

        if self.num_valid <= SKLEARN_SPLIT_ROWS:
            valid = self._rows_of(None)
            index = Dataset(valid.reshape(-1, 1), self.labels[valid],
                            task=self.task, class_names=self.class_names, name=self.path.name)
            parts = train_val_test_split(index, val_fraction, test_fraction, seed)
            return [None if p is None else np.sort(p.x[:, 0]) for p in
                    (parts.train, parts.val, parts.test)]
        rng = np.random.default_rng(seed)
        cut: list[list[np.ndarray]] = [[], [], []]
        classes = [None] if self.task == "regression" else range(len(self.class_names))
        for c in classes:
            rows = self._rows_of(c)
            rng.shuffle(rows)  # in place
            n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
            cut[2].append(rows[:n_test])
            cut[1].append(rows[n_test:n_test + n_val])
            cut[0].append(rows[n_test + n_val:])
            del rows
        out: list[np.ndarray | None] = []
        for parts in cut:
            joined = np.concatenate(parts)
            parts.clear()
            joined.sort()
            out.append(joined if len(joined) else None)
        return out

    def _load_sample(self, train_rows: np.ndarray, rng: np.random.Generator) -> None:
        """Reads a uniform sample of training rows; infers the column types on it."""
        import pandas as pd

        from kflow.data.tabular import infer_column_type, sanitize_names

        pick = np.sort(train_rows) if len(train_rows) <= self.sample_rows else np.sort(
            rng.choice(train_rows, self.sample_rows, replace=False))
        frames = []
        for first, chunk in self._chunks():
            local = pick[(pick >= first) & (pick < first + len(chunk))] - first
            if len(local):
                frames.append(chunk.iloc[local])
        frame = pd.concat(frames) if frames else pd.DataFrame(columns=self.features)
        self.keys = sanitize_names(self.features)
        self.kinds = {c: self.column_types.get(c) or infer_column_type(
            frame[c], column=c, source=self.path.name) for c in self.features}
        self._sample_frame_rows = pick
        self._sample_frame = frame.reset_index(drop=True)
        x, _ = self._convert(self._sample_frame)
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
        x, weights = self._convert(frame.reset_index(drop=True))
        specs = {k: {"column": c, "kind": self.kinds[c],
                     "missing": self.missing_by_column.get(c, self.missing),
                     "fill_value": self.fill_value} for k, c in zip(self.keys, self.features,
                                                                    strict=True)}
        meta = {"source": str(self.path), "target": self.target, "columns": specs,
                "split_column": None, "rows_dropped": self.num_rows - self.num_valid}
        out = object.__new__(Dataset)
        y = self.labels[rows].astype(np.float32 if self.task == "regression" else np.int64)
        out.__dict__.update(dict(x=x, y=y, task=self.task,
                                 class_names=self.class_names, feature_names=self.keys,
                                 name=self.path.name, meta=meta, split=None,
                                 sample_weight=weights))
        return out

    # -- reading ----------------------------------------------------------------------------
    def _chunks(self) -> Iterator[tuple[int, Any]]:
        import pandas as pd

        first = 0
        usecols = self.features + ([self.weight_column] if self.weight_column else [])
        for chunk in pd.read_csv(self.path, usecols=usecols, chunksize=self.chunk_rows):
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
