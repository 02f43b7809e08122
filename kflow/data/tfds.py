"""TensorFlow Datasets (TFDS) by name and split, as a `Dataset`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import DataError, UnknownNameError, did_you_mean

__all__ = ["load_tfds"]


def load_tfds(
    name: str,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    max_examples: int | None = None,
    image_size: Sequence[int] | None = None,
    batch_size: int = 1024,
) -> Dataset:
    """Loads a supervised TFDS dataset (e.g. "mnist", "cifar10") as a `Dataset`.

    Calls `tfds.load(name, split=split, as_supervised=True, with_info=True)`
    and reads the `(input, label)` pairs into memory. Class names come from
    the label feature (`ClassLabel.names`); kflow then splits the rows into
    train/validation/test itself. Use a TFDS split expression to load less,
    e.g. `split="train[:10%]"`.

    Args:
        name: The TFDS name, optionally with config and version
            ("mnist", "cifar10:3.0.2").
        split: The TFDS split or split expression. Defaults to "train".
        data_dir: Where TFDS keeps its data. Defaults to TFDS's own
            (`~/tensorflow_datasets`).
        download: Download and prepare the data when it is not in
            `data_dir`. Defaults to `True`.
        max_examples: Read at most this many examples. Defaults to `None` (all).
        image_size: Resize image inputs to `(height, width)` (needed when
            their sizes differ). Defaults to `None`.
        batch_size: Examples read per step. Defaults to 1024.

    Returns:
        A `Dataset` with the inputs as float32 arrays and int class ids
        (or float targets for regression datasets).

    Example:

    ```python
    data = kflow.data.load_tfds("mnist", split="train[:5000]")
    data.x.shape, data.class_names[:3]  # ((5000, 28, 28, 1), ['0', '1', '2'])
    ```
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(
            name, split=split, data_dir=None if data_dir is None else str(data_dir),
            download=download, as_supervised=True, with_info=True,
        )
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders()
        raise UnknownNameError(
            f"Unknown TFDS dataset '{name}'{did_you_mean(name.split(':')[0], known)}. "
            "See `tfds.list_builders()` or https://www.tensorflow.org/datasets/catalog."
        ) from None
    except (ValueError, AssertionError) as exc:  # unknown split, missing data...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"Could not load TFDS dataset '{name}' split '{split}': {first}"
        ) from None
    if info.supervised_keys is None:
        raise DataError(
            f"TFDS dataset '{name}' has no (input, label) supervised keys; kflow needs a "
            "supervised dataset such as mnist or cifar10."
        )
    input_key, label_key = info.supervised_keys[:2]
    if isinstance(ds.element_spec[0], dict):
        raise DataError(
            f"TFDS dataset '{name}' has several input features; load_tfds() supports one "
            "input tensor (images, vectors). Load it with tfds and build a kflow Dataset."
        )
    if max_examples is not None:
        ds = ds.take(max_examples)
    if image_size is not None:
        size = tuple(image_size)
        ds = ds.map(lambda x, y: (tf.image.resize(x, size), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    xs, ys = [], []
    for x, y in tfds.as_numpy(ds.batch(batch_size)):
        xs.append(np.asarray(x, dtype="float32"))
        ys.append(np.asarray(y))
    if not xs:
        raise DataError(f"TFDS dataset '{name}' split '{split}' has no examples.")
    x, y = np.concatenate(xs), np.concatenate(ys)
    label = info.features[label_key]
    class_names = [str(n) for n in label.names] if hasattr(label, "names") else None
    if class_names is None:
        task = "regression"
        y = y.astype("float32")
    else:
        task = "binary" if len(class_names) == 2 else "multiclass"
        y = y.astype("int64")
    return Dataset(x, y, task=task, class_names=class_names, name=name.split(":")[0],
                   meta={"source": f"tfds:{name}", "split": split, "input": input_key,
                         "label": label_key})
