"""Activation functions by name, built as Keras layers.

Registered names: sigmoid, tanh, relu, leaky_relu, elu, gelu, swish (alias
silu), selu, softplus, relu6, linear, softmax. Only `leaky_relu` takes an
argument, as a dict: `{"name": "leaky_relu", "negative_slope": 0.1}`. Every
layer built here saves to and reloads from `model.keras` without custom code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kflow._registry import Registry

if TYPE_CHECKING:
    import keras

__all__ = ["ACTIVATIONS", "RELU_FAMILY", "activation_layer", "is_relu_family"]


def _is_layer(obj: Any) -> bool:
    return hasattr(obj, "compute_output_shape") and callable(obj)


ACTIVATIONS = Registry("activation", passthrough=_is_layer)

#: Rectifier-like activations (unbounded above, ~identity for x > 0), for which
#: He initialization keeps the variance of activations constant across layers.
#: selu is left out: it is designed for lecun_normal.
RELU_FAMILY = frozenset({"relu", "leaky_relu", "relu6", "elu", "gelu", "swish", "softplus"})


def _register(name: str, keras_name: str, doc: str, aliases: tuple[str, ...] = ()) -> None:
    def factory(layer_name: str | None = None):
        import keras

        return keras.layers.Activation(keras_name, name=layer_name)

    factory.__name__ = f"_{name}"
    ACTIVATIONS.register(name, factory, aliases=aliases, doc=doc)


_register("sigmoid", "sigmoid", "1 / (1 + exp(-x)); saturates, use Xavier init.")
_register("tanh", "tanh", "tanh(x); zero-centred, saturates, use Xavier init.")
_register("relu", "relu", "max(0, x).")
_register("elu", "elu", "x if x > 0 else alpha * (exp(x) - 1); alpha=1.")
_register("gelu", "gelu", "x * Phi(x) (exact, erf-based).")
_register("swish", "silu", "x * sigmoid(x).", aliases=("silu",))
_register("selu", "selu", "Self-normalizing scaled ELU; use lecun_normal.")
_register("softplus", "softplus", "log(1 + exp(x)).")
_register("relu6", "relu6", "min(max(0, x), 6).")
_register("linear", "linear", "Identity, x.")
_register("softmax", "softmax", "exp(x) / sum(exp(x)) over the last axis.")


@ACTIVATIONS.register("leaky_relu", doc="x if x > 0 else negative_slope * x; 0.3.")
def _leaky_relu(layer_name: str | None = None, negative_slope: float = 0.3):
    import keras

    return keras.layers.LeakyReLU(negative_slope=negative_slope, name=layer_name)


def activation_layer(
    name: str | dict[str, Any] | keras.layers.Layer,
    name_prefix: str | None = None,
) -> keras.layers.Layer:
    """Returns a new Keras layer applying the named activation.

    `leaky_relu` gives a `keras.layers.LeakyReLU` (negative slope 0.3 by
    default), every other name a `keras.layers.Activation`.

    Example:

    >>> layer = activation_layer("silu", name_prefix="block1")
    >>> layer.name
    'block1_swish'

    Args:
        name: A registered name or alias, a dict `{"name": NAME, **kwargs}`
            (e.g. `{"name": "leaky_relu", "negative_slope": 0.1}`), or a layer
            (returned as is).
        name_prefix: If given, the layer is named `f"{name_prefix}_{name}"`
            with the canonical activation name. Defaults to `None` (Keras
            picks a unique name).

    Raises:
        UnknownNameError: For an unknown activation, listing the valid ones.
    """
    layer_name = None
    if name_prefix is not None:
        raw = name.get("name") if isinstance(name, dict) else name
        if isinstance(raw, str):
            layer_name = f"{name_prefix}_{ACTIVATIONS.canonical(raw)}"
    return ACTIVATIONS.get(name, layer_name=layer_name)


def is_relu_family(name: str) -> bool:
    """Whether `name` (or its alias) is a rectifier-like activation.

    Example:

    >>> is_relu_family("silu"), is_relu_family("tanh")
    (True, False)

    Raises:
        UnknownNameError: For an unknown activation name.
    """
    return ACTIVATIONS.canonical(name) in RELU_FAMILY
