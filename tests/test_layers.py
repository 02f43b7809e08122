"""Blocks wire their layers in the documented order, with the style's settings."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

from kflow.blocks import (  # noqa: E402
    LayerStyle,
    conv_block,
    dense_block,
    dense_residual_block,
    residual_block,
)
from kflow.errors import ConfigError, UnknownNameError  # noqa: E402


def layers_after_input(model):
    return [(type(layer).__name__, layer.name) for layer in model.layers[1:]]


def build_dense(style, units=5, width=4):
    inputs = keras.Input((width,))
    return keras.Model(inputs, dense_block(inputs, units, style, name="b1"))


@pytest.mark.parametrize(
    "batch_norm, expected",
    [
        (
            "before",
            [
                ("Dense", "b1_dense"),
                ("BatchNormalization", "b1_bn"),
                ("Activation", "b1_relu"),
            ],
        ),
        (True, [("Dense", "b1_dense"), ("BatchNormalization", "b1_bn"), ("Activation", "b1_relu")]),
        (
            "after",
            [
                ("Dense", "b1_dense"),
                ("Activation", "b1_relu"),
                ("BatchNormalization", "b1_bn"),
            ],
        ),
        ("none", [("Dense", "b1_dense"), ("Activation", "b1_relu")]),
        (False, [("Dense", "b1_dense"), ("Activation", "b1_relu")]),
    ],
)
def test_dense_block_order(batch_norm, expected):
    model = build_dense(LayerStyle(batch_norm=batch_norm))
    assert layers_after_input(model) == expected
    # BatchNorm's beta replaces the bias only when BN follows the linear layer.
    assert model.get_layer("b1_dense").use_bias is (expected[1][0] != "BatchNormalization")


def test_dense_block_dropout_after_activation():
    model = build_dense(LayerStyle(activation="tanh", batch_norm="none", dropout=0.25))
    assert layers_after_input(model) == [
        ("Dense", "b1_dense"),
        ("Activation", "b1_tanh"),
        ("Dropout", "b1_dropout"),
    ]
    assert model.get_layer("b1_dropout").rate == 0.25


def test_dense_block_uses_style_initializer_and_regularizer():
    style = LayerStyle(
        initializer="xavier_uniform", regularizer="l2", regularizer_strength=0.01, seed=1
    )
    model = build_dense(style)
    dense = model.get_layer("b1_dense")
    assert type(dense.kernel_initializer).__name__ == "GlorotUniform"
    assert type(dense.kernel_regularizer).__name__ == "L2"
    w = keras.ops.convert_to_numpy(dense.kernel)
    assert float(model.losses[0]) == pytest.approx(0.01 * np.sum(w**2), rel=1e-5)


def test_dense_block_computes_relu_of_linear_output():
    style = LayerStyle(initializer={"name": "constant", "value": 0.5}, batch_norm="none")
    model = build_dense(style, units=2, width=3)
    x = np.array([[1.0, 2.0, -5.0], [1.0, 1.0, 1.0]], dtype="float32")
    expected = np.maximum(x.sum(axis=1, keepdims=True) * 0.5, 0) * np.ones((1, 2))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected)


@pytest.mark.parametrize("pool, size", [(None, 8), ("max", 4), ("avg", 4)])
def test_conv_block(pool, size):
    inputs = keras.Input((8, 8, 3))
    outputs = conv_block(inputs, 6, LayerStyle(dropout=0.1), name="c1", pool=pool)
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, size, size, 6)
    names = [name for _, name in layers_after_input(model)]
    pool_layers = ["c1_pool"] if pool else []
    assert names == ["c1_conv", "c1_bn", "c1_relu", *pool_layers, "c1_dropout"]
    conv = model.get_layer("c1_conv")
    assert conv.padding == "same" and conv.use_bias is False
    assert tuple(conv.kernel.shape) == (3, 3, 3, 6)


def test_conv_block_strides_and_bad_pool():
    inputs = keras.Input((8, 8, 3))
    assert tuple(conv_block(inputs, 4, None, "c", kernel_size=5, strides=2).shape) == (
        None,
        4,
        4,
        4,
    )
    with pytest.raises(ConfigError, match=re.escape("'pool' must be None, 'max' or 'avg'.")):
        conv_block(inputs, 4, None, "c2", pool="min")


@pytest.mark.parametrize(
    "in_channels, filters, strides, out_size, projected",
    [(16, 16, 1, 8, False), (16, 32, 1, 8, True), (16, 16, 2, 4, True), (8, 32, 2, 4, True)],
)
def test_residual_block_shapes_and_projection(in_channels, filters, strides, out_size, projected):
    inputs = keras.Input((8, 8, in_channels))
    outputs = residual_block(inputs, filters, LayerStyle(), name="r1", strides=strides)
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, out_size, out_size, filters)
    names = {layer.name for layer in model.layers}
    assert isinstance(model.get_layer("r1_add"), keras.layers.Add)
    assert {"r1_conv1", "r1_bn1", "r1_1_relu", "r1_conv2", "r1_bn2", "r1_out_relu"} <= names
    assert ("r1_proj" in names) is projected
    if projected:
        proj = model.get_layer("r1_proj")
        assert proj.kernel_size == (1, 1) and proj.strides == (strides, strides)
        assert "r1_proj_bn" in names


def test_residual_block_skip_is_identity():
    # With zero kernels and no BatchNorm, the main path is 0: out = relu(x).
    style = LayerStyle(initializer="zeros", batch_norm="none")
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, residual_block(inputs, 3, style, name="r"))
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), np.maximum(x, 0), atol=1e-6)


def test_residual_block_after_puts_batch_norm_behind_activations():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, residual_block(inputs, 3, LayerStyle(batch_norm="after"), "r"))
    names = [name for _, name in layers_after_input(model)]
    assert names == ["r_conv1", "r_1_relu", "r_bn1", "r_conv2", "r_add", "r_out_relu", "r_bn_out"]


@pytest.mark.parametrize("width, projected", [(8, False), (5, True)])
def test_dense_residual_block(width, projected):
    inputs = keras.Input((width,))
    outputs = dense_residual_block(inputs, 8, LayerStyle(dropout=0.1), name="d")
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, 8)
    names = {layer.name for layer in model.layers}
    assert {"d_dense1", "d_bn1", "d_dense2", "d_bn2", "d_add", "d_dropout"} <= names
    assert ("d_proj" in names) is projected


def test_dense_residual_skip_is_identity():
    style = LayerStyle(initializer="zeros", batch_norm="none", activation="linear")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, dense_residual_block(inputs, 3, style, name="d"))
    x = np.array([[1.0, -2.0, 3.0]], dtype="float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), x)


def test_seed_is_reproducible_and_differs_per_layer():
    def kernels(seed):
        inputs = keras.Input((6,))
        x = dense_block(inputs, 6, LayerStyle(seed=seed), name="a")
        x = dense_block(x, 6, LayerStyle(seed=seed), name="b")
        model = keras.Model(inputs, x)
        return [
            keras.ops.convert_to_numpy(model.get_layer(n).kernel) for n in ("a_dense", "b_dense")
        ]

    a1, b1 = kernels(3)
    a2, b2 = kernels(3)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.allclose(a1, b1)  # Same shape, different layers: not the same draw.
    assert not np.allclose(a1, kernels(4)[0])


def test_model_with_blocks_saves_and_reloads(tmp_path):
    style = LayerStyle(
        activation={"name": "leaky_relu", "negative_slope": 0.1},
        initializer="uniform_fan_in",
        regularizer="l1_l2",
        dropout=0.1,
        seed=0,
    )
    inputs = keras.Input((4, 4, 2))
    x = conv_block(inputs, 4, style, "c", pool="avg")
    x = residual_block(x, 4, style.replace(batch_norm="after"), "r")
    x = keras.layers.Flatten()(x)
    x = dense_residual_block(x, 8, style, "d")
    model = keras.Model(inputs, x)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    data = np.random.default_rng(1).normal(size=(3, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-6
    )


def test_style_normalizes_names():
    style = LayerStyle(activation="SiLU", initializer="kaiming_uniform", regularizer="elastic_net")
    assert (style.activation, style.initializer, style.regularizer) == (
        "swish",
        "he_uniform",
        "l1_l2",
    )
    assert LayerStyle(batch_norm=" After ").batch_norm == "after"
    assert LayerStyle(dropout=0).dropout == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"dropout": 1.5},
            "The 'dropout' parameter of LayerStyle must be a float in the range [0.0, 1.0). "
            "Got 1.5 instead.",
        ),
        (
            {"regularizer_strength": -1.0},
            "The 'regularizer_strength' parameter of LayerStyle must be a float in the range "
            "[0.0, inf). Got -1.0 instead.",
        ),
        (
            {"batch_norm": "sometimes"},
            "The 'batch_norm' parameter of LayerStyle must be a str among "
            "{'before', 'after', 'none'} or a bool. Got 'sometimes' instead.",
        ),
        ({"seed": "0"}, "The 'seed' parameter of LayerStyle must be an int or None. Got '0'"),
        ({"activation": 3}, "The 'activation' parameter of LayerStyle must be a str among"),
    ],
)
def test_style_validation(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        LayerStyle(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "rellu"}, "did you mean 'relu'"),
        ({"initializer": "glorot"}, "Unknown initializer 'glorot'"),
        ({"regularizer": "l3"}, "Unknown regularizer 'l3'"),
    ],
)
def test_style_unknown_names(kwargs, match):
    with pytest.raises(UnknownNameError, match=match):
        LayerStyle(**kwargs)


def test_bad_units():
    inputs = keras.Input((3,))
    with pytest.raises(ConfigError, match=re.escape("'units' must be an int >= 1. Got 0 instead.")):
        dense_block(inputs, 0, None, "z")


def test_packages_import_without_keras():
    code = (
        "import sys, kflow.blocks, kflow.optim\n"
        "kflow.blocks.LayerStyle(activation='gelu', initializer='xavier')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
