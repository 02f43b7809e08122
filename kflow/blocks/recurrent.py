"""Sequence blocks: recurrent layers (SimpleRNN, LSTM, GRU) and 1-D convolutions.

Every layer gets a name a reader recognizes in gradient-norm logs, the
dead-unit probe and the doctor: the recurrent layers of a stack are
`lstm_0`, `lstm_1`, ... (`gru_*`, `rnn_*`; `bilstm_0` when bidirectional),
their dropout `lstm_0_dropout`; a 1-D convolution block named `"conv1"` is
`conv1_conv`, `conv1_bn`, `conv1_<activation>`, `conv1_pool`.

All layers are built-in Keras layers, so saved models open without kflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kflow.blocks.layers import (
    POOL_MODES,
    LayerStyle,
    _check_positive_int,
    _check_style,
    _dropout,
    _linear_kwargs,
    _normalize_activate,
)
from kflow.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["RECURRENT_CELLS", "MAX_UNROLL_STEPS", "recurrent_layer", "recurrent_stack",
           "conv1d_block"]

#: Recurrent cell names and the Keras layer each one builds.
RECURRENT_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}

#: Longest static sequence that `recurrent_layer` unrolls by default (TFLite-convertible).
MAX_UNROLL_STEPS = 100


def _check_cell(cell: str) -> str:
    key = str(cell).lower().replace("simple_rnn", "rnn").replace("simplernn", "rnn")
    if key not in RECURRENT_CELLS:
        raise ConfigError(
            f"'cell' must be one of {', '.join(RECURRENT_CELLS)}. Got {cell!r} instead.")
    return key


def recurrent_layer(
    x: keras.KerasTensor,
    units: int,
    name: str,
    *,
    cell: str = "lstm",
    bidirectional: bool = False,
    return_sequences: bool = False,
    recurrent_dropout: float = 0.0,
    unroll: bool | None = None,
    seed: int | None = None,
) -> keras.KerasTensor:
    """Adds one recurrent layer (optionally bidirectional).

    Example:

    >>> inputs = keras.Input((8, 8))
    >>> x = recurrent_layer(inputs, 64, "lstm_0", cell="lstm")

    Args:
        x: Input tensor `(batch, steps, features)`; a Keras mask on it (from
            `Embedding(mask_zero=True)` or `Masking`) skips padded steps.
        units: Hidden state size (per direction).
        name: Layer name (`lstm_0`); a bidirectional layer is named
            `bi{name}` and its directions `forward_{name}`/`backward_{name}`.
        cell: "lstm", "gru" or "rnn" (SimpleRNN). Defaults to "lstm".
        bidirectional: Read the sequence both ways and concatenate. Defaults
            to `False`.
        return_sequences: Output every step `(batch, steps, units)` instead
            of the last state `(batch, units)`. Defaults to `False`.
        recurrent_dropout: Dropout on the recurrent state during training.
            Defaults to `0.0`.
        unroll: Unroll the loop over the steps into one graph. The TFLite
            converter cannot convert the looped form (its `TensorList` ops
            are not TFLite builtins), and short sequences train faster
            unrolled. Defaults to `None`: unrolled when the number of steps
            is static and at most `MAX_UNROLL_STEPS`.
        seed: Seed of the initializers and dropout. Defaults to `None`.

    Returns:
        The output tensor.
    """
    import keras

    _check_positive_int("units", units)
    if not 0.0 <= float(recurrent_dropout) < 1.0:
        raise ConfigError(
            f"'recurrent_dropout' must be in [0, 1). Got {recurrent_dropout!r} instead.")
    cell = _check_cell(cell)
    layer_cls = getattr(keras.layers, RECURRENT_CELLS[cell])
    style = LayerStyle(seed=seed, batch_norm="none")
    if unroll is None:
        unroll = x.shape[1] is not None and x.shape[1] <= MAX_UNROLL_STEPS
    kwargs: dict[str, Any] = {
        "return_sequences": return_sequences,
        "unroll": bool(unroll),
        "recurrent_dropout": float(recurrent_dropout),
        "kernel_initializer": keras.initializers.GlorotUniform(seed=style.layer_seed(name)),
        "recurrent_initializer": keras.initializers.Orthogonal(
            seed=style.layer_seed(name + "_recurrent")),
    }
    if recurrent_dropout and seed is not None:
        kwargs["seed"] = style.layer_seed(name + "_dropout")
    if not bidirectional:
        return layer_cls(units, name=name, **kwargs)(x)
    forward = layer_cls(units, name=f"forward_{name}", **kwargs)
    backward = layer_cls(units, name=f"backward_{name}", go_backwards=True, **kwargs)
    return keras.layers.Bidirectional(forward, backward_layer=backward, name=f"bi{name}")(x)


def recurrent_stack(
    x: keras.KerasTensor,
    units: int,
    layers: int = 1,
    *,
    cell: str = "lstm",
    bidirectional: bool = False,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    return_sequences: bool = False,
    unroll: bool | None = None,
    seed: int | None = None,
) -> keras.KerasTensor:
    """Adds `layers` stacked recurrent layers; `return_sequences` is handled for you.

    Every layer but the last returns its whole sequence (the next layer
    reads it); the last returns what `return_sequences` asks for. Dropout
    (between layers and after the last) is a `Dropout` layer
    `{cell}_{i}_dropout`.

    Example:

    >>> inputs = keras.Input((8, 8))
    >>> x = recurrent_stack(inputs, 64, layers=2, cell="gru", bidirectional=True)
    >>> # layers bigru_0, bigru_1; output (batch, 128)

    Args:
        x: Input tensor `(batch, steps, features)`.
        units: Hidden state size of every layer (per direction).
        layers: Number of stacked layers. Defaults to `1`.
        cell: "lstm", "gru" or "rnn". Defaults to "lstm".
        bidirectional: Bidirectional layers. Defaults to `False`.
        dropout: Dropout rate after each layer. Defaults to `0.0`.
        recurrent_dropout: Dropout on the recurrent state. Defaults to `0.0`.
        return_sequences: Whether the last layer returns every step.
            Defaults to `False`.
        unroll: See `recurrent_layer`. Defaults to `None` (automatic).
        seed: Seed of initializers and dropout. Defaults to `None`.

    Returns:
        The output tensor.
    """
    _check_positive_int("layers", layers)
    cell = _check_cell(cell)
    style = LayerStyle(seed=seed, dropout=dropout, batch_norm="none")
    for i in range(layers):
        last = i == layers - 1
        name = f"{cell}_{i}"
        x = recurrent_layer(x, units, name, cell=cell, bidirectional=bidirectional,
                            return_sequences=return_sequences or not last,
                            recurrent_dropout=recurrent_dropout, unroll=unroll, seed=seed)
        x = _dropout(x, style, f"{name}_dropout")
    return x


def conv1d_block(
    x: keras.KerasTensor,
    filters: int,
    style: LayerStyle | dict[str, Any] | None,
    name: str,
    kernel_size: int = 3,
    strides: int = 1,
    pool: str | None = None,
    padding: str = "same",
) -> keras.KerasTensor:
    """Adds Conv1D -> (BatchNorm) -> activation -> (BatchNorm) -> (Pool) -> (Dropout).

    Example:

    >>> inputs = keras.Input((100, 16))
    >>> x = conv1d_block(inputs, 32, LayerStyle(), "conv1", kernel_size=5, pool="max")

    Args:
        x: Input tensor `(batch, steps, channels)`.
        filters: Output channels.
        style: A `LayerStyle`, a dict of its fields, or `None`.
        name: Prefix of the layer names (`{name}_conv`, `{name}_bn`,
            `{name}_{activation}`, `{name}_pool`, `{name}_dropout`).
        kernel_size: Window length. Defaults to `3`.
        strides: Step of the window. Defaults to `1`.
        pool: `None`, "max" or "avg" (pool size 2). Defaults to `None`.
        padding: "same" or "causal" (no look-ahead, for forecasting) or
            "valid". Defaults to "same".

    Returns:
        The output tensor.
    """
    import keras

    style = _check_style(style)
    _check_positive_int("filters", filters)
    if pool not in POOL_MODES:
        raise ConfigError(f"'pool' must be None, 'max' or 'avg'. Got {pool!r} instead.")
    x = keras.layers.Conv1D(
        filters, kernel_size, strides=strides, padding=padding,
        **_linear_kwargs(style, f"{name}_conv", style.batch_norm != "before"))(x)
    x = _normalize_activate(x, style, name)
    if pool == "max":
        x = keras.layers.MaxPooling1D(2, padding="same", name=f"{name}_pool")(x)
    elif pool == "avg":
        x = keras.layers.AveragePooling1D(2, padding="same", name=f"{name}_pool")(x)
    return _dropout(x, style, f"{name}_dropout")
