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
    "ema_weights_in_model",
    "reduce_step_outputs",
    "keras_train_step_function",
    "keras_multi_step_function",
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


# ---------------------------------------------------------------------------------------
# EMA weights across a resume (kflow.training.features.EmaWeights)
#
# `keras.callbacks.SwapEMAWeights(swap_on_epoch=True)` keeps in the private flag
# `_ema_weights_in_model` whether the model holds the averaged weights (between an
# epoch's end and the next one's start). kflow's backup is written in that window, so
# a resumed run must set the flag again to swap the raw weights back; no public API
# sets it.
# ---------------------------------------------------------------------------------------
def ema_weights_in_model(callback: Any, value: bool | None = None) -> bool:
    """Reads (or, with `value`, sets) whether a `SwapEMAWeights` swapped the EMA weights in.

    Checked against Keras 3.15.1.

    Raises:
        KerasCompatError: `SwapEMAWeights` no longer has `_ema_weights_in_model`.
    """
    if not hasattr(callback, "_ema_weights_in_model"):
        raise _changed("SwapEMAWeights._ema_weights_in_model",
                       "whether the model holds the EMA weights")
    if value is not None:
        callback._ema_weights_in_model = bool(value)
    return bool(callback._ema_weights_in_model)


# ---------------------------------------------------------------------------------------
# Multi-worker and multi-step training (kflow.training.distributed)
#
# Keras 3.15 `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
# (keras-team/keras#20585, open): `_maybe_symbolic_build` takes one distributed batch
# and calls `strategy.reduce("MEAN", batch)` on it, a cross-worker collective run
# eagerly outside any step ("Attempt to convert a value (PerReplica...)"), and
# `reduce_per_replica` reduces each scalar metric with `strategy.reduce("MEAN", v,
# axis=0)`, which fails on a scalar. And with several replicas (any strategy) the
# multi-step loop of `steps_per_execution > 1` fails with "You must feed a value for
# placeholder tensor 'while/cond/Placeholder'": the step is a nested `tf.function`
# called inside the `tf.cond` of the loop's `tf.while_loop`, and `strategy.run` inside
# that nested function leaves an input of the cond branch unfed. Tracing the step
# inline (no nested `tf.function`) gives the same numbers as one step per call.
# ---------------------------------------------------------------------------------------
def _tf_trainer_module() -> Any:
    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError as e:
        raise _changed("keras.src.backend.tensorflow.trainer", str(e)) from e
    return tf_trainer


def reduce_step_outputs(values: Any, strategy: Any) -> Any:
    """Reduces one train step's per-replica outputs as Keras' own train function does.

    Calls the private module function
    `keras.src.backend.tensorflow.trainer.reduce_per_replica(values, strategy,
    reduction="auto")`, looked up at each call so that
    `install_multi_worker_reduce` applies. `InsightModel`'s recording
    executions use it so their logs are those Keras' loop would return.
    Checked against Keras 3.15.1.

    Raises:
        KerasCompatError: The private function moved.
    """
    reduce = getattr(_tf_trainer_module(), "reduce_per_replica", None)
    if not callable(reduce):
        raise _changed("keras.src.backend.tensorflow.trainer.reduce_per_replica",
                       "reduces a train step's per-replica logs")
    return reduce(values, strategy, reduction="auto")


def keras_train_step_function(train_function: Any) -> Callable[[Any], Any] | None:
    """The one-step function inside Keras' `model.train_function`, or `None`.

    Reads the closure variable `one_step_on_data` of the function that the
    TensorFlow trainer's private `_make_function` returns: `strategy.run` of
    the train step plus the logs' reduction, a `tf.function` (inline under
    `inline_replica_steps`). `InsightModel`'s recording executions call it for
    their plain steps, so that TensorFlow traces the train step once for both
    functions (a second trace costs 1-2 s on a small CNN). Checked against
    Keras 3.15.1.
    """
    return _closure_function(train_function, "one_step_on_data")


def keras_multi_step_function(train_function: Any) -> Callable[[Any], Any] | None:
    """The compiled multi-step function inside Keras' `model.train_function`, or `None`.

    The closure variable `multi_step_on_iterator` of the same private
    `_make_function` (a `tf.function` unless the model runs eagerly): its
    tracing count tells how often Keras' train step was traced. Checked
    against Keras 3.15.1.
    """
    return _closure_function(train_function, "multi_step_on_iterator")


def _closure_function(function: Any, name: str) -> Callable[[Any], Any] | None:
    """The callable closure variable `name` of `function`, or `None`."""
    code = getattr(function, "__code__", None)
    closure = getattr(function, "__closure__", None) or ()
    if code is None or name not in code.co_freevars:
        return None
    value = closure[code.co_freevars.index(name)].cell_contents
    return value if callable(value) else None


def install_multi_worker_reduce() -> None:
    """Makes `fit`/`evaluate` reduce scalar logs across workers (idempotent).

    Replaces the TensorFlow trainer's private module function
    `reduce_per_replica(values, strategy, reduction)`: under a multi-worker
    collective strategy, `"auto"`/`"mean"` reductions become
    `strategy.reduce("MEAN", v, axis=None)` (the mean over all replicas of
    all workers, a collective every worker runs in the same step); every
    other case is passed to the original. Checked against Keras 3.15.1
    (keras-team/keras#20585).

    Raises:
        KerasCompatError: The private function or its helpers moved.
    """
    module = _tf_trainer_module()
    original = getattr(module, "reduce_per_replica", None)
    is_multi_worker = getattr(module, "_collective_all_reduce_multi_worker", None)
    if not callable(original) or not callable(is_multi_worker):
        raise _changed("keras.src.backend.tensorflow.trainer.reduce_per_replica",
                       "reduces the step's logs across replicas")
    if getattr(original, "_kflow_multi_worker", False):
        return
    import tensorflow as tf

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            def _mean(v: Any) -> Any:
                if isinstance(v, tf.distribute.DistributedValues):
                    return strategy.reduce("MEAN", v, axis=None)
                return v

            return tf.nest.map_structure(_mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica._kflow_multi_worker = True  # type: ignore[attr-defined]
    reduce_per_replica._kflow_original = original  # type: ignore[attr-defined]
    module.reduce_per_replica = reduce_per_replica


def local_symbolic_build(model: Any) -> None:
    """Builds `model`'s metrics from a local batch, not a cross-worker reduction.

    Replaces, on this model instance only, the private
    `Model._maybe_symbolic_build(iterator=None, data_batch=None)` that
    `fit`/`evaluate` call first: it takes one batch of the distributed
    iterator and, instead of `strategy.reduce("MEAN", batch)`, uses the first
    local replica's part of it (only its shape and dtype matter), then calls
    the public-shaped `Model._symbolic_build(data_batch=...)` in the strategy
    scope. Checked against Keras 3.15.1 (keras-team/keras#20585).

    Args:
        model: A compiled model under a `tf.distribute` strategy.

    Raises:
        KerasCompatError: `Model` has no `_maybe_symbolic_build` or
            `_symbolic_build` any more.
    """
    if not callable(getattr(model, "_maybe_symbolic_build", None)) or not callable(
            getattr(model, "_symbolic_build", None)):
        raise _changed("Model._maybe_symbolic_build",
                       "builds metrics from one batch at the start of fit")
    import tensorflow as tf

    def _maybe_symbolic_build(iterator: Any = None, data_batch: Any = None) -> None:
        strategy = model.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: (strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v),
                    batch)
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    object.__setattr__(model, "_maybe_symbolic_build", _maybe_symbolic_build)


def inline_replica_steps(model: Any) -> None:
    """Lets `steps_per_execution > 1` run with several replicas.

    Replaces, on this model instance only, `make_train_function` and
    `make_test_function` with versions that build Keras' own functions
    while the private module attribute `tf` of
    `keras.src.backend.tensorflow.trainer` is a view of TensorFlow whose
    `tf.function` leaves the inner `one_step_on_data` step a plain Python
    function: the step is then traced inline into the multi-step
    `tf.while_loop` (which is still one `tf.function`). The cost: that inner
    step is not compiled with XLA on its own (`jit_compile` has no effect
    on it). Checked against Keras 3.15.1.

    Args:
        model: A compiled model.

    Raises:
        KerasCompatError: The trainer module has no `tf` attribute, or its
            step function is no longer named `one_step_on_data`.
    """
    module = _tf_trainer_module()
    real_tf = getattr(module, "tf", None)
    if real_tf is None or "def one_step_on_data" not in _source(module):
        raise _changed("keras.src.backend.tensorflow.trainer.tf / one_step_on_data",
                       "the multi-step loop's inner step")
    cls = type(model)

    def _make(method: str) -> Callable[..., Any]:
        def make(force: bool = False) -> Any:
            module.tf = _InlineStepTF(real_tf)
            try:
                return getattr(cls, method)(model, force=force)
            finally:
                module.tf = real_tf

        return make

    for method in ("make_train_function", "make_test_function"):
        object.__setattr__(model, method, _make(method))


def _source(module: Any) -> str:
    import inspect

    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return ""


class _InlineStepTF:
    """TensorFlow, except that `function(one_step_on_data)` returns it unchanged."""

    def __init__(self, tf: Any):
        self._tf = tf

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tf, name)

    def function(self, func: Any = None, **kwargs: Any) -> Any:
        if func is not None and getattr(func, "__name__", "") == "one_step_on_data":
            return func
        if func is None:
            return lambda f: self.function(f, **kwargs)
        return self._tf.function(func, **kwargs)


# ---------------------------------------------------------------------------------------
# Peer timeouts of a multi-worker job (kflow.training.distributed) -- TensorFlow, not Keras
#
# `MultiWorkerMirroredStrategy` starts TensorFlow's coordination service with its
# defaults: the start waits without limit for every worker to register, inside C++
# that holds the GIL (no Python watchdog can run). TensorFlow has no public option;
# configuring the service first, as the strategy itself does, with timeouts, makes
# the start fail (DeadlineExceeded) and a dead peer be reported after the heartbeat
# timeout. The strategy keeps a service configured before it.
# ---------------------------------------------------------------------------------------
def configure_coordination_service(resolver: Any, *, register_timeout_s: float,
                                   heartbeat_timeout_s: float) -> bool:
    """Configures TensorFlow's coordination service for `resolver`'s cluster, with timeouts.

    Calls the private `tensorflow.python.eager.context.context().
    configure_coordination_service` with the arguments
    `MultiWorkerMirroredStrategy._initialize_multi_worker` uses (standalone
    service, leader from `multi_worker_util.coordination_leader`, the chief
    and worker jobs), plus `cluster_register_timeout_in_ms` and
    `heartbeat_timeout_in_ms`. Call it before creating the strategy.
    Checked against TensorFlow 2.21.

    Args:
        resolver: A `tf.distribute.cluster_resolver.ClusterResolver`.
        register_timeout_s: How long the start waits for every worker.
        heartbeat_timeout_s: After how long without heartbeats a worker is
            declared dead (its peers' collectives then fail).

    Returns:
        `False` when a service was already configured (nothing changed).

    Raises:
        KerasCompatError: The private TensorFlow names moved.
    """
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context
    except ImportError as e:
        raise _changed("tensorflow.python.eager.context", str(e)) from e
    ctx = context.context()
    if not hasattr(ctx, "configure_coordination_service") or not hasattr(
            multi_worker_util, "coordination_leader"):
        raise _changed("context().configure_coordination_service",
                       "starts TensorFlow's coordination service")
    if ctx.coordination_service is not None:
        return False
    spec = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=max(1, int(register_timeout_s * 1000)),
        heartbeat_timeout_in_ms=max(1, int(heartbeat_timeout_s * 1000)),
    )
    return True
