"""Initializers follow their variance rules; names and errors are helpful."""

import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

from kflow.blocks.initializers import INITIALIZERS, get_initializer  # noqa: E402
from kflow.errors import ConfigError, UnknownNameError  # noqa: E402

# A Dense kernel (fan_in=400, fan_out=300) and a Conv2D kernel
# (fan_in = 3*3*32 = 288, fan_out = 3*3*64 = 576).
DENSE = {"fan_in": 400, "fan_out": 300}
CONV = {"fan_in": 288, "fan_out": 576}

# name -> (kind, std as a function of (fan_in, fan_out)); for "uniform" the
# values also lie in [-limit, limit] with limit = sqrt(3) * std.
RULES = {
    "uniform_fan_in": ("uniform", lambda fi, fo: math.sqrt(1 / (3 * fi))),
    "glorot_normal": ("normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    "glorot_uniform": ("uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    "he_normal": ("normal", lambda fi, fo: math.sqrt(2 / fi)),
    "he_uniform": ("uniform", lambda fi, fo: math.sqrt(2 / fi)),
    "lecun_normal": ("normal", lambda fi, fo: math.sqrt(1 / fi)),
    "lecun_uniform": ("uniform", lambda fi, fo: math.sqrt(1 / fi)),
    "variance_scaling": ("normal", lambda fi, fo: math.sqrt(1 / fi)),
    "random_normal": ("untruncated", lambda fi, fo: 0.05),
    "random_uniform": ("uniform", lambda fi, fo: 0.05 / math.sqrt(3)),
    # stddev=0.05 before the cut at 2 stddev: 0.8796 of it remains.
    "truncated_normal": ("normal", lambda fi, fo: 0.05 * 0.87962566103423978),
}


def dense_kernel(initializer) -> np.ndarray:
    layer = keras.layers.Dense(DENSE["fan_out"], kernel_initializer=initializer)
    layer.build((None, DENSE["fan_in"]))
    return keras.ops.convert_to_numpy(layer.kernel)


def conv_kernel(initializer) -> np.ndarray:
    layer = keras.layers.Conv2D(64, 3, kernel_initializer=initializer)
    layer.build((None, 8, 8, 32))
    return keras.ops.convert_to_numpy(layer.kernel)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("layer", ["dense", "conv"])
def test_empirical_std_matches_rule(name, layer):
    kind, rule = RULES[name]
    fans = DENSE if layer == "dense" else CONV
    build = dense_kernel if layer == "dense" else conv_kernel
    w = build(get_initializer(name, seed=7))
    std = rule(fans["fan_in"], fans["fan_out"])

    assert abs(w.mean()) < 0.05 * std
    assert w.std() == pytest.approx(std, rel=0.05)
    if kind == "uniform":
        limit = math.sqrt(3) * std
        assert np.abs(w).max() <= limit * (1 + 1e-6)
        assert np.abs(w).max() > 0.99 * limit  # Fills the whole range.
    elif kind == "normal":  # Truncated at 2 stddev of the underlying normal.
        assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6)
    else:
        assert np.abs(w).max() > 3 * std


def test_uniform_fan_in_is_the_lecture_rule():
    w = dense_kernel(get_initializer("uniform_fan_in", seed=1))
    assert np.abs(w).max() <= 1 / math.sqrt(400)
    assert w.std() == pytest.approx(1 / math.sqrt(3 * 400), rel=0.05)
    # Conv fan_in = 3 * 3 * 32, not the number of input channels.
    w = conv_kernel(get_initializer("uniform_fan_in", seed=1))
    assert np.abs(w).max() <= 1 / math.sqrt(288)
    assert np.abs(w).max() > 0.99 / math.sqrt(288)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("zeros", lambda w: np.all(w == 0)),
        ("ones", lambda w: np.all(w == 1)),
        ({"name": "constant", "value": 0.25}, lambda w: np.all(w == 0.25)),
        ("orthogonal", lambda w: np.allclose(w.T @ w, np.eye(300), atol=1e-4)),
        ("identity", lambda w: np.array_equal(w, np.eye(400, 300))),
    ],
)
def test_deterministic_and_orthogonal_initializers(name, expected):
    assert expected(dense_kernel(get_initializer(name, seed=3)))


def test_dict_form_passes_kwargs():
    w = dense_kernel(get_initializer({"name": "random_normal", "stddev": 0.01}, seed=2))
    assert w.std() == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize(
    "alias, canonical, cls",
    [
        ("xavier_normal", "glorot_normal", "GlorotNormal"),
        ("xavier", "glorot_normal", "GlorotNormal"),
        ("xavier_uniform", "glorot_uniform", "GlorotUniform"),
        ("kaiming_normal", "he_normal", "HeNormal"),
        ("Kaiming-Uniform", "he_uniform", "HeUniform"),
        ("lecun_uniform", "lecun_uniform", "LecunUniform"),
    ],
)
def test_aliases_resolve(alias, canonical, cls):
    assert INITIALIZERS.canonical(alias) == canonical
    assert type(get_initializer(alias)).__name__ == cls


def test_same_seed_same_values_and_different_seeds_differ():
    a = dense_kernel(get_initializer("he_normal", seed=5))
    b = dense_kernel(get_initializer("he_normal", seed=5))
    c = dense_kernel(get_initializer("he_normal", seed=6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_dict_seed_wins_over_argument():
    a = dense_kernel(get_initializer({"name": "he_uniform", "seed": 1}, seed=2))
    b = dense_kernel(get_initializer("he_uniform", seed=1))
    np.testing.assert_array_equal(a, b)


def test_none_and_objects_pass_through():
    init = keras.initializers.Ones()
    assert get_initializer(init) is init
    assert get_initializer(None) is None


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(UnknownNameError, match=r"did you mean 'he_normal'\?") as info:
        get_initializer("he-normall")
    message = str(info.value)
    assert message.startswith("Unknown initializer 'he-normall'. Allowed: constant, ")
    for name in ("glorot_normal", "uniform_fan_in", "zeros"):
        assert name in message


@pytest.mark.parametrize(
    "identifier, match",
    [
        ({"name": "random_normal", "std": 0.1}, "unexpected keyword argument 'std'"),
        ({"name": "variance_scaling", "scale": -1.0}, "`scale` must be positive"),
        ({"stddev": 0.1}, "needs a 'name' key"),
        (3, "Could not interpret initializer 3"),
    ],
)
def test_bad_arguments_raise_config_error(identifier, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        get_initializer(identifier)


def test_bad_seed():
    with pytest.raises(ConfigError, match=re.escape("The seed must be an int or None. Got")):
        get_initializer("he_normal", seed=1.5)


def _fan_in_model():
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(4, kernel_initializer=get_initializer("uniform_fan_in", seed=0))(
        inputs
    )
    return keras.Model(inputs, outputs)


def test_uniform_fan_in_survives_save_and_load(tmp_path):
    model = _fan_in_model()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    init = loaded.layers[-1].kernel_initializer
    assert type(init).__name__ == "UniformFanIn"
    assert init.get_config() == {"seed": 0}
    np.testing.assert_array_equal(loaded.layers[-1].kernel.numpy(), model.layers[-1].kernel.numpy())


def test_uniform_fan_in_reloads_in_a_fresh_process(tmp_path):
    path = tmp_path / "model.keras"
    _fan_in_model().save(path)
    code = textwrap.dedent(
        f"""
        import keras
        from kflow.blocks import register_custom_objects
        register_custom_objects()
        model = keras.models.load_model({str(path)!r})
        print(type(model.layers[-1].kernel_initializer).__name__)
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("UniformFanIn")
