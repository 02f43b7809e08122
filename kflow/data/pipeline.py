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

    The arrays are held once as in-memory tensors and sliced into rows. A
training pipeline shuffles the rows with a buffer as large as the split
(a uniform, seeded permutation, new every epoch) and batches them; an
evaluation pipeline keeps the row order. `map_fn` is applied to whole
batches, in parallel; evaluation pipelines keep their (mapped) batches in
memory after the first pass (`cache`); batches are prefetched so the next
one is ready while the model trains on the current one.

Row-wise shuffling is the fastest choice measured here for data held in
memory: on digits (1,257 rows, batch 32) an epoch of `fit` takes ~10 ms
less than shuffling row indices and gathering each batch with a mapped
function (a function call per batch), and iterating 200,000 rows of 64
features is ~10 % faster too.

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
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if training:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if map_fn is not None:
        fn = map_fn if y is None else (lambda bx, by: (map_fn(bx), by))
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache and not training:
        ds = ds.cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)
