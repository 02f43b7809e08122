"""Insight callbacks, Keras style: fake logs fed to stub or tiny models."""

import math

import keras
import numpy as np
import pytest

from kflow.insight.dead_units import DeadUnitMonitor, relu_family_layers
from kflow.insight.grad_logger import GradientNormLogger
from kflow.insight.insight_model import InsightModel
from kflow.insight.lr_logger import LearningRateLogger
from kflow.insight.nan_guard import NanGuard
from kflow.insight.progbar import CompactProgbar, is_detail_key
from kflow.run import read_grad_norms


class _StubOptimizer:
    def __init__(self, iterations=0, learning_rate=0.01):
        self.iterations = np.int64(iterations)
        self.learning_rate = np.float32(learning_rate)


class _StubModel:
    """What the callbacks touch: weights, stop flag, optimizer."""

    def __init__(self):
        self.weights = [np.zeros(3)]
        self.stop_training = False
        self.optimizer = _StubOptimizer()
        self.steps_per_execution = 1

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [w.copy() for w in weights]


def _guard(steps=10):
    guard, model = NanGuard(log=None), _StubModel()
    guard.set_model(model)
    guard.set_params({"steps": steps})
    return guard, model


def _good_epoch(guard, model, epoch, value):
    guard.on_epoch_begin(epoch)
    model.weights = [np.full(3, value)]
    guard.on_train_batch_end(9, {"loss": 1.0})
    guard.on_epoch_end(epoch, {"loss": 1.0})


def test_nan_guard_stops_and_restores_the_last_good_epoch():
    guard, model = _guard()
    guard.on_train_begin()
    _good_epoch(guard, model, 0, 1.0)
    _good_epoch(guard, model, 1, 2.0)
    guard.on_epoch_begin(2)
    model.weights = [np.full(3, np.nan)]
    model.optimizer.iterations = np.int64(25)
    guard.on_train_batch_end(4, {"loss": float("nan")})
    assert model.stop_training
    guard.on_epoch_end(2, {"loss": float("nan")})
    np.testing.assert_array_equal(model.weights[0], np.full(3, 2.0))
    assert (guard.epoch, guard.step, guard.restored_epoch) == (3, 5, 2)
    assert guard.message.startswith(
        "Epoch 3, step 5 of 10 (optimizer step 25): the training loss is nan; stopped "
        "training and restored the weights of epoch 2, the last with a finite loss.")


def test_nan_guard_in_the_first_epoch_restores_the_initial_weights():
    guard, model = _guard()
    guard.on_train_begin()
    model.weights = [np.full(3, 7.0)]
    guard.on_epoch_begin(0)
    model.weights = [np.full(3, np.inf)]
    guard.on_train_batch_end(0, {"loss": float("inf")})
    guard.on_epoch_end(0, {"loss": float("inf")})
    np.testing.assert_array_equal(model.weights[0], np.full(3, 7.0))
    assert "the training loss is inf" in guard.message
    assert "restored the initial weights" in guard.message


def test_nan_guard_leaves_finite_training_alone():
    guard, model = _guard()
    guard.on_train_begin()
    for epoch in range(3):
        _good_epoch(guard, model, epoch, float(epoch))
    assert not model.stop_training and guard.message == "" and guard.epoch is None


def test_nan_guard_names_the_check_interval_with_steps_per_execution():
    guard, model = _guard(steps=40)
    model.steps_per_execution = 32
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(31, {"loss": float("nan")})
    guard.on_epoch_end(0, {"loss": float("nan")})
    assert "Epoch 1, step 32 of 40 (the loss is checked every 32 steps" in guard.message


def test_learning_rate_logger_adds_the_rate_to_the_epoch_logs():
    cb, model = LearningRateLogger(), _StubModel()
    model.optimizer.learning_rate = np.float32(0.125)
    cb.set_model(model)
    logs = {"loss": 1.0}
    cb.on_epoch_end(0, logs)
    assert logs["learning_rate"] == 0.125


@pytest.mark.parametrize("key, detail", [
    ("grad_norm/hidden_0_dense", True), ("dead_relu/hidden_0_relu", True),
    ("grad_norm/total", False), ("loss", False), ("val_accuracy", False),
    ("learning_rate", False)])
def test_compact_progbar_hides_per_layer_columns(key, detail):
    assert is_detail_key(key) is detail
    assert (key in CompactProgbar._compact({key: 1.0})) is not detail


def _tiny(dead_bias=None, every=1):
    inputs = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    a = keras.layers.Activation("relu", name="act")(keras.layers.Dense(6, name="pre")(h))
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(a)
    model = InsightModel(inputs, outputs, grad_log_every=every)
    if dead_bias is not None:
        kernel, _ = model.get_layer("pre").get_weights()
        model.get_layer("pre").set_weights([kernel * 0, np.full(6, dead_bias, "float32")])
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def test_relu_family_layers_finds_activation_layers_and_builtin_activations():
    names = [layer.name for layer in relu_family_layers(_tiny())]
    assert names == ["hidden", "act"]


@pytest.mark.parametrize("bias, dead", [(-1.0, 1.0), (1.0, 0.0)])
def test_dead_unit_monitor_measures_units_that_never_activate(bias, dead):
    model = _tiny(dead_bias=bias)
    x, _ = _data()
    monitor = DeadUnitMonitor(x)
    monitor.set_model(model)
    monitor.on_train_begin()
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert logs["dead_relu/act"] == dead
    assert 0.0 <= logs["dead_relu/hidden"] < 0.5


def test_gradient_norm_logger_writes_csv_history_and_tensorboard(tmp_path):
    model = _tiny(every=2)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy",
                  steps_per_execution=3)
    x, y = _data()
    logger = GradientNormLogger(tmp_path / "grad_norms.csv", tmp_path / "tb")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                        callbacks=[logger])
    g = read_grad_norms(tmp_path)
    assert g.layers == ["hidden", "pre", "head"]
    assert g.kinds["hidden"] == "Dense"
    # 8 steps per epoch, every 2nd step logged (1, 3, 5, ...), none lost to the
    # 3-step executions.
    assert g.steps["total"] == list(range(1, 17, 2))
    assert g.epochs["total"] == [0] * 4 + [1] * 4
    for i in range(len(g.steps["total"])):
        layer_sq = sum(g.grad[n][i] ** 2 for n in g.layers)
        assert g.grad["total"][i] == pytest.approx(math.sqrt(layer_sq), rel=1e-4)
    assert math.isnan(g.ratio["head"][0]) and all(r > 0 for r in g.ratio["head"][1:])
    for key in ("grad_norm/total", "grad_norm/hidden", "grad_norm/head"):
        assert len(history.history[key]) == 2
    assert history.history["grad_norm/total"][0] == pytest.approx(
        np.mean(g.grad["total"][:4]), rel=1e-4)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events, "TensorBoard scalars written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"grad_norm/total", "grad_norm/hidden"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("grad_norm/total")] == g.steps["total"]


def test_gradient_norm_logger_drops_the_rows_a_resumed_run_redoes(tmp_path):
    csv_path = tmp_path / "grad_norms.csv"
    csv_path.write_text("step,epoch,layer,kind,grad_norm,weight_norm,update_ratio\n"
                        "1,0,a,Dense,1,1,nan\n5,0,a,Dense,1,1,0.1\n9,1,a,Dense,1,1,0.1\n")
    logger = GradientNormLogger(csv_path)
    logger._drop_redone_rows(after_step=5)
    assert [ln.split(",")[0] for ln in csv_path.read_text().splitlines()] == ["step", "1", "5"]


def test_gradient_norm_logger_ignores_plain_models(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", "mse")
    x, _ = _data(16)
    logger = GradientNormLogger(tmp_path / "g.csv")
    history = model.fit(x, np.zeros((16, 2)), epochs=1, verbose=0, callbacks=[logger])
    assert not (tmp_path / "g.csv").exists()
    assert "grad_norm/total" not in history.history
