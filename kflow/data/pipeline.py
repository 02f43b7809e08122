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

    The arrays are held once as in-memory tensors. Each epoch of a training
    pipeline shuffles the row *indices* (seeded, a new order every epoch),
    batches them, and gathers whole batches of rows in one vectorized op per
    column, instead of shuffling and batching row by row; `map_fn` is then
    applied to a whole batch at a time, in parallel; batches are prefetched
    so the next one is ready while the model trains on the current one.
    Evaluation pipelines keep the row order and, with `cache`, keep their
    (mapped) batches in memory after the first pass.

    Args:
        x: Features: an array, or a dict of named column arrays.
        y: Labels, or `None` for prediction.
        batch_size: Samples per batch.
        training: Shuffle each epoch when `True`.
        seed: Shuffle seed. Defaults to 0.
        cache: Cache the batches of an evaluation pipeline in memory after
            the first pass. Defaults to `True`.
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
    tensors = tf.nest.map_structure(tf.convert_to_tensor, x if y is None else (x, y))
    index = tf.data.Dataset.range(n)
    if training:
        index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    index = index.batch(batch_size)

    def gather(rows):
        return tf.nest.map_structure(lambda t: tf.gather(t, rows), tensors)

    ds = index.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if map_fn is not None:
        fn = map_fn if y is None else (lambda bx, by: (map_fn(bx), by))
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache and not training:
        ds = ds.cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)
