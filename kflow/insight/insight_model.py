"""`InsightModel`: a functional Keras model whose training records gradient statistics.

About every `grad_log_every` optimizer steps one train step computes, from
the gradients it already has, per-layer figures and keeps them in a small
ring buffer of non-trainable variables that `GradientNormLogger` reads
between steps:

- the L2 norm of each layer's gradient (all its trainable variables
  together) and of the whole gradient (`total`);
- the L2 norm of each layer's weights after the update;
- the update/weight ratio `||w_t - w_(t-1)|| / ||w_(t-1)||` of the step.

The gradients are those the optimizer applies: after loss-scale unscaling,
after the all-reduce across replicas (under `MirroredStrategy` these are the
norms of the summed, global-batch gradient) and after clipping.

The recording step is the first step of a call of the train function (one
call runs `steps_per_execution` steps): a call whose first step has reached
the next multiple of N records it, and every other call is Keras' own train
function, unchanged, so the steps that do not record cost what they cost in
plain Keras. With `steps_per_execution` S > N, a row is recorded every S
steps.

Only the TensorFlow backend records anything; elsewhere the model trains as
a plain `keras.Model`. The statistics variables are not Keras weights, so
they are not saved to `.keras` files or checkpoints.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

__all__ = ["InsightModel", "LayerGroup", "as_insight_model", "custom_objects"]

#: Ring-buffer rows kept in addition to those one `steps_per_execution` call can fill.
SPARE_ROWS = 64


@dataclass(frozen=True)
class LayerGroup:
    """The trainable variables of one layer, as one row of the statistics.

    Attributes:
        name: The layer path (`hidden_0_dense`, `block/conv`), the prefix of
            its variables' `path`.
        kind: The layer's class name (`Dense`, `Conv2D`, `BatchNormalization`).
        params: Number of trainable scalars in the layer.
    """

    name: str
    kind: str
    params: int


def layer_groups(model: keras.Model) -> tuple[list[LayerGroup], list[int]]:
    """Groups `model.trainable_variables` by layer, in layer order.

    Returns:
        The groups and, for each trainable variable, the index of its group.
    """
    kinds = {layer.name: type(layer).__name__ for layer in _all_layers(model)}
    names: list[str] = []
    params: dict[str, int] = {}
    index: list[int] = []
    for variable in model.trainable_variables:
        path = getattr(variable, "path", None) or variable.name
        prefix = path.rsplit("/", 1)[0] if "/" in path else path
        if prefix not in params:
            names.append(prefix)
            params[prefix] = 0
        params[prefix] += int(np.prod(variable.shape)) if variable.shape else 1
        index.append(names.index(prefix))
    groups = [LayerGroup(n, kinds.get(n.rsplit("/", 1)[-1], "Layer"), params[n]) for n in names]
    return groups, index


def _all_layers(model: Any) -> list[Any]:
    """The layers of `model` and of the models nested in it (public `.layers` only)."""
    found: list[Any] = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found


def _functional_class() -> type:
    """The class Keras gives `keras.Model(inputs, outputs)` (no private import needed)."""
    global _FUNCTIONAL
    if _FUNCTIONAL is None:
        x = keras.Input((1,))
        _FUNCTIONAL = type(keras.Model(x, keras.layers.Identity()(x)))
    return _FUNCTIONAL


_FUNCTIONAL: type | None = None


class _GradStatsState:
    """Graph-side state of the statistics: ring buffers of the recorded steps.

    A plain object (not a Keras layer, list or dict), so Keras does not track
    its variables as model weights.
    """

    def __init__(self, model: InsightModel, every: int, capacity: int):
        import tensorflow as tf

        self.every = every
        self.capacity = capacity
        self.groups, self.var_group = layer_groups(model)
        self.variables = list(model.trainable_variables)
        self.local = threading.local()
        n = len(self.groups) + 1  # layers + total
        on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.MEAN)
        with model.distribute_strategy.scope():
            nan = float("nan")
            self.steps = tf.Variable(tf.fill([capacity], tf.constant(-1.0, tf.float64)),
                                     name="insight_steps", **on_read)
            self.grad = tf.Variable(tf.fill([capacity, n], nan), name="insight_grad", **on_read)
            self.weight = tf.Variable(tf.fill([capacity, n], nan), name="insight_weight",
                                      **on_read)
            self.ratio = tf.Variable(tf.fill([capacity, n], nan), name="insight_ratio",
                                     **on_read)
            self.pending_grad = tf.Variable(tf.fill([n], nan), name="insight_pending_grad",
                                            **on_read)
        self.keys: dict[Any, int] = {}
        self.var_key: Any = None
        #: The first optimizer step at which a train-function call records.
        self.due = 0
        #: Rows written so far (the next row is `rows % capacity`).
        self.rows = 0
        #: The row tensor of the recording execution being traced.
        self.trace_row: Any = None

    # -- graph code -----------------------------------------------------------
    def _norms(self, per_var: list[tuple[int, Any]]):
        """Per-group and total L2 norms from `(group, tensor)` pairs (NaN: no tensor)."""
        import tensorflow as tf

        groups = len(self.groups)
        squares = tf.stack([
            tf.reduce_sum(tf.square(tf.cast(t.values if isinstance(t, tf.IndexedSlices) else t,
                                            tf.float32)))
            for _, t in per_var])
        ids = tf.constant([g for g, _ in per_var], tf.int32)
        per_group = tf.math.unsorted_segment_sum(squares, ids, groups)
        present = {g for g, _ in per_var}
        if len(present) < groups:
            mask = tf.constant([g in present for g in range(groups)])
            per_group = tf.where(mask, per_group, float("nan"))
        total = tf.reduce_sum(squares)
        return tf.sqrt(tf.concat([per_group, [total]], axis=0))

    def record_gradients(self, grads_and_vars) -> None:
        """Stores the norms of the applied gradients (called inside the optimizer)."""

        local = self.local
        if not getattr(local, "active", False):
            return
        pairs = []
        for grad, var in grads_and_vars:
            group = self.keys.get(self.var_key(var)) if grad is not None else None
            if group is not None:
                pairs.append((group, grad))
        if pairs:
            self.pending_grad.assign(self._norms(pairs))

    def write_row(self, row, step, before) -> None:
        """After the update of a recording step: writes its row of the ring buffer.

        Args:
            row: The row (int32 scalar tensor, < capacity).
            step: The optimizer step (0-based) the row belongs to.
            before: The trainable variables' values before the update.
        """
        import tensorflow as tf

        step_f = tf.cast(step, tf.float64)
        weights = [tf.convert_to_tensor(v) for v in self.variables]
        weight_norms = self._norms(list(zip(self.var_group, weights, strict=True)))
        deltas = [w - b for w, b in zip(weights, before, strict=True)]
        update_norms = self._norms(list(zip(self.var_group, deltas, strict=True)))
        before_norms = self._norms(list(zip(self.var_group, before, strict=True)))
        ratio = update_norms / tf.maximum(before_norms, 1e-30)
        row = tf.reshape(row, [1, 1])
        self.steps.assign(tf.tensor_scatter_nd_update(self.steps, row, [step_f + 1.0]))
        self.grad.assign(tf.tensor_scatter_nd_update(self.grad, row, [self.pending_grad]))
        self.weight.assign(tf.tensor_scatter_nd_update(self.weight, row, [weight_norms]))
        self.ratio.assign(tf.tensor_scatter_nd_update(self.ratio, row, [ratio]))
        self.pending_grad.assign(tf.fill([len(self.groups) + 1], float("nan")))

    # -- host side ------------------------------------------------------------
    def read(self) -> dict[str, np.ndarray]:
        """The buffer as NumPy arrays (averaged over replicas, which agree)."""
        return {
            "steps": np.asarray(self.steps.numpy()),
            "grad": np.asarray(self.grad.numpy()),
            "weight": np.asarray(self.weight.numpy()),
            "ratio": np.asarray(self.ratio.numpy()),
        }


def _hook_optimizer(optimizer: Any, state: _GradStatsState) -> bool:
    """Makes the optimizer hand its all-reduced gradients to `state` each step.

    See `kflow._keras_compat.wrap_all_reduce_sum_gradients`: the hook runs
    while the train step is traced, so it costs nothing at run time.
    Returns `False` when the optimizer offers no such hook (gradient norms
    are then not recorded).
    """
    from kflow._keras_compat import optimizer_var_key, wrap_all_reduce_sum_gradients

    var_key = optimizer_var_key(optimizer)
    if var_key is None:
        return False
    state.keys = {var_key(v): g for v, g in zip(state.variables, state.var_group, strict=True)}
    state.var_key = var_key
    return wrap_all_reduce_sum_gradients(optimizer, state.record_gradients)


@keras.saving.register_keras_serializable(package="kflow")
class InsightModel(keras.Model):
    """A functional `keras.Model` that records gradient statistics while it trains.

    Construct it like a functional model. Every `grad_log_every` optimizer
    steps its train step stores per-layer gradient norms, weight norms and
    update/weight ratios (see the module docstring); `GradientNormLogger`
    writes them to `grad_norms.csv`, the history and TensorBoard. It works
    with `steps_per_execution > 1` and under `tf.distribute` strategies, and
    saves to / reloads from `.keras` files like the functional model it is
    (in a fresh process, import `kflow.insight.insight_model` or pass
    `custom_objects()` to `keras.models.load_model`). Runs do not save it:
    their `model.keras` holds `kflow.training.plain_model.to_plain_model(model)`, a
    plain functional model with the same weights that Keras alone loads.

    Args:
        *args: `inputs, outputs` as for `keras.Model`.
        grad_log_every: Record about every N optimizer steps (at the first
            step of a train-function call, once the step count has reached
            the next multiple of N); 0 turns recording off. Defaults to 10.
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Example:

    ```python
    inputs = keras.Input((64,))
    x = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    model = kflow.insight.InsightModel(inputs, outputs, grad_log_every=5)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, callbacks=[kflow.insight.GradientNormLogger("grads.csv")])
    ```
    """

    def __init__(self, *args: Any, grad_log_every: int = 10, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if isinstance(grad_log_every, bool) or not isinstance(grad_log_every, int) or (
                grad_log_every < 0):
            raise ValueError(
                f"`grad_log_every` must be an int >= 0 (0: off). Got {grad_log_every!r} instead."
            )
        self.grad_log_every = grad_log_every
        self._grad_stats = None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "grad_log_every": self.grad_log_every}

    # -- statistics -----------------------------------------------------------
    @property
    def grad_stats(self) -> _GradStatsState | None:
        """The statistics state (`None` until training starts or when off)."""
        return self._grad_stats

    @property
    def insight_groups(self) -> list[LayerGroup]:
        """The layers whose statistics are recorded, in layer order."""
        return layer_groups(self)[0]

    def make_train_function(self, force: bool = False):
        if self.train_function is not None and not force:
            return self.train_function
        object.__setattr__(self, "_grad_stats", None)
        self._build_optimizer()
        super().make_train_function(force=True)  # Keras' own: the plain executions
        if self._records():
            capacity = 1 + SPARE_ROWS
            state = _GradStatsState(self, self.grad_log_every, capacity)
            if _hook_optimizer(self.optimizer, state):
                object.__setattr__(self, "_grad_stats", state)
                self.train_function = _RecordingTrainFunction(
                    self, self.train_function,
                    _recording_execution(self, state, self.train_function), state)
        return self.train_function

    def _build_optimizer(self) -> None:
        """Creates the optimizer's slot variables now, as Keras does under a strategy.

        Without an explicit strategy Keras defers them to the first trace of
        the train function, and a `tf.function` that creates variables while
        it is traced is traced twice: every train function (Keras' own and the
        recording one) paid for two traces of the train step.
        """
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None or optimizer.built or not self.trainable_variables:
            return
        with self.distribute_strategy.scope():
            optimizer.build(self.trainable_variables)

    def _records(self) -> bool:
        return (self.grad_log_every > 0 and keras.backend.backend() == "tensorflow"
                and bool(self.trainable_variables)
                and getattr(self, "optimizer", None) is not None)

    def _recording_step(self, data):
        """Keras' train step, also recording the gradient, weight and update norms."""
        import tensorflow as tf

        state = self._grad_stats
        row = state.trace_row
        step = tf.convert_to_tensor(self.optimizer.iterations)
        before = [tf.identity(tf.convert_to_tensor(v)) for v in state.variables]
        state.local.active = True
        try:
            logs = self.train_step(data)
        finally:
            state.local.active = False
        state.write_row(row, step, before)
        return logs


class _RecordingTrainFunction:
    """`model.train_function`: Keras' own, or a recording execution when one is due.

    A call runs up to `steps_per_execution` steps, as Keras' function does.
    When the optimizer step at its start has reached `state.due`, the call
    is a recording execution (its first step records; see
    `_recording_execution`) and the next one is due at the next multiple of
    `grad_log_every`. Every other call is Keras' function, unchanged. The
    step is read on the host once per call, where Keras' function already
    waits for its result; every worker of a multi-worker job reads the same
    step, so all take the same branch.
    """

    def __init__(self, model: InsightModel, keras_function: Any, recording: Any,
                 state: _GradStatsState):
        self.model = model
        self.keras_function = keras_function
        self.recording = recording
        self.state = state

    def __call__(self, iterator: Any) -> Any:
        import tensorflow as tf

        if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            state = self.state
            if step >= state.due:
                state.due = (step // state.every + 1) * state.every
                row = state.rows % state.capacity
                state.rows += 1
                ran, logs = self.recording(iterator, tf.constant(row, tf.int32))
                if not bool(ran):
                    raise StopIteration
                return logs
        return self.keras_function(iterator)


def _recording_execution(model: InsightModel, state: _GradStatsState,
                         keras_function: Any = None) -> Any:
    """A train function whose first step records, followed by plain Keras steps.

    Returns `f(iterator) -> (ran, logs)`: up to `steps_per_execution` steps
    (fewer when the data ends; `ran` is false when there was none), the
    first through `model._recording_step`, the others through Keras' own
    one-step function of `keras_function` (the same traced function as
    Keras' loop: no second trace), or, where that cannot be found, Keras'
    `train_step` under `strategy.run` with its outputs reduced as in Keras'
    loop. The recording step is traced inline (no nested `tf.function`), so
    it runs under every strategy; `jit_compile` does not apply to it.
    """
    import tensorflow as tf

    from kflow._keras_compat import keras_train_step_function, reduce_step_outputs

    strategy = model.distribute_strategy
    spe = max(1, int(getattr(model, "steps_per_execution", 1) or 1))

    def one(step_fn, data):
        return reduce_step_outputs(strategy.run(step_fn, args=(data,)), strategy)

    keras_step = keras_train_step_function(keras_function)

    def plain_step(data):
        return keras_step(data) if keras_step is not None else one(model.train_step, data)

    def execution(iterator, row):
        first = iterator.get_next_as_optional()
        traced: dict[str, Any] = {}

        def record():
            state.trace_row = row  # read by the replicas' steps while they are traced
            traced["logs"] = one(model._recording_step, first.get_value())
            return traced["logs"]

        def nothing():  # traced after `record`: same structure, zeros
            return tf.nest.map_structure(
                lambda t: tf.zeros([d or 0 for d in t.shape], t.dtype), traced["logs"])

        ran = first.has_value()
        logs = tf.cond(ran, record, nothing)
        if spe == 1:
            return ran, logs

        def more(i, logs, nxt):
            return tf.logical_and(i < spe, nxt.has_value())

        def plain(i, logs, nxt):
            logs = plain_step(nxt.get_value())
            nxt = tf.cond(i + 1 < spe, iterator.get_next_as_optional, lambda: nxt)
            return i + 1, logs, nxt

        nxt = tf.cond(ran, iterator.get_next_as_optional, lambda: first)
        _, logs, _ = tf.while_loop(more, plain, [tf.constant(1), logs, nxt])
        return ran, logs

    if model.run_eagerly:
        return execution
    return tf.function(execution, reduce_retracing=True, autograph=False)


def as_insight_model(model: keras.Model, grad_log_every: int = 10) -> keras.Model:
    """Returns a functional `model` as an `InsightModel` over the same layers.

    Models that are already `InsightModel`s get their `grad_log_every` set.
    Subclassed models (with their own `call`) cannot be rebuilt and are
    returned unchanged.
    """
    if isinstance(model, InsightModel):
        model.grad_log_every = grad_log_every
        return model
    if not isinstance(model, _functional_class()):
        return model
    return InsightModel(model.input, model.output, name=model.name,
                        grad_log_every=grad_log_every)


def custom_objects() -> dict[str, Any]:
    """The Keras classes of `kflow.insight`, for `keras.models.load_model(custom_objects=)`."""
    return {"kflow>InsightModel": InsightModel}
