"""Attention blocks: Transformer encoder, positional embeddings, patches, pooling.

Built from built-in Keras layers and `keras.ops` only, so saved models open
without kflow and export to SavedModel and TFLite. Layer names read as the
parts of the architecture: an encoder block named `"encoder_1"` holds
`encoder_1_attention` (MultiHeadAttention), `encoder_1_attention_norm`,
`encoder_1_attention_add`, `encoder_1_mlp_dense0`, `encoder_1_mlp_dense1`,
`encoder_1_mlp_norm`, `encoder_1_mlp_add` (and `*_dropout`). Keras does not
allow `/` in layer names, so `_` separates the parts.

Padded steps are masked: a Keras mask on the input (from
`Embedding(mask_zero=True)`) reaches the attention (padded keys get no
weight) and mean pooling (padded steps are not averaged). Known gap:
`positional_embedding` drops the mask (Keras 3.15's `Add` of the masked
tokens and the unmasked position codes returns no mask), so an encoder
after it also attends to padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kflow.blocks.layers import LayerStyle, _check_positive_int
from kflow.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "POSITIONAL_EMBEDDINGS",
    "POOLINGS",
    "NORM_PLACEMENTS",
    "patch_embedding",
    "add_cls_token",
    "positional_embedding",
    "transformer_encoder_block",
    "transformer_encoder",
    "sequence_pool",
]

POSITIONAL_EMBEDDINGS = ("learned", "sinusoidal", "none")
POOLINGS = ("mean", "cls", "max", "last")
NORM_PLACEMENTS = ("pre", "post")


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"'{field}' must be one of {', '.join(allowed)}. Got {value!r} instead.")
    return value


def patch_embedding(x: keras.KerasTensor, patch_size: int, dim: int, *,
                    name: str = "patch_embedding", seed: int | None = None) -> keras.KerasTensor:
    """Cuts images into non-overlapping patches and projects each to `dim` (a ViT's input).

    A `Conv2D` with kernel and stride `patch_size` is the per-patch linear
    projection; the patch grid is flattened into a sequence.

    Example:

    >>> images = keras.Input((8, 8, 1))
    >>> tokens = patch_embedding(images, 2, 64)   # (batch, 16, 64)

    Args:
        x: Images `(batch, height, width, channels)`; height and width must
            be multiples of `patch_size`.
        patch_size: Side of a square patch, in pixels.
        dim: Embedding size of a patch.
        name: Layer name prefix (`{name}` conv, `{name}_flatten`). Defaults
            to "patch_embedding".
        seed: Initializer seed. Defaults to `None`.

    Returns:
        Tokens `(batch, patches, dim)`.
    """
    import keras

    _check_positive_int("patch_size", patch_size)
    _check_positive_int("dim", dim)
    height, width = x.shape[1], x.shape[2]
    if height % patch_size or width % patch_size:
        raise ConfigError(
            f"'patch_size' must divide the image size {height}x{width}. Got {patch_size}.")
    style = LayerStyle(seed=seed)
    x = keras.layers.Conv2D(
        dim, patch_size, strides=patch_size, name=name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=style.layer_seed(name)))(x)
    return keras.layers.Reshape(((height // patch_size) * (width // patch_size), dim),
                                name=f"{name}_flatten")(x)


def add_cls_token(x: keras.KerasTensor, *, name: str = "cls_token",
                  seed: int | None = None) -> keras.KerasTensor:
    """Prepends a learned classification token to a sequence (step 0).

    The token is the kernel of a bias-free `Dense` layer named `name`
    applied to a constant 1, so it is an ordinary built-in layer weight.

    Args:
        x: Tokens `(batch, steps, dim)`.
        name: Layer name. Defaults to "cls_token".
        seed: Initializer seed. Defaults to `None`.

    Returns:
        Tokens `(batch, steps + 1, dim)`.
    """
    import keras

    style = LayerStyle(seed=seed)
    ones = keras.ops.ones_like(x[:, :1, :1])
    token = keras.layers.Dense(
        x.shape[-1], use_bias=False, name=name,
        kernel_initializer=keras.initializers.RandomNormal(
            stddev=0.02, seed=style.layer_seed(name)))(ones)
    return keras.layers.Concatenate(axis=1, name=f"{name}_concat")([token, x])


def _positions(x: keras.KerasTensor, dtype: str) -> keras.KerasTensor:
    """0, 1, 2, ... along the steps of `x` (batch, steps, ...), as `dtype`."""
    import keras

    ones = keras.ops.ones_like(x[..., 0] if len(x.shape) > 2 else x, dtype=dtype)
    return keras.ops.cumsum(ones, axis=1) - keras.ops.cast(1, dtype)


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """The fixed sin/cos position codes of "Attention is all you need", `(length, dim)`."""
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, dim, 2, dtype="float64") / dim))
    angles = np.arange(length, dtype="float64")[:, None] * inv_freq[None, :]
    table = np.zeros((length, dim))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)[:, : dim // 2]
    return table.astype("float32")


def positional_embedding(x: keras.KerasTensor, kind: str = "learned", *,
                         max_length: int | None = None, name: str = "position_embedding",
                         seed: int | None = None) -> keras.KerasTensor:
    """Adds position information to tokens: learned or sinusoidal (or none).

    "learned": an `Embedding(max_length, dim)` of the step index, trained
    with the model. "sinusoidal": the fixed sin/cos codes, held as the
    frozen weights of an `Embedding` layer (so the table is saved with the
    model and needs no custom layer). The position indices are computed
    from the input (`cumsum` of ones), so any length up to `max_length`
    works. A mask on `x` is kept.

    Example:

    >>> tokens = keras.Input((16, 64))
    >>> x = positional_embedding(tokens, "sinusoidal")

    Args:
        x: Tokens `(batch, steps, dim)`.
        kind: "learned", "sinusoidal" or "none". Defaults to "learned".
        max_length: Longest sequence. Defaults to the static length of `x`.
        name: Layer name (`{name}`, `{name}_add`). Defaults to
            "position_embedding".
        seed: Initializer seed. Defaults to `None`.

    Returns:
        Tokens with positions added, same shape.
    """
    import keras

    _check_choice("positional", kind, POSITIONAL_EMBEDDINGS)
    if kind == "none":
        return x
    length = max_length or x.shape[1]
    if not length:
        raise ConfigError("positional_embedding needs 'max_length' for inputs of unknown length.")
    dim = x.shape[-1]
    style = LayerStyle(seed=seed)
    layer = keras.layers.Embedding(
        length, dim, name=name, trainable=kind == "learned",
        embeddings_initializer=keras.initializers.RandomNormal(
            stddev=0.02, seed=style.layer_seed(name)))
    positions = layer(_positions(x, "int32"))
    if kind == "sinusoidal":
        layer.set_weights([sinusoidal_table(length, dim)])
    return keras.layers.Add(name=f"{name}_add")([x, positions])


def transformer_encoder_block(
    x: keras.KerasTensor,
    heads: int,
    mlp_dim: int,
    name: str,
    *,
    dropout: float = 0.0,
    norm: str = "pre",
    activation: str = "gelu",
    seed: int | None = None,
) -> keras.KerasTensor:
    """Adds one Transformer encoder block: self-attention and feed-forward, each residual.

    "pre" (the ViT / GPT-2 placement, trains without warm-up):
    `x + Attention(LN(x))`, then `x + MLP(LN(x))`. "post" (the original
    Transformer): `LN(x + Attention(x))`, then `LN(x + MLP(x))`.

    Example:

    >>> tokens = keras.Input((16, 64))
    >>> x = transformer_encoder_block(tokens, heads=4, mlp_dim=128, name="encoder_0")

    Args:
        x: Tokens `(batch, steps, dim)`; a Keras mask on it keeps padded
            steps out of the attention.
        heads: Attention heads; each has size `dim // heads`.
        mlp_dim: Hidden width of the feed-forward part.
        name: Prefix of the layer names (see the module docstring).
        dropout: Dropout on attention weights and after each sub-layer.
            Defaults to `0.0`.
        norm: "pre" or "post" LayerNorm placement. Defaults to "pre".
        activation: Feed-forward activation. Defaults to "gelu".
        seed: Initializer and dropout seed. Defaults to `None`.

    Returns:
        Tokens, same shape as `x`.
    """
    import keras

    _check_positive_int("heads", heads)
    _check_positive_int("mlp_dim", mlp_dim)
    _check_choice("norm", norm, NORM_PLACEMENTS)
    dim = x.shape[-1]
    if dim % heads:
        raise ConfigError(f"The token size {dim} must be a multiple of heads={heads}.")
    style = LayerStyle(seed=seed)

    def init(layer_name: str) -> Any:
        return keras.initializers.GlorotUniform(seed=style.layer_seed(layer_name))

    def drop(t: Any, layer_name: str) -> Any:
        if dropout <= 0:
            return t
        return keras.layers.Dropout(dropout, seed=style.layer_seed(layer_name),
                                    name=layer_name)(t)

    def sublayer(t: Any, part: str, body: Any) -> Any:
        norm_layer = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_{part}_norm")
        y = body(norm_layer(t) if norm == "pre" else t)
        y = drop(y, f"{name}_{part}_dropout")
        out = keras.layers.Add(name=f"{name}_{part}_add")([t, y])
        return out if norm == "pre" else norm_layer(out)

    def attention(t: Any) -> Any:
        layer = keras.layers.MultiHeadAttention(
            heads, dim // heads, dropout=dropout, name=f"{name}_attention",
            kernel_initializer=init(f"{name}_attention"),
            seed=style.layer_seed(f"{name}_attention_weights") if dropout else None)
        return layer(t, t)

    def mlp(t: Any) -> Any:
        t = keras.layers.Dense(mlp_dim, activation=activation, name=f"{name}_mlp_dense0",
                               kernel_initializer=init(f"{name}_mlp_dense0"))(t)
        t = drop(t, f"{name}_mlp_inner_dropout")
        return keras.layers.Dense(dim, name=f"{name}_mlp_dense1",
                                  kernel_initializer=init(f"{name}_mlp_dense1"))(t)

    x = sublayer(x, "attention", attention)
    return sublayer(x, "mlp", mlp)


def transformer_encoder(x: keras.KerasTensor, layers: int, heads: int, mlp_dim: int, *,
                        dropout: float = 0.0, norm: str = "pre", seed: int | None = None,
                        name: str = "encoder") -> keras.KerasTensor:
    """`layers` encoder blocks `{name}_0`, `{name}_1`, ...; pre-norm ends with `{name}_norm`.

    Args:
        x: Tokens `(batch, steps, dim)`.
        layers: Number of blocks.
        heads: Attention heads per block.
        mlp_dim: Feed-forward width.
        dropout: Dropout rate. Defaults to `0.0`.
        norm: "pre" or "post". Defaults to "pre".
        seed: Seed. Defaults to `None`.
        name: Name prefix. Defaults to "encoder".

    Returns:
        Tokens, same shape as `x`.
    """
    import keras

    _check_positive_int("layers", layers)
    for i in range(layers):
        x = transformer_encoder_block(x, heads, mlp_dim, f"{name}_{i}", dropout=dropout,
                                      norm=norm, seed=seed)
    if norm == "pre":  # the residual stream is not normalized otherwise
        x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm")(x)
    return x


def sequence_pool(x: keras.KerasTensor, kind: str = "mean", *,
                  name: str = "pool") -> keras.KerasTensor:
    """Turns tokens `(batch, steps, dim)` into one vector `(batch, dim)`.

    Args:
        x: Tokens; a mask on them keeps padded steps out of "mean" and "max".
        kind: "mean" (masked average), "max", "cls" (step 0, after
            `add_cls_token`) or "last" (the final step). Defaults to "mean".
        name: Layer name. Defaults to "pool".

    Returns:
        `(batch, dim)`.
    """
    import keras

    _check_choice("pooling", kind, POOLINGS)
    if kind == "mean":
        return keras.layers.GlobalAveragePooling1D(name=name)(x)
    if kind == "max":
        return keras.layers.GlobalMaxPooling1D(name=name)(x)
    step = x[:, :1] if kind == "cls" else x[:, -1:]
    return keras.layers.Reshape((x.shape[-1],), name=name)(step)
