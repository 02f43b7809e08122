"""Dead ReLUs: units of rectifier-like layers that never activate on a probe batch."""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np

from kflow.blocks.activations import is_relu_family
from kflow.errors import KflowError

__all__ = ["DeadUnitMonitor", "relu_family_layers", "alive_units_fn", "dead_unit_fractions",
           "probe_batch"]

#: Samples of the probe batch taken from the training split.
PROBE_SIZE = 128
#: Largest fraction of the training time the probe may take (short epochs probe less often).
PROBE_BUDGET = 0.02
#: Epochs between two probes at most.
MAX_PROBE_INTERVAL = 10


def _activation_name(layer: keras.layers.Layer) -> str | None:
    if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                          keras.layers.PReLU)):
        return "relu" if isinstance(layer, (keras.layers.ReLU, keras.layers.PReLU)) else (
            "leaky_relu" if isinstance(layer, keras.layers.LeakyReLU) else "elu")
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", None) if callable(fn) else None


def relu_family_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` whose output is a ReLU-family activation, in order.

    `Activation`, `ReLU`, `LeakyReLU`, `ELU` and `PReLU` layers, and layers
    with a built-in ReLU-family `activation` (e.g. `Dense(activation="relu")`);
    see `kflow.blocks.RELU_FAMILY`. Layers used more than once are skipped.
    """
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        name = _activation_name(layer)
        if not name:
            continue
        try:
            relu_like = is_relu_family(name)
        except KflowError:
            relu_like = False
        if relu_like and len(getattr(layer, "_inbound_nodes", [])) == 1:
            found.append(layer)
    return found


def probe_batch(x: Any, size: int = PROBE_SIZE) -> Any:
    """The first `size` samples of `x` (an array, DataFrame or dict of column arrays)."""
    from kflow.data.dataset import take_rows

    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    return take_rows(x, np.arange(min(n, size)))


def alive_units_fn(model: keras.Model, layers: list[keras.layers.Layer]):
    """A function `x -> [bool vector per layer]`: which units are > 0 for some sample.

    The layers run in inference mode; the reduction over samples (and
    positions) happens on the device, so only one bool per unit comes back.
    On the TensorFlow backend the function is a `tf.function`.
    """
    extractor = keras.Model(model.input, [layer.output for layer in layers])

    def alive(x):
        outputs = extractor(x, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [keras.ops.any(o > 0, axis=tuple(range(len(o.shape) - 1))) for o in outputs]

    if keras.backend.backend() != "tensorflow":
        return alive
    import tensorflow as tf

    return tf.function(alive, reduce_retracing=True)


def dead_unit_fractions(alive_fn: Any, names: list[str], x: Any) -> dict[str, float]:
    """Fraction of units (last axis) whose output is <= 0 for every sample and position.

    Args:
        alive_fn: A function from `alive_units_fn`.
        names: The names of its layers, in order.
        x: The probe batch.
    """
    alive = alive_fn(x)
    return {name: float(1.0 - np.mean(keras.ops.convert_to_numpy(a)))
            for name, a in zip(names, alive, strict=True)}


class DeadUnitMonitor(keras.callbacks.Callback):
    """Logs the fraction of dead units of each ReLU-family layer at each epoch end.

    A unit (a Dense unit or a conv channel) is dead on the probe batch when
    its activation is <= 0 for every sample (and position): a ReLU then
    passes no gradient, and the unit stops learning. The layers run in
    inference mode (BatchNorm uses its moving statistics, Dropout is off).
    Adds `dead_relu/<layer>` to the epoch logs (history.csv, TensorBoard).

    The probe runs at every epoch end unless it would cost more than
    `budget` of the training time: on very short epochs it runs every few
    epochs instead (at most `MAX_PROBE_INTERVAL` apart), and the epochs in
    between log NaN.

    Args:
        probe_x: Input samples (an array, DataFrame or dict of arrays); the
            first `PROBE_SIZE` are used.
        budget: Largest fraction of the epoch time the probe may take.
            Defaults to `PROBE_BUDGET`.

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[kflow.insight.DeadUnitMonitor(x[:256])])
    ```
    """

    def __init__(self, probe_x: Any, budget: float = PROBE_BUDGET):
        super().__init__()
        self.probe_x = probe_batch(probe_x)
        self.budget = budget
        self._extractor = None
        self._built_for = None
        self._names: list[str] = []
        self._next_probe = 0
        self._probes = 0
        self._epoch_start: float | None = None
        self.last: dict[str, float] = {}

    def on_train_begin(self, logs=None):
        self._next_probe = 0
        if self._built_for is self.model:  # built in an earlier fit() of the same model
            return
        self._built_for = self.model
        self._probes = 0
        layers = relu_family_layers(self.model)
        self._names = [layer.name for layer in layers]
        self._extractor = None
        if layers:
            self._extractor = alive_units_fn(self.model, layers)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch_start is None:  # time the epoch from its first batch
            self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._extractor is None:
            return
        fractions = dict.fromkeys(self._names, float("nan"))
        if epoch >= self._next_probe:
            start = time.perf_counter()
            self.last = fractions = dead_unit_fractions(self._extractor, self._names,
                                                        self.probe_x)
            cost = time.perf_counter() - start
            self._probes += 1
            # The first probe also traces the function: judge the cost from the second.
            epoch_time = max(start - (self._epoch_start or start), 1e-9)
            interval = 1 if self._probes == 1 else math.ceil(cost / (self.budget * epoch_time))
            self._next_probe = epoch + min(max(1, interval), MAX_PROBE_INTERVAL)
        if logs is not None:
            for name, fraction in fractions.items():
                logs[f"dead_relu/{name}"] = fraction
