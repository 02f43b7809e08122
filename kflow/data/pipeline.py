"""tf.data input pipelines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kflow.data.dataset import num_rows

__all__ = ["make_dataset"]


def make_dataset(
    x: Any,
    y: np.ndarray | None,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    cache: bool = True,
    map_fn: Callable[..., Any] | None = None,
):
    """Builds a `tf.data.Dataset` of `(x, y)` batches (or `x` batches without `y`).

    The elements are sliced from in-memory tensors, cached after the first
    pass, reshuffled every epoch with `seed` (training only), batched, mapped
    by `map_fn` one whole batch at a time (vectorized, in parallel) and
    prefetched, so the accelerator never waits for the next batch.

    Args:
        x: Features: an array, or a dict of named column arrays.
        y: Labels, or `None` for prediction.
        batch_size: Samples per batch.
        training: Shuffle each epoch when `True`.
        seed: Shuffle seed. Defaults to 0.
        cache: Cache the elements in memory after the first pass. Defaults to `True`.
        map_fn: A function of a batch `x` returning the new `x` (e.g. the
            preprocessor from `kflow.data.split_preprocessing`), applied after
            batching. Defaults to `None`.

    Example:

    ```python
    ds = kflow.data.make_dataset(x_train, y_train, 64, training=True, seed=0)
    model.fit(ds, epochs=5)
    ```
    """
    import tensorflow as tf

    n = len(y) if y is not None else num_rows(x)
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(n, 100_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if map_fn is not None:
        fn = map_fn if y is None else (lambda bx, by: (map_fn(bx), by))
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)
