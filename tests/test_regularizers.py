"""Regularizers add the documented penalty to model.losses."""

import os
import re

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

from kflow.blocks.regularizers import REGULARIZERS, get_regularizer  # noqa: E402
from kflow.errors import ConfigError, UnknownNameError  # noqa: E402


def model_with(regularizer):
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(
        3,
        kernel_initializer=keras.initializers.RandomNormal(seed=0),
        kernel_regularizer=regularizer,
    )
    model = keras.Model(inputs, dense(inputs))
    return model, keras.ops.convert_to_numpy(dense.kernel)


@pytest.mark.parametrize(
    "name, strength, penalty",
    [
        ("l2", 1e-2, lambda w, s: s * np.sum(w**2)),
        ("L2", 0.5, lambda w, s: s * np.sum(w**2)),
        ("l1", 1e-2, lambda w, s: s * np.sum(np.abs(w))),
        ("l1_l2", 1e-2, lambda w, s: s * np.sum(np.abs(w)) + s * np.sum(w**2)),
        ("elastic_net", 0.3, lambda w, s: s * np.sum(np.abs(w)) + s * np.sum(w**2)),
    ],
)
def test_penalty_in_model_losses(name, strength, penalty):
    model, w = model_with(get_regularizer(name, strength=strength))
    assert len(model.losses) == 1
    loss = float(keras.ops.convert_to_numpy(model.losses[0]))
    assert loss == pytest.approx(penalty(w, strength), rel=1e-5)
    assert loss > 0


def test_dict_form_sets_strength_and_separate_l1_l2():
    model, w = model_with(get_regularizer({"name": "l1_l2", "l1": 0.1, "l2": 0.0}))
    loss = float(keras.ops.convert_to_numpy(model.losses[0]))
    assert loss == pytest.approx(0.1 * np.sum(np.abs(w)), rel=1e-5)

    model, w = model_with(get_regularizer({"name": "l2", "strength": 0.2}, strength=5.0))
    loss = float(keras.ops.convert_to_numpy(model.losses[0]))
    assert loss == pytest.approx(0.2 * np.sum(w**2), rel=1e-5)


@pytest.mark.parametrize("identifier", ["none", "None", None])
def test_none_adds_no_loss(identifier):
    assert get_regularizer(identifier) is None
    model, _ = model_with(get_regularizer(identifier))
    assert model.losses == []


def test_zero_strength_is_allowed():
    model, _ = model_with(get_regularizer("l2", strength=0))
    assert float(keras.ops.convert_to_numpy(model.losses[0])) == 0.0


@pytest.mark.parametrize(
    "strength, shown",
    [(-1.0, "-1.0"), (-1, "-1"), (float("nan"), "nan"), ("0.1", "'0.1'"), (True, "True")],
)
def test_bad_strength(strength, shown):
    message = f"The regularizer strength must be a float >= 0. Got {shown} instead."
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        get_regularizer("l2", strength=strength)


def test_negative_l1_in_dict():
    with pytest.raises(ConfigError, match=re.escape("The l1 strength must be a float >= 0.")):
        get_regularizer({"name": "l1_l2", "l1": -0.5})


def test_unknown_name():
    with pytest.raises(UnknownNameError, match=re.escape("Allowed: l1, l1_l2, l2, none")):
        get_regularizer("l3")
    assert REGULARIZERS.canonical("Elastic-Net") == "l1_l2"


def test_regularizer_object_passes_through():
    reg = keras.regularizers.L2(0.1)
    assert get_regularizer(reg) is reg
