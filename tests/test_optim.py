"""Optimizer steps and schedule values match the hand formulas."""

import math
import os
import re

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

from kflow.errors import ConfigError, UnknownNameError  # noqa: E402
from kflow.optim import build_optimizer, build_schedule  # noqa: E402

EPS = 1e-7  # Keras' default epsilon.
W0 = np.array([1.0, -2.0, 0.5], dtype="float32")
G1 = np.array([0.5, -1.5, 2.0], dtype="float32")
G2 = np.array([-1.0, 0.25, 1.0], dtype="float32")


def run_steps(optimizer, grads, w0=W0):
    """Applies each gradient in turn to a variable starting at w0."""
    variable = keras.Variable(w0)
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
    return keras.ops.convert_to_numpy(variable)


def _nadam_first_step_factor():
    # Keras' Nadam, first step: m_hat / sqrt(v_hat) = sign(g) * (1 + 0.1 * u2 / (1 - u1 * u2)).
    u1 = 0.9 * (1 - 0.5 * 0.96**1)
    u2 = 0.9 * (1 - 0.5 * 0.96**2)
    return 1 + 0.1 * u2 / (1 - u1 * u2)


# (name, kwargs, gradients, expected weights), lr = 0.1 throughout.
LR = 0.1
STEP_CASES = [
    ("sgd", {}, [G1], W0 - LR * G1),
    (
        "sgd",
        {"momentum": 0.9},
        [G1, G2],
        # m1 = -lr g1; w1 = w0 + m1; m2 = 0.9 m1 - lr g2; w2 = w1 + m2.
        W0 - LR * G1 + (0.9 * -LR * G1 - LR * G2),
    ),
    (
        "sgd",
        {"momentum": 0.9, "nesterov": True},
        [G1, G2],
        # w += momentum * m_new - lr * g (look-ahead).
        W0 + (0.9 * (-LR * G1) - LR * G1) + (0.9 * (0.9 * -LR * G1 - LR * G2) - LR * G2),
    ),
    ("adagrad", {}, [G1], W0 - LR * G1 / np.sqrt(0.1 + G1**2 + EPS)),
    ("rmsprop", {}, [G1], W0 - LR * G1 / np.sqrt(0.1 * G1**2 + EPS)),
    (
        "rmsprop",
        {"momentum": 0.5},
        [G1, G2],
        W0
        - LR * G1 / np.sqrt(0.1 * G1**2 + EPS)
        - (
            0.5 * LR * G1 / np.sqrt(0.1 * G1**2 + EPS)
            + LR * G2 / np.sqrt(0.9 * 0.1 * G1**2 + 0.1 * G2**2 + EPS)
        ),
    ),
    ("adam", {}, [G1], W0 - LR * np.sign(G1)),
    ("adamw", {"weight_decay": 0.5}, [G1], W0 * (1 - LR * 0.5) - LR * np.sign(G1)),
    ("adamw", {}, [G1], W0 * (1 - LR * 0.004) - LR * np.sign(G1)),
    ("sgd", {"weight_decay": 0.5}, [G1], W0 * (1 - LR * 0.5) - LR * G1),
    ("nadam", {}, [G1], W0 - LR * np.sign(G1) * _nadam_first_step_factor()),
]


@pytest.mark.parametrize(
    "name, kwargs, grads, expected",
    STEP_CASES,
    ids=[f"{c[0]}-{'-'.join(c[1]) or 'default'}" for c in STEP_CASES],
)
def test_steps_match_hand_formula(name, kwargs, grads, expected):
    optimizer = build_optimizer(name, LR, **kwargs)
    np.testing.assert_allclose(run_steps(optimizer, grads), expected, rtol=1e-5, atol=1e-6)


def test_canonical_names_and_classes():
    assert type(build_optimizer("SGD", 0.1)).__name__ == "SGD"
    assert type(build_optimizer("RMSProp", 0.1)).__name__ == "RMSprop"
    assert build_optimizer("adamw", 0.1).weight_decay == 0.004
    assert build_optimizer("adam", 0.1).weight_decay is None


def two_variable_step(**clip):
    """One SGD step (lr=1) on two variables whose gradients have norms 3 and 4."""
    optimizer = build_optimizer("sgd", 1.0, **clip)
    a, b = keras.Variable(np.zeros(2, "float32")), keras.Variable(np.zeros(2, "float32"))
    grads = [np.array([3.0, 0.0], "float32"), np.array([0.0, 4.0], "float32")]
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], [a, b])
    return -keras.ops.convert_to_numpy(a), -keras.ops.convert_to_numpy(b)


def test_clipnorm_clips_each_variable():
    ua, ub = two_variable_step(clipnorm=1.0)
    np.testing.assert_allclose(ua, [1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(ub, [0.0, 1.0], rtol=1e-6)


def test_global_clipnorm_scales_all_variables_together():
    ua, ub = two_variable_step(global_clipnorm=1.0)
    # Global norm 5 -> 1: the 3:4 ratio between the variables is kept.
    np.testing.assert_allclose(ua, [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(ub, [0.0, 0.8], rtol=1e-6)
    assert math.hypot(np.linalg.norm(ua), np.linalg.norm(ub)) == pytest.approx(1.0)


def test_clipvalue_clips_elements():
    ua, ub = two_variable_step(clipvalue=2.0)
    np.testing.assert_allclose(ua, [2.0, 0.0])
    np.testing.assert_allclose(ub, [0.0, 2.0])


def test_schedule_drives_the_optimizer():
    schedule = build_schedule(
        "step", 1.0, steps_per_epoch=1, epochs=5, decay_rate=0.5, decay_epochs=1
    )
    optimizer = build_optimizer("sgd", schedule)
    # Steps use lr 1, 0.5, 0.25 (the step counter starts at 0).
    w = run_steps(optimizer, [np.ones(3, "float32")] * 3, w0=np.zeros(3, "float32"))
    np.testing.assert_allclose(w, -1.75 * np.ones(3), rtol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        (
            "adam",
            {"nesterov": True},
            "nesterov=True is only supported by the 'sgd' optimizer. Got optimizer 'adam'.",
        ),
        (
            "rmsprop",
            {"momentum": 0.9, "nesterov": True},
            "nesterov=True is only supported by the 'sgd' optimizer. Got optimizer 'rmsprop'.",
        ),
        (
            "adam",
            {"momentum": 0.9},
            "momentum is only supported by the 'sgd' and 'rmsprop' optimizers. "
            "Got momentum=0.9 with optimizer 'adam'.",
        ),
        (
            "sgd",
            {"nesterov": True},
            "nesterov=True needs momentum > 0 (Nesterov momentum without momentum is plain "
            "SGD). Got momentum=0.0.",
        ),
        (
            "sgd",
            {"clipnorm": 1.0, "global_clipnorm": 1.0},
            "Only one of clipnorm, clipvalue and global_clipnorm can be set (clipnorm clips "
            "each variable's gradient, global_clipnorm all of them together). "
            "Got clipnorm=1.0, global_clipnorm=1.0.",
        ),
        (
            "sgd",
            {"momentum": 1.0},
            "'momentum' must be a float in the range [0.0, 1.0). Got 1.0 instead.",
        ),
        (
            "sgd",
            {"clipnorm": 0.0},
            "'clipnorm' must be a float in the range (0.0, inf). Got 0.0 instead.",
        ),
        (
            "adamw",
            {"weight_decay": -0.1},
            "'weight_decay' must be a float in the range [0.0, inf). Got -0.1 instead.",
        ),
        ("sgd", {"nesterov": "yes"}, "'nesterov' must be a bool. Got 'yes' instead."),
    ],
)
def test_bad_optimizer_arguments(name, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_optimizer(name, 0.1, **kwargs)


@pytest.mark.parametrize("learning_rate", [0.0, -1.0, "0.1", float("inf")])
def test_bad_learning_rate(learning_rate):
    with pytest.raises(
        ConfigError, match=re.escape("'learning_rate' must be a float in the range")
    ):
        build_optimizer("sgd", learning_rate)


def test_unknown_optimizer():
    with pytest.raises(
        UnknownNameError, match=r"Allowed: adagrad, adam, adamw, nadam, rmsprop, sgd "
    ):
        build_optimizer("adma", 0.1)
    with pytest.raises(UnknownNameError, match="did you mean 'adam'"):
        build_optimizer("adma", 0.1)


# ---------------------------------------------------------------- schedules


def values(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


def test_constant_without_warmup_is_a_float():
    assert build_schedule("constant", 0.1, steps_per_epoch=10, epochs=3) == 0.1


@pytest.mark.parametrize(
    "name, kwargs, steps, expected",
    [
        # steps_per_epoch=10: decay every 2 epochs = 20 steps.
        ("step", {}, [0, 19, 20, 39, 40, 100], [1, 1, 0.5, 0.5, 0.25, 0.5**5]),
        ("exponential", {}, [0, 10, 20, 30], [1, 0.5**0.5, 0.5, 0.5**1.5]),
        # warmup 2 epochs = 20 steps from 0, then cosine over 80 steps to 0.1.
        (
            "cosine",
            {"warmup_epochs": 2, "min_lr_ratio": 0.1},
            [0, 5, 10, 20, 60, 100, 150],
            [0, 0.25, 0.5, 1, 0.1 + 0.9 * 0.5, 0.1, 0.1],
        ),
        (
            "cosine",
            {},
            [0, 25, 50, 100],
            [1, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0],
        ),
        ("constant", {"warmup_epochs": 2}, [0, 5, 20, 50, 99, 500], [0, 0.25, 1, 1, 1, 1]),
        ("constant", {"warmup_epochs": 0.5}, [0, 1, 5, 6], [0, 0.2, 1, 1]),
    ],
)
def test_schedule_values(name, kwargs, steps, expected):
    args = {"steps_per_epoch": 10, "epochs": 10, "decay_rate": 0.5, "decay_epochs": 2, **kwargs}
    schedule = build_schedule(name, 1.0, **args)
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-5, atol=1e-6)


def test_cosine_warmup_rises_linearly_then_decreases():
    schedule = build_schedule("cosine", 0.01, steps_per_epoch=4, epochs=6, warmup_epochs=1)
    lrs = np.array(values(schedule, range(25)))
    np.testing.assert_allclose(np.diff(lrs[:5]), 0.01 / 4, rtol=1e-5)
    assert np.all(np.diff(lrs[4:]) < 0)


@pytest.mark.parametrize("name", ["step", "exponential", "cosine"])
def test_schedules_are_keras_builtins_and_serialize(name):
    schedule = build_schedule(name, 0.1, steps_per_epoch=5, epochs=4, decay_epochs=1)
    assert type(schedule).__module__.startswith("keras.")
    config = keras.optimizers.schedules.serialize(schedule)
    clone = keras.optimizers.schedules.deserialize(config)
    np.testing.assert_allclose(values(clone, [0, 7, 20]), values(schedule, [0, 7, 20]))
    optimizer = keras.optimizers.deserialize(
        keras.optimizers.serialize(build_optimizer("adam", schedule))
    )
    lr_config = keras.optimizers.serialize(optimizer)["config"]["learning_rate"]
    assert lr_config["class_name"] == type(schedule).__name__


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        (
            "step",
            {"warmup_epochs": 1},
            "warmup_epochs is only supported by the 'constant' and 'cosine' schedules. "
            "Got warmup_epochs=1.0 with schedule 'step'.",
        ),
        (
            "cosine",
            {"warmup_epochs": 5},
            "warmup_epochs must be < epochs. Got warmup_epochs=5.0 and epochs=5.",
        ),
        (
            "exponential",
            {"min_lr_ratio": 0.1},
            "min_lr_ratio is only supported by the 'cosine' schedule. "
            "Got min_lr_ratio=0.1 with schedule 'exponential'.",
        ),
        (
            "step",
            {"decay_rate": 1.5},
            "'decay_rate' must be a float in the range (0.0, 1.0]. Got 1.5 instead.",
        ),
        (
            "step",
            {"decay_epochs": 0},
            "'decay_epochs' must be a float in the range (0.0, inf). Got 0 instead.",
        ),
        (
            "cosine",
            {"steps_per_epoch": 0},
            "'steps_per_epoch' must be an int in the range [1, inf). Got 0 instead.",
        ),
        (
            "cosine",
            {"epochs": 2.5},
            "'epochs' must be an int in the range [1, inf). Got 2.5 instead.",
        ),
        (
            "cosine",
            {"min_lr_ratio": -0.1},
            "'min_lr_ratio' must be a float in the range [0.0, 1.0]. Got -0.1 instead.",
        ),
    ],
)
def test_bad_schedule_arguments(name, kwargs, message):
    args = {"steps_per_epoch": 10, "epochs": 5, **kwargs}
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_schedule(name, 0.1, **args)


def test_unknown_schedule():
    with pytest.raises(UnknownNameError, match="did you mean 'cosine'"):
        build_schedule("cosin", 0.1, steps_per_epoch=1, epochs=1)


def test_numpy_numbers_are_accepted():
    optimizer = build_optimizer("sgd", np.float32(0.5), momentum=np.float64(0.5))
    assert optimizer.momentum == 0.5
    schedule = build_schedule("step", np.float32(1.0), steps_per_epoch=np.int64(2), epochs=3)
    assert values(schedule, [0]) == [1.0]
