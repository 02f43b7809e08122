"""Accelerator settings: precision, XLA, op determinism, and batches for TPUs.

Every recipe declares three settings in its `training` group (`kflow recipes
show NAME` lists them; `--set precision=mixed_bfloat16` changes them):

- `precision`: "float32", "mixed_float16" or "mixed_bfloat16". Mixed
  precision computes in 16 bits and keeps the variables in float32. The head
  (the output Dense and its softmax/sigmoid) computes in float32; with
  float16 Keras wraps the optimizer in a `LossScaleOptimizer` (dynamic loss
  scaling). `model.keras` is saved with float32 layers, so an export
  (SavedModel, TFLite) is a plain float32 model.
- `jit_compile`: "auto" (Keras decides: on for a GPU when the model
  supports XLA, off on CPU), true or false.
- `deterministic`: "auto" (op determinism on when no GPU is visible, where
  it costs nothing, off with GPUs, where deterministic kernels cost real
  speed), true (exact reproducibility everywhere: `kflow train ...
  --deterministic`) or false. The trainer replaces "auto" by the value it
  used, so `config.yaml` says which one a run had.

`--strategy tpu` gets batches of one fixed shape (`fixed_batches`: the last
partial batch is dropped, the batch dimension is static) and runs a whole
epoch per `tf.function` call (`tpu_steps_per_execution`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["PRECISIONS", "resolve_deterministic", "precision_policy", "float32_model",
           "fixed_batches", "tpu_steps_per_execution", "is_tpu_strategy"]

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def resolve_deterministic(value: bool | str, *, gpus: int | None = None) -> bool:
    """The op-determinism setting a run uses.

    Args:
        value: `True`, `False` or "auto".
        gpus: Visible GPUs (`None`: ask TensorFlow, without initializing
            its devices).

    Returns:
        `value` when it is a bool; for "auto", `True` when no GPU is
        visible (deterministic CPU kernels cost nothing measurable), else
        `False` (GPU determinism costs real speed; use `--deterministic`).
    """
    if isinstance(value, bool):
        return value
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    return gpus == 0


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Builds layers under `precision`'s Keras dtype policy, then restores the old one.

    Args:
        precision: One of `PRECISIONS`.

    Example:

    ```python
    with precision_policy("mixed_bfloat16"):
        model = recipe.build_model(train)  # bfloat16 compute, float32 variables
    ```
    """
    import keras

    from kflow.errors import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}. "
                          f"Got {precision!r} instead.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_model(model: Any) -> Any:
    """`model` with every layer in float32 and the same weights (for saving/export).

    A model that is already float32 everywhere is returned unchanged.

    Args:
        model: A functional `keras.Model`.

    Returns:
        A functional model whose layers compute in float32.
    """
    import keras

    if all(getattr(layer.dtype_policy, "name", "float32") == "float32"
           for layer in model.layers):
        return model

    def _clone(layer: Any) -> Any:
        config = layer.get_config()
        if "dtype" in config and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "float32"
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=_clone)
    copy.set_weights(model.get_weights())
    if getattr(model, "compiled", False):
        with contextlib.suppress(Exception):  # compile config is a convenience
            config = dict(model.get_compile_config() or {})
            config.pop("optimizer", None)
            copy.compile(optimizer="adam", **keras.saving.deserialize_keras_object(config))
    return copy


def is_tpu_strategy(strategy: Any) -> bool:
    """Whether `strategy` is a `tf.distribute.TPUStrategy` (any version)."""
    return type(strategy).__name__.startswith("TPUStrategy")


def fixed_batches(dataset: Any, batch_size: int) -> Any:
    """Keeps only full batches, with a static batch dimension (what TPUs compile).

    The same as `batch(batch_size, drop_remainder=True)` on the unbatched
    rows: the last partial batch of an epoch is dropped (at most
    `batch_size - 1` rows, a different set each epoch since the rows are
    shuffled) and every tensor gets the shape `[batch_size, ...]`.

    Args:
        dataset: A batched `tf.data.Dataset`.
        batch_size: Its batch size.

    Returns:
        The dataset of full batches.
    """
    import tensorflow as tf

    def full(*batch: Any) -> Any:
        return tf.equal(tf.shape(tf.nest.flatten(batch)[0])[0], batch_size)

    def static(*batch: Any) -> Any:
        fixed = tf.nest.map_structure(
            lambda t: tf.ensure_shape(t, [batch_size, *t.shape[1:]]), batch)
        return fixed if len(fixed) > 1 else fixed[0]

    return dataset.filter(full).map(static)


def tpu_steps_per_execution(steps_per_epoch: int) -> int:
    """Steps per `tf.function` call on a TPU: a whole epoch (one host round trip).

    TPUs pay a host round trip per call; running an epoch's steps in one
    call keeps them busy while keeping epochs whole for the callbacks.
    """
    return max(1, steps_per_epoch)
