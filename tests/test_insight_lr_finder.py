"""The learning-rate range test."""

import keras
import numpy as np
import pytest

from kflow.insight.lr_finder import lr_range_test, suggest_learning_rate


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = list(np.geomspace(1e-5, 1.0, 101))
    x = np.log10(lrs)
    # Flat, falls fastest around 1e-3, bottoms out near 1e-1, then blows up.
    loss = 2 - 1.5 / (1 + np.exp(-(x + 3) * 4)) + np.where(x > -1, (x + 1) ** 2 * 20, 0)
    steepest, minimum = suggest_learning_rate(lrs, list(loss))
    assert steepest == pytest.approx(1e-3, rel=0.15)
    assert 3e-2 < minimum < 2e-1


def test_no_suggestion_without_data():
    assert suggest_learning_rate([1e-3, 1e-2], [1.0, 0.9]) == (None, None)


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return model


def test_range_test_restores_weights_and_optimizer_state():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = x @ rng.normal(size=(6, 1)).astype("float32")
    model = _model()
    model.fit(x, y, epochs=1, verbose=0)  # optimizer built, with state
    weights = model.get_weights()
    opt_state = [v.numpy().copy() for v in model.optimizer.variables]
    result = lr_range_test(model, x, y, batch_size=32, min_lr=1e-5, max_lr=10.0, steps=60)
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, v in zip(opt_state, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a, v.numpy())
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    # Exponentially spaced rates from min_lr, one step each, stopped when the loss blows up.
    assert result.lrs[0] == pytest.approx(1e-5)
    ratios = np.asarray(result.lrs[1:]) / np.asarray(result.lrs[:-1])
    np.testing.assert_allclose(ratios, (10.0 / 1e-5) ** (1 / 59), rtol=1e-6)
    assert len(result.losses) == len(result.smoothed) == len(result.lrs) <= 60
    assert 1e-5 < result.suggested_lr < result.min_loss_lr <= 10.0
    assert "suggested learning rate" in result.summary()


@pytest.mark.parametrize("kwargs, message", [
    ({"min_lr": 1.0, "max_lr": 0.1}, "Need 0 < min_lr < max_lr"),
    ({"steps": 2}, "`steps` must be >= 5"),
])
def test_range_test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_range_test(_model(), np.zeros((8, 6)), np.zeros((8, 1)), **kwargs)


def test_lr_find_on_a_recipe_writes_a_plot(tmp_path):
    from kflow.insight.lr_finder import lr_find

    result = lr_find("lecture-mlp", steps=40, min_lr=1e-5, max_lr=10.0,
                     plot_path=tmp_path / "lr.png", set_args=["hidden_layers=1", "units=16"])
    assert result.plot_path.read_bytes().startswith(b"\x89PNG")
    assert result.suggested_lr is not None and 1e-5 < result.suggested_lr < 10.0
    assert result.stopped_early  # Adam at lr ~10 diverges


def test_lr_find_cli_rejects_a_bad_range():
    from tests.conftest import run_cli

    out = run_cli("lr-find", "digits-mlp", "--min-lr", "1", "--max-lr", "0.1")
    assert out.returncode == 2
    assert "--min-lr must be > 0 and below --max-lr" in out.stderr
