"""Activation statistics: how the signal's spread changes from layer to layer.

The lecture's point about initialization: with He initialization the
activations of a deep ReLU network keep their variance layer after layer,
with Xavier (Glorot) initialization they shrink (ReLU zeroes half of each
layer's input, and Xavier does not make up for it). For tanh the lecture
says the reverse; what the statistics show on `recipes/lecture/deep_init.yaml`
(12 layers of 64 units) is that Xavier lets the spread shrink only slowly,
and He holds it at a plateau (variance ~0.3) with few saturated units
(`tests/test_lecture_claims.py`).

`activation_stats(model, x)` runs a probe batch through a model (inference
mode) and returns, for each hidden activation layer in graph order, the
mean, variance and standard deviation of its outputs, the fraction of exact
zeros and, for tanh/sigmoid, the fraction of saturated outputs: plain
dicts, no Keras objects. `recipe_activation_stats(recipe, ...)` does it for
a recipe's freshly initialized model (what `kflow inspect RECIPE` prints).
The probe batch is the first `PROBE_SIZE` training samples, as for the
dead-unit probe (`kflow.insight.dead_units.probe_batch`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kflow.insight.dead_units import PROBE_SIZE, _activation_name, layer_uses, probe_batch

__all__ = ["activation_layers", "activation_stats", "recipe_activation_stats",
           "ActivationStats", "variance_ratio", "SATURATION"]

#: A tanh output with |a| above this, or a sigmoid output within 1 - this of 0 or 1,
#: is saturated: its derivative is nearly 0 (< 0.02 for tanh, < 0.01 for sigmoid).
SATURATION = 0.99

#: Activations that are not a non-linearity of a hidden layer.
_NOT_HIDDEN = frozenset({"linear", "softmax", "log_softmax"})


def activation_layers(model: Any) -> list[Any]:
    """The hidden layers of `model` that end in a non-linear activation, in graph order.

    `Activation`, `ReLU`/`LeakyReLU`/`ELU`/`PReLU` layers and layers with a
    built-in non-linear `activation` (a `Dense(activation="relu")`). The
    model's output layers (softmax/sigmoid heads) and layers called more
    than once are skipped; layers of a nested model are not reached (as in
    `kflow.insight.dead_units.relu_family_layers`).
    """
    import keras

    if not getattr(model, "inputs", None):  # a subclassed model: no graph to probe
        return []
    uses = layer_uses(model)
    outputs = {id(t) for t in model.outputs}
    found = []
    for layer in model.layers:
        if uses.get(layer.name, 1) != 1 or isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            if id(layer.output) in outputs:
                continue
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                              keras.layers.PReLU)):
            found.append(layer)
            continue
        name = _activation_name(layer)
        if name is not None and name not in _NOT_HIDDEN:
            found.append(layer)
    return found


def _layer_activation(layer: Any) -> str:
    import keras

    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    if isinstance(layer, keras.layers.ELU):
        return "elu"
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    return _activation_name(layer) or type(layer).__name__.lower()


def _saturated(values: np.ndarray, activation: str) -> float | None:
    if activation in ("tanh", "soft_sign", "softsign"):
        return float(np.mean(np.abs(values) > SATURATION))
    if activation in ("sigmoid", "hard_sigmoid"):
        return float(np.mean(np.minimum(values, 1.0 - values) < 1.0 - SATURATION))
    return None


def activation_stats(model: Any, x: Any, layers: list[Any] | None = None) -> list[dict]:
    """Statistics of each hidden activation layer's outputs on a probe batch.

    The model runs in inference mode (BatchNorm uses its moving statistics,
    Dropout is off). Each statistic is taken over all samples, positions
    and units of the layer's output.

    Args:
        model: A functional or Sequential Keras model.
        x: The probe inputs (array, DataFrame or dict of arrays), as the
            model takes them.
        layers: The layers to probe. Defaults to `activation_layers(model)`.

    Returns:
        One dict per layer, input side first: `layer`, `kind` (the Keras
        class), `activation`, `units` (size of the last axis), `mean`,
        `variance`, `std`, `zero_fraction` (exact zeros: dead ReLU outputs)
        and `saturated_fraction` (tanh/sigmoid outputs within 1% of their
        bounds; `None` for other activations).

    Example:

    ```python
    stats = activation_stats(model, x_train[:128])
    for row in stats:
        print(row["layer"], row["std"])
    ```
    """
    import keras

    layers = activation_layers(model) if layers is None else list(layers)
    if not layers:
        return []
    extractor = keras.Model(model.input, [layer.output for layer in layers])
    outputs = extractor(x, training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    rows = []
    for layer, out in zip(layers, outputs, strict=True):
        values = np.asarray(keras.ops.convert_to_numpy(out), dtype="float64")
        activation = _layer_activation(layer)
        finite = values[np.isfinite(values)]
        var = float(np.var(finite)) if finite.size else math.nan
        rows.append({
            "layer": layer.name,
            "kind": type(layer).__name__,
            "activation": activation,
            "units": int(values.shape[-1]) if values.ndim else 1,
            "mean": float(np.mean(finite)) if finite.size else math.nan,
            "variance": var,
            "std": math.sqrt(var) if math.isfinite(var) else math.nan,
            "zero_fraction": float(np.mean(values == 0.0)) if values.size else math.nan,
            "saturated_fraction": _saturated(finite, activation) if finite.size else None,
        })
    return rows


def variance_ratio(rows: list[dict]) -> float:
    """The last probed layer's activation variance / the first's (1: kept; << 1: shrinks)."""
    if len(rows) < 2 or not rows[0]["variance"]:
        return math.nan
    return float(rows[-1]["variance"] / rows[0]["variance"])


@dataclass
class ActivationStats:
    """The activation statistics of a recipe's model (see `recipe_activation_stats`).

    Attributes:
        recipe: The recipe's name.
        layers: One dict per hidden activation layer (see `activation_stats`).
        probe_size: Samples in the probe batch.
        trained: Whether the weights were trained (`False`: at initialization).
        config: The model's `activation`/`initializer` settings, when the
            recipe has them.
    """

    recipe: str
    layers: list[dict] = field(default_factory=list)
    probe_size: int = 0
    trained: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def variance_ratio(self) -> float:
        """Last layer's variance / first layer's (see `variance_ratio`)."""
        return variance_ratio(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "variance_ratio": self.variance_ratio}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    def table(self) -> str:
        """An aligned text table, one row per layer, and the variance ratio."""
        setting = ", ".join(f"{k}={v}" for k, v in self.config.items())
        when = "trained weights" if self.trained else "at initialization"
        head = (f"{self.recipe} ({setting}; {when}): activation statistics on a probe batch "
                f"of {self.probe_size} training samples")
        cols = ["layer", "activation", "mean", "std", "variance", "zeros", "saturated"]
        rows = [[r["layer"], r["activation"], f"{r['mean']:.4g}", f"{r['std']:.4g}",
                 f"{r['variance']:.4g}", f"{r['zero_fraction']:.0%}",
                 "" if r["saturated_fraction"] is None else f"{r['saturated_fraction']:.0%}"]
                for r in self.layers]
        widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c)
                  for i, c in enumerate(cols)]
        lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                  for row in rows]
        if len(self.layers) >= 2:
            lines.append(f"variance of the last layer / the first: {self.variance_ratio:.3g} "
                         f"({self.layers[-1]['layer']} / {self.layers[0]['layer']})")
        elif not self.layers:
            lines.append("no hidden activation layer to probe")
        return "\n".join(lines)


def recipe_activation_stats(
    recipe: Any,
    *,
    overrides: Mapping[str, Any] | None = None,
    set_args: Iterable[str] = (),
    seed: int | None = None,
    samples: int = PROBE_SIZE,
) -> ActivationStats:
    """Activation statistics of a recipe's freshly initialized model.

    Loads and splits the recipe's data as `kflow.train` does, builds the
    model (its preprocessing fitted on the training split) without training
    it, and probes it with the first `samples` training samples.

    Args:
        recipe: A registered name, file, YAML config, Recipe class or instance.
        overrides: Hyperparameter values.
        set_args: `KEY=VALUE` strings (as from `--set`).
        seed: Seed of the split and of the initial weights. Defaults to 0.
        samples: Probe batch size. Defaults to `PROBE_SIZE` (128).

    Returns:
        An `ActivationStats`.

    Example:

    ```python
    stats = recipe_activation_stats("lecture-mlp", set_args=["hidden_layers=12"])
    print(stats.table())
    ```
    """
    from kflow.training.trainer import Trainer

    trainer = Trainer(recipe, overrides=overrides, set_args=set_args, seed=seed, verbose=0)
    train = trainer.splits().train
    model = trainer.build_model(train, insight=False)
    x = probe_batch(train.x, samples)
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    hp = trainer.recipe.hparams
    config = {k: hp[k] for k in ("activation", "initializer", "init_scale", "batch_norm")
              if k in hp and hp[k] is not None}
    return ActivationStats(recipe=trainer.recipe.name, layers=activation_stats(model, x),
                           probe_size=n, trained=False, config=config)
