"""Dead ReLUs: units of ReLU layers that output 0 for every sample of a probe batch.

Only activations with a hard zero (relu, relu6) have dead units: below 0 their
output is exactly 0 and so is their derivative, so no gradient can bring the
unit back. Leaky ReLU, ELU, GELU and swish units keep a gradient for x < 0,
so a unit with outputs <= 0 still learns; they are not probed.
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np

__all__ = ["DeadUnitMonitor", "relu_family_layers", "alive_units_fn", "dead_unit_fractions",
           "probe_batch", "layer_uses", "HARD_ZERO"]

#: Samples of the probe batch taken from the training split.
PROBE_SIZE = 128
#: Largest fraction of the training time the probe may take (short epochs probe less often).
PROBE_BUDGET = 0.02
#: Epochs between two probes at most.
MAX_PROBE_INTERVAL = 10


#: Activations with a hard zero: for inputs below 0 they output exactly 0 with a zero
#: derivative, so a unit whose input stays negative never learns again ("dead").
#: leaky_relu, elu, gelu, swish and softplus keep a non-zero derivative for x < 0:
#: their units cannot die, and an output <= 0 is a working value, not a dead unit.
HARD_ZERO = frozenset({"relu", "relu6"})


def _activation_name(layer: keras.layers.Layer) -> str | None:
    """The name of the activation `layer` applies last, if any (`None` for PReLU etc.)."""
    if isinstance(layer, keras.layers.ReLU):  # max_value / threshold keep the hard zero
        return "relu" if float(layer.negative_slope) == 0.0 else "leaky_relu"
    if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)):
        return None
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", None) if callable(fn) else None


def layer_uses(model: keras.Model) -> dict[str, int]:
    """How many times each layer of a functional model is called in its graph.

    Read from the model's public config (`inbound_nodes` of each layer; one
    per call); a `Sequential` model calls each layer once. Layers of nested
    models are counted in their own model. Returns `{}` when the model has
    no graph config (a subclassed model).
    """
    try:
        config = model.get_config()
    except (NotImplementedError, TypeError, ValueError, AttributeError):
        return {}
    layers = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return {}
    uses = {}
    for item in layers:
        if not isinstance(item, dict):
            continue
        name = item.get("name") or (item.get("config") or {}).get("name")
        nodes = item.get("inbound_nodes")
        uses[name] = len(nodes) if isinstance(nodes, list) else 1
    return uses


def relu_family_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` whose units can die, in order.

    Layers whose last operation is an activation with a hard zero
    (`HARD_ZERO`: relu, relu6): `Activation("relu")`, `ReLU` layers without
    a negative slope, and layers with a built-in `activation="relu"` (e.g.
    `Dense`). Leaky ReLU, ELU, PReLU, GELU, swish and softplus units keep a
    gradient below 0 and are not listed. Only layers of the model's own
    graph (`model.layers`) can be probed from its inputs: the layers inside
    a nested model, and layers called more than once (shared), are skipped.
    """
    if not getattr(model, "inputs", None):  # a subclassed model: no graph to probe
        return []
    uses = layer_uses(model)
    return [layer for layer in model.layers  # the graph's layers; a nested model is one
            if _activation_name(layer) in HARD_ZERO and uses.get(layer.name, 1) == 1]


def probe_batch(x: Any, size: int = PROBE_SIZE) -> Any:
    """The first `size` samples of `x` (an array, DataFrame or dict of column arrays)."""
    from kflow.data.dataset import take_rows

    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    return take_rows(x, np.arange(min(n, size)))


def alive_units_fn(model: keras.Model, layers: list[keras.layers.Layer]):
    """A function `x -> [bool vector per layer]`: which units are non-zero for some sample.

    The layers run in inference mode; the reduction over samples (and
    positions) happens on the device, so only one bool per unit comes back.
    On the TensorFlow backend the function is a `tf.function`.
    """
    extractor = keras.Model(model.input, [layer.output for layer in layers])

    def alive(x):
        outputs = extractor(x, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [keras.ops.any(o != 0, axis=tuple(range(len(o.shape) - 1))) for o in outputs]

    if keras.backend.backend() != "tensorflow":
        return alive
    import tensorflow as tf

    return tf.function(alive, reduce_retracing=True)


def dead_unit_fractions(alive_fn: Any, names: list[str], x: Any) -> dict[str, float]:
    """Fraction of units (last axis) whose output is 0 for every sample and position.

    Args:
        alive_fn: A function from `alive_units_fn`.
        names: The names of its layers, in order.
        x: The probe batch.
    """
    alive = alive_fn(x)
    return {name: float(1.0 - np.mean(keras.ops.convert_to_numpy(a)))
            for name, a in zip(names, alive, strict=True)}


class DeadUnitMonitor(keras.callbacks.Callback):
    """Logs the fraction of dead units of each ReLU layer at each epoch end.

    A unit (a Dense unit or a conv channel) of a relu/relu6 layer is dead on
    the probe batch when its output is 0 for every sample (and position):
    it then passes no gradient, and the unit stops learning. Layers with
    other activations are not probed (see `relu_family_layers`). The layers run in
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
