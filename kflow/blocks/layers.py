"""Functional-API building blocks: dense, conv and residual blocks.

Each builder takes a tensor, adds named layers and returns the output tensor.
How the layers are initialized, regularized and normalized is described by a
`LayerStyle`. With `batch_norm="before"` (the default), a block is

    Dense/Conv(use_bias=False) -> BatchNormalization -> activation -> Dropout

The layers of a block named `"b1"` are `b1_dense` (or `b1_conv`), `b1_bn`,
`b1_<activation>` and `b1_dropout`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib
from typing import TYPE_CHECKING, Any

from kflow.blocks.activations import ACTIVATIONS, activation_layer
from kflow.blocks.initializers import INITIALIZERS, get_initializer
from kflow.blocks.regularizers import REGULARIZERS, get_regularizer
from kflow.errors import ConfigError

if TYPE_CHECKING:
    import keras

__all__ = [
    "BATCH_NORM_MODES",
    "LayerStyle",
    "conv_block",
    "dense_block",
    "dense_residual_block",
    "residual_block",
]

BATCH_NORM_MODES = ("before", "after", "none")
POOL_MODES = (None, "max", "avg")


def _param_error(field: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(
        f"The '{field}' parameter of LayerStyle must be {expected}. Got {value!r} instead."
    )


def _check_name(registry, field: str, value: Any) -> str | dict:
    """Returns the canonical name (or a dict with it) of a registry entry."""
    if isinstance(value, dict):
        if not isinstance(value.get("name"), str):
            raise _param_error(field, "a name or a dict with a 'name' key", value)
        return {**value, "name": registry.canonical(value["name"])}
    if not isinstance(value, str):
        raise _param_error(field, f"a str among {registry.names()}", value)
    return registry.canonical(value)


@dataclasses.dataclass(frozen=True)
class LayerStyle:
    """How the layers of a block are initialized, regularized and normalized.

    Names are checked (and aliases replaced by canonical names) when the style
    is created, without importing keras.

    Example:

    >>> style = LayerStyle(activation="tanh", initializer="xavier",
    ...                    regularizer="l2", regularizer_strength=1e-3,
    ...                    dropout=0.2, batch_norm="none", seed=0)
    >>> style.initializer
    'glorot_normal'

    Args:
        activation: Activation name (see `ACTIVATIONS`), or a dict like
            `{"name": "leaky_relu", "negative_slope": 0.1}`.
            Defaults to `"relu"`.
        initializer: Kernel initializer name (see `INITIALIZERS`) or a dict
            with kwargs. Defaults to `"he_normal"`.
        regularizer: Kernel regularizer name (see `REGULARIZERS`).
            Defaults to `"none"`.
        regularizer_strength: Penalty factor, >= 0. Defaults to `1e-4`.
        dropout: Dropout rate in [0, 1) after the activation; 0 adds no
            layer. Defaults to `0.0`.
        batch_norm: `"before"` (linear -> BatchNorm -> activation; the linear
            layer has no bias since BatchNorm's beta replaces it), `"after"`
            (activation -> BatchNorm) or `"none"`. `True` means `"before"`,
            `False` means `"none"`. Defaults to `"before"`.
        seed: Base seed for initializers and dropout; each layer derives its
            own seed from it and its name, so equal shapes do not get equal
            weights. Defaults to `None` (not reproducible).
    """

    activation: str | dict[str, Any] = "relu"
    initializer: str | dict[str, Any] = "he_normal"
    regularizer: str = "none"
    regularizer_strength: float = 1e-4
    dropout: float = 0.0
    batch_norm: str | bool = "before"
    seed: int | None = None

    def __post_init__(self) -> None:
        def set_(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)

        set_("activation", _check_name(ACTIVATIONS, "activation", self.activation))
        set_("initializer", _check_name(INITIALIZERS, "initializer", self.initializer))
        if not isinstance(self.regularizer, str):
            raise _param_error(
                "regularizer", f"a str among {REGULARIZERS.names()}", self.regularizer
            )
        set_("regularizer", REGULARIZERS.canonical(self.regularizer))

        strength = self.regularizer_strength
        if (
            isinstance(strength, bool)
            or not isinstance(strength, numbers.Real)
            or not math.isfinite(strength)
            or strength < 0
        ):
            raise _param_error("regularizer_strength", "a float in the range [0.0, inf)", strength)
        set_("regularizer_strength", float(strength))

        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise _param_error("dropout", "a float in the range [0.0, 1.0)", rate)
        set_("dropout", float(rate))

        mode = self.batch_norm
        if isinstance(mode, bool):
            mode = "before" if mode else "none"
        elif isinstance(mode, str):
            mode = mode.strip().lower()
        if mode not in BATCH_NORM_MODES:
            raise _param_error(
                "batch_norm",
                "a str among {'before', 'after', 'none'} or a bool",
                self.batch_norm,
            )
        set_("batch_norm", mode)

        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
        ):
            raise _param_error("seed", "an int or None", self.seed)
        if self.seed is not None:
            set_("seed", int(self.seed))

    def replace(self, **changes: Any) -> LayerStyle:
        """Returns a copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes)

    def layer_seed(self, layer_name: str) -> int | None:
        """A seed for one layer, derived from `seed` and the layer name."""
        if self.seed is None:
            return None
        return (self.seed * 1_000_003 + zlib.crc32(layer_name.encode())) % (2**31 - 1)


# --------------------------------------------------------------------------
# Layer helpers (keras is imported here, at call time).


def _linear_kwargs(style: LayerStyle, layer_name: str, use_bias: bool) -> dict:
    return {
        "kernel_initializer": get_initializer(style.initializer, seed=style.layer_seed(layer_name)),
        "kernel_regularizer": get_regularizer(style.regularizer, style.regularizer_strength),
        "use_bias": use_bias,
        "name": layer_name,
    }


def _dense(x, units: int, style: LayerStyle, layer_name: str, use_bias: bool):
    import keras

    _check_positive_int("units", units)
    return keras.layers.Dense(units, **_linear_kwargs(style, layer_name, use_bias))(x)


def _conv(
    x,
    filters: int,
    style: LayerStyle,
    layer_name: str,
    kernel_size: int | tuple[int, int],
    strides: int | tuple[int, int],
    use_bias: bool,
):
    import keras

    _check_positive_int("filters", filters)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        **_linear_kwargs(style, layer_name, use_bias),
    )(x)


def _bn(x, layer_name: str):
    import keras

    return keras.layers.BatchNormalization(name=layer_name)(x)


def _activate(x, style: LayerStyle, prefix: str):
    return activation_layer(style.activation, name_prefix=prefix)(x)


def _dropout(x, style: LayerStyle, layer_name: str):
    if style.dropout <= 0:
        return x
    import keras

    return keras.layers.Dropout(style.dropout, seed=style.layer_seed(layer_name), name=layer_name)(
        x
    )


def _normalize_activate(x, style: LayerStyle, prefix: str, suffix: str = ""):
    """linear output -> [BN] -> activation -> [BN], per `style.batch_norm`."""
    if style.batch_norm == "before":
        x = _bn(x, f"{prefix}_bn{suffix}")
    x = _activate(x, style, f"{prefix}{suffix and '_' + suffix}")
    if style.batch_norm == "after":
        x = _bn(x, f"{prefix}_bn{suffix}")
    return x


def _check_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"'{field}' must be an int >= 1. Got {value!r} instead.")


def _check_style(style: Any) -> LayerStyle:
    if style is None:
        return LayerStyle()
    if isinstance(style, dict):
        return LayerStyle(**style)
    if not isinstance(style, LayerStyle):
        raise ConfigError(f"'style' must be a LayerStyle, a dict or None. Got {style!r} instead.")
    return style


# --------------------------------------------------------------------------
# Public builders.


def dense_block(
    x: keras.KerasTensor,
    units: int,
    style: LayerStyle | dict[str, Any] | None,
    name: str,
) -> keras.KerasTensor:
    """Adds Dense -> (BatchNorm) -> activation -> (BatchNorm) -> (Dropout).

    Example:

    >>> inputs = keras.Input((784,))
    >>> x = dense_block(inputs, 300, LayerStyle(dropout=0.2), name="hidden1")

    Args:
        x: Input tensor.
        units: Width of the Dense layer.
        style: A `LayerStyle`, a dict of its fields, or `None` for
            `LayerStyle()`.
        name: Prefix of the layer names: `{name}_dense`, `{name}_bn`,
            `{name}_{activation}`, `{name}_dropout`.

    Returns:
        The output tensor.
    """
    style = _check_style(style)
    x = _dense(x, units, style, f"{name}_dense", style.batch_norm != "before")
    x = _normalize_activate(x, style, name)
    return _dropout(x, style, f"{name}_dropout")


def conv_block(
    x: keras.KerasTensor,
    filters: int,
    style: LayerStyle | dict[str, Any] | None,
    name: str,
    kernel_size: int | tuple[int, int] = 3,
    strides: int | tuple[int, int] = 1,
    pool: str | None = None,
) -> keras.KerasTensor:
    """Adds Conv2D -> (BatchNorm) -> activation -> (BatchNorm) -> (Pool/Dropout).

    The convolution uses `padding="same"`; pooling is 2x2 with stride 2.

    Example:

    >>> inputs = keras.Input((32, 32, 3))
    >>> x = conv_block(inputs, 32, LayerStyle(), name="conv1", pool="max")

    Args:
        x: Input tensor `(batch, height, width, channels)`.
        filters: Number of output channels.
        style: A `LayerStyle`, a dict of its fields, or `None` for
            `LayerStyle()`.
        name: Prefix of the layer names (`{name}_conv`, `{name}_bn`,
            `{name}_{activation}`, `{name}_pool`, `{name}_dropout`).
        kernel_size: Convolution window. Defaults to `3`.
        strides: Convolution strides. Defaults to `1`.
        pool: `None`, `"max"` or `"avg"`. Defaults to `None`.

    Returns:
        The output tensor.
    """
    import keras

    style = _check_style(style)
    if pool not in POOL_MODES:
        raise ConfigError(f"'pool' must be None, 'max' or 'avg'. Got {pool!r} instead.")
    x = _conv(
        x,
        filters,
        style,
        f"{name}_conv",
        kernel_size,
        strides,
        use_bias=style.batch_norm != "before",
    )
    x = _normalize_activate(x, style, name)
    if pool == "max":
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    elif pool == "avg":
        x = keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)
    return _dropout(x, style, f"{name}_dropout")


def conv_stages(
    x: keras.KerasTensor,
    stages: int,
    filters: int,
    style: LayerStyle | dict[str, Any] | None,
    name: str = "stage",
) -> keras.KerasTensor:
    """Adds `stages` VGG-style stages: two `conv_block`s each, the second max-pooled.

    Stage `s` has `filters * 2**s` channels, and its convolutions run
    without dropout (the style's dropout is for the dense layers after them).

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> x = conv_stages(inputs, 2, 16, LayerStyle(batchnorm="before"))

    Args:
        x: Input tensor `(batch, height, width, channels)`.
        stages: Number of stages (each halves the height and width).
        filters: Channels of the first stage.
        style: A `LayerStyle`, a dict of its fields, or `None` for `LayerStyle()`.
        name: Prefix of the layer names (`{name}0_conv0`, `{name}0_conv1`, ...).
            Defaults to `"stage"`.

    Returns:
        The output tensor.
    """
    import dataclasses

    conv_style = dataclasses.replace(_check_style(style), dropout=0.0)
    for stage in range(stages):
        f = filters * 2**stage
        x = conv_block(x, f, conv_style, f"{name}{stage}_conv0")
        x = conv_block(x, f, conv_style, f"{name}{stage}_conv1", pool="max")
    return x


def _finish_residual(y, shortcut, style: LayerStyle, name: str):
    """Add -> activation -> (BatchNorm if "after") -> (Dropout)."""
    import keras

    x = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    x = _activate(x, style, f"{name}_out")
    if style.batch_norm == "after":
        x = _bn(x, f"{name}_bn_out")
    return _dropout(x, style, f"{name}_dropout")


def residual_block(
    x: keras.KerasTensor,
    filters: int,
    style: LayerStyle | dict[str, Any] | None,
    name: str,
    strides: int = 1,
) -> keras.KerasTensor:
    """Adds a ResNet v1 basic block: two 3x3 convs and a skip connection.

    With `batch_norm="before"`:

        main:     conv1(strides) -> bn1 -> act -> conv2 -> bn2
        shortcut: x, or conv 1x1(strides) -> bn when the shape changes
        output:   add(main, shortcut) -> act -> (dropout)

    With `"after"`, each BatchNorm moves behind an activation (`bn1` after the
    first one, `bn_out` after the last one), and `"none"` drops them.

    Example:

    >>> inputs = keras.Input((32, 32, 16))
    >>> x = residual_block(inputs, 32, LayerStyle(), name="res1", strides=2)

    Args:
        x: Input tensor `(batch, height, width, channels)`.
        filters: Output channels of both convolutions.
        style: A `LayerStyle`, a dict of its fields, or `None` for
            `LayerStyle()`.
        name: Prefix of the layer names (`{name}_conv1`, `{name}_bn1`,
            `{name}_1_{activation}`, `{name}_conv2`, `{name}_bn2`,
            `{name}_proj`, `{name}_proj_bn`, `{name}_add`,
            `{name}_out_{activation}`).
        strides: Strides of the first convolution (and the projection).
            Defaults to `1`.

    Returns:
        The output tensor, `filters` channels, spatial size divided by
        `strides`.
    """
    style = _check_style(style)
    _check_positive_int("strides", strides)
    bias = style.batch_norm != "before"
    y = _conv(x, filters, style, f"{name}_conv1", 3, strides, use_bias=bias)
    y = _normalize_activate(y, style, name, "1")
    y = _conv(y, filters, style, f"{name}_conv2", 3, 1, use_bias=bias)
    if style.batch_norm == "before":
        y = _bn(y, f"{name}_bn2")

    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, style, f"{name}_proj", 1, strides, use_bias=bias)
        if style.batch_norm == "before":
            shortcut = _bn(shortcut, f"{name}_proj_bn")
    return _finish_residual(y, shortcut, style, name)


def dense_residual_block(
    x: keras.KerasTensor,
    units: int,
    style: LayerStyle | dict[str, Any] | None,
    name: str,
) -> keras.KerasTensor:
    """Adds two Dense layers with a skip connection (ResNet v1 layout).

    The same layout as `residual_block` with Dense layers; the shortcut is a
    Dense projection (`{name}_proj`) when the input width is not `units`.

    Example:

    >>> inputs = keras.Input((64,))
    >>> x = dense_residual_block(inputs, 128, LayerStyle(), name="dres1")

    Args:
        x: Input tensor `(batch, features)`.
        units: Width of both Dense layers and of the output.
        style: A `LayerStyle`, a dict of its fields, or `None` for
            `LayerStyle()`.
        name: Prefix of the layer names (`{name}_dense1`, `{name}_bn1`, ...).

    Returns:
        The output tensor, `units` wide.
    """
    style = _check_style(style)
    bias = style.batch_norm != "before"
    y = _dense(x, units, style, f"{name}_dense1", bias)
    y = _normalize_activate(y, style, name, "1")
    y = _dense(y, units, style, f"{name}_dense2", bias)
    if style.batch_norm == "before":
        y = _bn(y, f"{name}_bn2")

    shortcut = x
    if x.shape[-1] != units:
        shortcut = _dense(x, units, style, f"{name}_proj", bias)
        if style.batch_norm == "before":
            shortcut = _bn(shortcut, f"{name}_proj_bn")
    return _finish_residual(y, shortcut, style, name)
