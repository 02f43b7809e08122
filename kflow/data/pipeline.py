"""tf.data input pipelines."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["make_dataset"]


def make_dataset(
    x: Any,
    y: np.ndarray | None,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    cache: bool = True,
):
    """Builds a `tf.data.Dataset` of `(x, y)` batches.

    Training pipelines cache the tensors, reshuffle every epoch with `seed`,
    batch, and prefetch; evaluation pipelines keep the order.

    Args:
        x: Features: an array, or a dict of named column arrays.
        y: Labels, or `None` for prediction.
        batch_size: Samples per batch.
        training: Shuffle each epoch when `True`.
        seed: Shuffle seed. Defaults to 0.
        cache: Cache the elements in memory after the first pass. Defaults to `True`.
    """
    import tensorflow as tf

    n = len(y) if y is not None else len(next(iter(x.values())) if isinstance(x, dict) else x)
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(n, 100_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)
