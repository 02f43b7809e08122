"""What a run saves: the trained model as a plain Keras model that opens without kflow.

`model.keras` and `checkpoints/best.keras` hold `to_plain_model(model)`: a
standard functional `keras.Model` of built-in layers and operations, with the
trained weights, that `keras.saving.load_model(path)` opens in a Python with
TensorFlow and Keras only, and that predicts what the live model predicts.
Training-time wrappers stay out of it:

- `kflow.insight.InsightModel` (gradient logging) becomes a plain functional
  model over copies of the same layers;
- `kflow.data.TrainingAugmentation` is identity at inference and is dropped;
- the `kflow.data.Impute` layer becomes `kflow.data.impute.impute` (built-in
  `keras.ops.where` / `isnan` / `equal` nodes);
- kflow's initializers (`UniformFanIn`) are replaced in the layer configs by
  the built-in initializer that draws the same distribution.

The copy shares nothing with the live model (its layers are clones, so the
live layers get no extra graph nodes); `PlainModelCopy.sync()` copies the
current weights into it, which is all a checkpoint needs per write. When the
live model is compiled and the copy's trainable variables line up with it,
the copy is compiled with the same loss, metrics and optimizer, so the file
also holds the optimizer state and `load_model` gives a compiled model.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

__all__ = ["PlainModelCopy", "to_plain_model"]


class PlainModelCopy:
    """A plain Keras copy of a training model, refreshed with `sync()`.

    Args:
        model: The live training model (a functional model, possibly an
            `InsightModel`). A model that is not functional (a subclass with
            its own `call`) cannot be rebuilt: `model` itself is used.

    Example:

    ```python
    copy = PlainModelCopy(model)      # once: builds the plain graph
    model.fit(x, y, epochs=1)
    copy.sync().save("model.keras")   # the current weights
    ```
    """

    def __init__(self, model: Any):
        import keras

        self.source = model
        self._pairs: list[tuple[Any, Any]] = []
        try:
            base = keras.Model(model.input, model.output, name=model.name)
        except (AttributeError, ValueError, TypeError):  # not functional: nothing to strip
            self.model = model
            return
        self.model = keras.models.clone_model(
            base, clone_function=self._clone, call_function=_call, recursive=True)
        self._copy_assets()
        _check_builtin(self.model)
        self._compile_like_source()

    # -- building -------------------------------------------------------------
    def _clone(self, layer: Any) -> Any:
        if _is_training_only(layer):
            return layer  # never called: `_call` replaces it
        from kflow.blocks.keras_objects import builtin_config

        clone = type(layer).from_config(builtin_config(layer.get_config()))
        if hasattr(layer, "save_own_variables"):  # a layer (not a stateless op)
            self._pairs.append((layer, clone))
        return clone

    def _copy_assets(self) -> None:
        """Lookup vocabularies and other state that `save_assets` writes."""
        for source, clone in self._pairs:
            if hasattr(source, "save_assets") and hasattr(clone, "load_assets"):
                with tempfile.TemporaryDirectory() as tmp:
                    source.save_assets(tmp)
                    clone.load_assets(tmp)

    def _compile_like_source(self) -> None:
        import keras

        source = self.source
        if not getattr(source, "compiled", False) or getattr(source, "optimizer", None) is None:
            return
        clone_of = {}
        for source_layer, clone in self._pairs:
            for s, c in zip(source_layer.weights, clone.weights, strict=False):
                clone_of[id(s)] = c
        mapped = [clone_of.get(id(v)) for v in source.trainable_variables]
        if [id(v) for v in mapped] != [id(v) for v in self.model.trainable_variables]:
            return  # the optimizer's slots would not line up: save the model uncompiled
        try:
            config = dict(source.get_compile_config() or {})
        except (AttributeError, ValueError, TypeError):
            return
        config.pop("optimizer", None)
        config = keras.saving.deserialize_keras_object(config)
        self.model.compile(optimizer=source.optimizer, **config)

    # -- use ------------------------------------------------------------------
    def sync(self) -> Any:
        """Copies the live model's current weights into the copy; returns the copy."""
        for source, clone in self._pairs:
            store: dict[str, Any] = {}
            source.save_own_variables(store)
            if store:
                clone.load_own_variables(store)
            if len(source.weights) > len(store):
                # Variables of sublayers (MultiHeadAttention's projections, a recurrent
                # layer's cell, Bidirectional's directions) are not the layer's own.
                for s, c in zip(source.weights, clone.weights, strict=False):
                    c.assign(s)
        return self.model


def to_plain_model(model: Any) -> Any:
    """Returns the model to save in `model.keras` / `checkpoints/best.keras`.

    A standard functional `keras.Model` of built-in layers and operations,
    with `model`'s current weights (see the module docstring), that
    `keras.saving.load_model` opens without kflow. A model that is not
    functional is returned unchanged.

    Args:
        model: The live training model.

    Returns:
        The plain model (a new object; `model` is not changed).

    Example:

    ```python
    plain = to_plain_model(run.model)
    plain.save("model.keras")
    keras.saving.load_model("model.keras")  # in a Python without kflow
    ```
    """
    return PlainModelCopy(model).sync()


def _is_training_only(layer: Any) -> bool:
    import sys

    classes = []
    for module, name in (("kflow.data.training_augmentation", "TrainingAugmentation"),
                         ("kflow.data.impute", "Impute")):
        if module in sys.modules:  # a model cannot hold the class of a module not imported
            classes.append(getattr(sys.modules[module], name))
    return bool(classes) and isinstance(layer, tuple(classes))


def _call(layer: Any, *args: Any, **kwargs: Any) -> Any:
    """Calls a cloned layer; training-only layers become their inference graph."""
    if _is_training_only(layer):
        if type(layer).__name__ == "Impute":
            from kflow.data.impute import impute

            return impute(args[0], layer.fill_value)
        return args[0]  # augmentation: identity at inference
    return layer(*args, **kwargs)


def _check_builtin(model: Any) -> None:
    """Raises if a kflow class is left in the config (`load_model` would need kflow)."""
    config = json.dumps(model.get_config(), default=str)
    if '"module": "kflow' in config or '"kflow>' in config:
        kinds = sorted({type(layer).__name__ for layer in model.layers
                        if type(layer).__module__.startswith("kflow")})
        raise RuntimeError(
            f"The plain copy of model '{model.name}' still holds kflow classes "
            f"({', '.join(kinds) or 'in a layer config'}); plain keras.saving.load_model "
            "could not open it. kflow.training.plain_model must learn to replace them."
        )
