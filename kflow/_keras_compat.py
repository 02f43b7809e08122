"""Every use of a private Keras name in kflow, in one place.

kflow uses public Keras API wherever it does the job. What is left here
does something no public API offers; each touch is one small function whose
docstring says why it exists and which Keras versions it was checked
against, and `tests/test_keras_compat.py` has one test per touch that fails
with a message naming the private that changed. When Keras is upgraded, run
that test file first.

Sections are owned by the module that uses them; append a new section with
its own header comment rather than editing another one.

Importing this module imports keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

__all__ = [
    "KerasCompatError",
    "optimizer_var_key",
    "wrap_all_reduce_sum_gradients",
    "set_initial_epoch",
    "global_seed_generator",
]

#: The Keras versions the touches below were checked against.
CHECKED_KERAS_VERSIONS = ("3.15.1",)


class KerasCompatError(RuntimeError):
    """A private Keras name kflow relies on is gone or changed.

    The message names the private and the Keras version in use.
    """


def _changed(private: str, what: str) -> KerasCompatError:
    return KerasCompatError(
        f"Keras {keras.__version__} changed the private `{private}` that kflow uses "
        f"({what}); kflow was checked against Keras {', '.join(CHECKED_KERAS_VERSIONS)}. "
        "Update kflow/_keras_compat.py."
    )


# ---------------------------------------------------------------------------------------
# Gradient statistics (kflow.insight.insight_model)
#
# `InsightModel` records the gradients the optimizer applies: after loss-scale
# unscaling and after the all-reduce across replicas. Keras has no public hook
# between the all-reduce and the update (`Optimizer.apply` takes the replica-local
# gradients; the all-reduce happens inside the TensorFlow backend's
# `_backend_update_step`), so the optimizer's `_all_reduce_sum_gradients` is wrapped
# on the one optimizer instance, at trace time (no run-time cost).
# ---------------------------------------------------------------------------------------
def _innermost_optimizer(optimizer: Any) -> Any:
    """The optimizer that applies the updates (inside a `LossScaleOptimizer`)."""
    while isinstance(getattr(optimizer, "inner_optimizer", None), keras.optimizers.Optimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def optimizer_var_key(optimizer: Any) -> Callable[[Any], Any] | None:
    """The function the TensorFlow optimizer uses to identify a variable.

    The variables handed to `_all_reduce_sum_gradients` are the backend
    `tf.Variable`s (under a `tf.distribute` strategy, replica components),
    not the Keras variables of `model.trainable_variables`; the optimizer's
    private `_var_key` maps both to the same key. Checked against Keras
    3.15.1 (TensorFlow backend).

    Args:
        optimizer: A compiled model's optimizer (a `LossScaleOptimizer` is
            looked through).

    Returns:
        `variable -> key`, or `None` when the backend has no such method
        (not TensorFlow): gradient statistics are then not recorded.
    """
    inner = _innermost_optimizer(optimizer)
    key = getattr(inner, "_var_key", None)
    return key if callable(key) else None


def wrap_all_reduce_sum_gradients(
    optimizer: Any, on_reduced: Callable[[list[tuple[Any, Any]]], None]
) -> bool:
    """Calls `on_reduced(grads_and_vars)` with the gradients the optimizer applies.

    Replaces, on this optimizer instance only, the TensorFlow backend's
    private `_all_reduce_sum_gradients(grads_and_vars)`, which every update
    step calls with the (unscaled, clipped) replica gradients and which
    returns them summed across replicas. The wrapper returns the original's
    result unchanged. Wrapping the same optimizer again replaces the
    callback (no double wrapping). Checked against Keras 3.15.1.

    Args:
        optimizer: A compiled model's optimizer (a `LossScaleOptimizer` is
            looked through).
        on_reduced: Called at trace time with the list of
            `(gradient, variable)` pairs after the all-reduce.

    Returns:
        `False` when the optimizer has no such method (not the TensorFlow
        backend), else `True`.

    Example:

    ```python
    seen = []
    wrap_all_reduce_sum_gradients(model.optimizer, seen.append)
    model.fit(x, y, epochs=1)  # seen: one list of pairs per traced step
    ```
    """
    inner = _innermost_optimizer(optimizer)
    original = getattr(inner, "_all_reduce_sum_gradients", None)
    if not callable(original):
        return False
    hook = getattr(inner, "_kflow_all_reduce_hook", None)
    if isinstance(hook, _Hook):
        hook.callback = on_reduced
        return True
    hook = _Hook(on_reduced)

    def _all_reduce_sum_gradients(grads_and_vars):
        reduced = original(grads_and_vars)
        hook.callback(reduced)
        return reduced

    # object.__setattr__: Keras' attribute tracking would copy a dict or list.
    object.__setattr__(inner, "_all_reduce_sum_gradients", _all_reduce_sum_gradients)
    object.__setattr__(inner, "_kflow_all_reduce_hook", hook)
    return True


class _Hook:
    """The current callback of a wrapped optimizer (replaced when wrapped again)."""

    def __init__(self, callback: Callable[[list[tuple[Any, Any]]], None]):
        self.callback = callback


# ---------------------------------------------------------------------------------------
# Exact resume (kflow.training.callbacks.backup)
#
# `ResumableBackup` restores a run's whole state and continues with the next epoch.
# Keras offers no public way for a callback to choose the epoch `fit` starts from
# (`keras.callbacks.BackupAndRestore` sets the private `Model._initial_epoch`, which
# `fit` reads after `on_train_begin`), nor to reach the global `SeedGenerator` that
# unseeded `keras.random` calls advance. kflow's trainer passes `initial_epoch` to
# `fit` itself; these touches keep the callback a drop-in for plain Keras users.
# ---------------------------------------------------------------------------------------
def set_initial_epoch(model: Any, epoch: int | None) -> None:
    """Makes a running `fit` start at `epoch` (call from `on_train_begin`).

    Sets the private `Model._initial_epoch`, as `keras.callbacks.BackupAndRestore`
    does: `fit` reads it after `on_train_begin` (`initial_epoch =
    self._initial_epoch or initial_epoch`). `None` clears it, so a later `fit`
    starts where its own `initial_epoch` says. Checked against Keras 3.15.1.

    Args:
        model: The model being fitted.
        epoch: The first epoch (0-based), or `None`.

    Raises:
        KerasCompatError: `Model` no longer has `_initial_epoch`.
    """
    if not hasattr(model, "_initial_epoch"):
        raise _changed("Model._initial_epoch", "read by fit() after on_train_begin")
    model._initial_epoch = epoch


def global_seed_generator(create: bool = False) -> Any:
    """Keras' global `SeedGenerator` (advanced by `keras.random` calls without a seed).

    Reads the private global attribute `global_seed_generator` of
    `keras.src.backend.common.global_state` (`keras.src.random.seed_generator.
    global_seed_generator()` creates it on first use). Checked against Keras
    3.15.1.

    Args:
        create: Create it when it does not exist yet. Defaults to `False`.

    Returns:
        A `keras.random.SeedGenerator` (its `state` is a variable), or `None`
        when none exists and `create` is false.

    Raises:
        KerasCompatError: The private names moved.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
    except ImportError as e:
        raise _changed("keras.src.random.seed_generator", str(e)) from e
    name = getattr(seed_generator, "GLOBAL_SEED_GENERATOR", None)
    if name is None or not hasattr(seed_generator, "global_seed_generator"):
        raise _changed("keras.src.random.seed_generator.GLOBAL_SEED_GENERATOR",
                       "the global SeedGenerator's name")
    generator = global_state.get_global_attribute(name)
    if generator is None and create:
        generator = seed_generator.global_seed_generator()
    if generator is not None and not isinstance(generator, keras.random.SeedGenerator):
        raise _changed(name, f"holds a {type(generator).__name__}, not a SeedGenerator")
    return generator
