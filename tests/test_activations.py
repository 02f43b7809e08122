"""Activation layers compute the textbook formulas."""

import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

from kflow.blocks.activations import (  # noqa: E402
    ACTIVATIONS,
    RELU_FAMILY,
    activation_layer,
    is_relu_family,
)
from kflow.errors import ConfigError, UnknownNameError  # noqa: E402

X = np.linspace(-7.0, 7.0, 29, dtype=np.float32).reshape(1, -1)
_erf = np.vectorize(math.erf)
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


FORMULAS = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.3 * x),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "swish": lambda x: x * _sigmoid(x),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * (np.exp(x) - 1)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "relu6": lambda x: np.clip(x, 0, 6),
    "linear": lambda x: x,
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True),
}


def test_every_registered_activation_is_tested():
    assert set(FORMULAS) == set(ACTIVATIONS.names())


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_layer_matches_formula(name):
    layer = activation_layer(name)
    expected_type = "LeakyReLU" if name == "leaky_relu" else "Activation"
    assert type(layer).__name__ == expected_type
    out = keras.ops.convert_to_numpy(layer(X))
    np.testing.assert_allclose(out, FORMULAS[name](X.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_silu_alias_and_name_prefix():
    layer = activation_layer("SiLU", name_prefix="block1")
    assert layer.name == "block1_swish"
    out = keras.ops.convert_to_numpy(layer(X))
    np.testing.assert_allclose(out, FORMULAS["swish"](X), rtol=1e-5, atol=1e-6)


def test_leaky_relu_slope_from_dict():
    layer = activation_layer({"name": "leaky_relu", "negative_slope": 0.1}, name_prefix="b")
    assert layer.name == "b_leaky_relu"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(X)), np.where(X > 0, X, 0.1 * X))


def test_each_call_builds_a_new_layer():
    assert activation_layer("relu") is not activation_layer("relu")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("relu", True),
        ("leaky_relu", True),
        ("relu6", True),
        ("elu", True),
        ("gelu", True),
        ("swish", True),
        ("silu", True),
        ("softplus", True),
        ("selu", False),
        ("sigmoid", False),
        ("tanh", False),
        ("linear", False),
        ("softmax", False),
    ],
)
def test_relu_family(name, expected):
    assert is_relu_family(name) is expected
    assert (ACTIVATIONS.canonical(name) in RELU_FAMILY) is expected


def test_unknown_activation():
    with pytest.raises(UnknownNameError, match=r"Unknown activation 'rleu'.*did you mean 'relu'"):
        activation_layer("rleu")
    with pytest.raises(UnknownNameError, match="did you mean 'tanh'"):
        is_relu_family("tahn")


def test_argument_to_activation_without_arguments():
    with pytest.raises(ConfigError, match="Invalid arguments for activation 'relu'"):
        activation_layer({"name": "relu", "alpha": 0.1})
