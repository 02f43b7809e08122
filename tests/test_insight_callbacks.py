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
        "training and restored the weights of epoch 2, the last with a finite loss and "
        "weights.")


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
    # 8 steps per epoch in calls of 3 steps (starting at 0, 3, 6 | 8, 11, 14): each
    # call's first step is recorded once the step reached the next multiple of 2,
    # and each epoch's first call records.
    assert g.steps["total"] == [1, 4, 7, 9, 12, 15]
    assert g.epochs["total"] == [1] * 3 + [2] * 3  # epochs count from 1
    for i in range(len(g.steps["total"])):
        layer_sq = sum(g.grad[n][i] ** 2 for n in g.layers)
        assert g.grad["total"][i] == pytest.approx(math.sqrt(layer_sq), rel=1e-4)
    assert all(r > 0 for r in g.ratio["head"])  # each recorded step's own update
    for key in ("grad_norm/total", "grad_norm/hidden", "grad_norm/head"):
        assert len(history.history[key]) == 2
    assert history.history["grad_norm/total"][0] == pytest.approx(
        np.mean(g.grad["total"][:3]), rel=1e-4)
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


# -- NanGuard: weights ------------------------------------------------------------------
def test_nan_guard_stops_on_non_finite_weights_with_a_finite_loss():
    guard, model = _guard()
    guard.on_train_begin()
    _good_epoch(guard, model, 0, 1.0)
    guard.on_epoch_begin(1)
    model.weights = [np.array([1.0, np.nan, 2.0])]
    model.optimizer.iterations = np.int64(20)
    guard.on_train_batch_end(9, {"loss": 1.5})
    assert not model.stop_training  # the loss is finite: the weights are checked at the end
    guard.on_epoch_end(1, {"loss": 1.5})
    assert model.stop_training
    np.testing.assert_array_equal(model.weights[0], np.full(3, 1.0))
    assert (guard.what, guard.epoch, guard.step, guard.restored_epoch) == ("weights", 2, None, 1)
    assert guard.message.startswith(
        "Epoch 2 (optimizer step 20): the weights of a weight are nan at the end of the "
        "epoch, although the training loss is finite (1.5); stopped training and restored "
        "the weights of epoch 1, the last with a finite loss and weights.")
    assert guard.stop_info() == {"what": "weights", "epoch": 2, "step": None, "value": "nan",
                                 "variable": "a weight", "restored_epoch": 1}


def test_nan_guard_on_a_model_whose_hidden_weights_overflow(tmp_path):
    """A ReLU maps NaN to 0: the loss stays finite while the hidden kernel is NaN."""
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(hidden))
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    x, y = _data()

    class Corrupt(keras.callbacks.Callback):  # what an overflowing update leaves behind
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 12:  # epoch 2, last batch
                kernel, bias = self.model.get_layer("hidden").get_weights()
                self.model.get_layer("hidden").set_weights([kernel * np.nan, bias])

    guard = NanGuard(log=None)
    initial = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=5, verbose=0, shuffle=False,
                        callbacks=[Corrupt(), guard])
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert (guard.what, guard.epoch, guard.restored_epoch) == ("weights", 2, 1)
    assert guard.variable == "hidden/kernel"
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert not np.array_equal(model.get_weights()[0], initial[0])  # epoch 1's weights
    assert "the weights of hidden/kernel are nan at the end of the epoch" in guard.message


# -- CompactProgbar: no "nan" for epochs without a logged step ----------------------------
def test_every_epoch_has_a_grad_norm_however_long_the_interval(capsys):
    model = _tiny(every=1000)  # 8 steps per epoch: each epoch's first step is recorded
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=2, shuffle=False,
                        callbacks=[GradientNormLogger(), CompactProgbar()])
    totals = history.history["grad_norm/total"]
    assert all(math.isfinite(t) for t in totals), totals
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "loss:" in ln]
    assert len(lines) == 3 and all("grad_norm/total: " in ln for ln in lines)


def test_compact_progbar_drops_the_nan_of_an_epoch_without_a_recorded_step():
    bar = CompactProgbar()
    model = _tiny(every=2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(*_data(8), batch_size=8, epochs=1, verbose=0)  # starts the recording
    bar.set_model(model)
    bar.on_epoch_begin(0)
    model.grad_stats.rows += 1  # a row recorded in this epoch: its value is shown, NaN or not
    assert bar._logged_a_step()
    bar.on_epoch_begin(1)  # nothing recorded since
    assert not bar._logged_a_step()


# -- dead units: only activations with a hard zero ----------------------------------------
def _activations_model():
    inputs = keras.Input((4,), name="x")
    layers = [
        keras.layers.Dense(4, activation="relu", name="dense_relu"),
        keras.layers.Dense(4, activation="relu6", name="dense_relu6"),
        keras.layers.Activation("relu", name="act_relu"),
        keras.layers.ReLU(name="relu_layer"),
        keras.layers.ReLU(negative_slope=0.1, name="relu_leaky"),
        keras.layers.LeakyReLU(name="leaky"),
        keras.layers.ELU(name="elu"),
        keras.layers.PReLU(name="prelu"),
        keras.layers.Activation("gelu", name="gelu"),
        keras.layers.Activation("silu", name="swish"),
        keras.layers.Dense(4, activation="elu", name="dense_elu"),
        keras.layers.Dense(4, activation="softplus", name="dense_softplus"),
    ]
    h = inputs
    for layer in layers:
        h = layer(h)
    shared = keras.layers.Dense(4, activation="relu", name="shared")
    h = shared(shared(h))
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, activation="relu", name="inner_relu")(
        inner_in), name="inner")
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(h)))


def test_only_relu_and_relu6_units_can_be_dead():
    names = [layer.name for layer in relu_family_layers(_activations_model())]
    assert names == ["dense_relu", "dense_relu6", "act_relu", "relu_layer"]


def test_dead_unit_monitor_on_leaky_and_smooth_activations_reports_nothing():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, name="pre", bias_initializer=keras.initializers.Constant(-5.0),
                           kernel_initializer="zeros")(inputs)
    for name, layer in (("leaky", keras.layers.LeakyReLU()), ("elu", keras.layers.ELU()),
                        ("gelu", keras.layers.Activation("gelu")),
                        ("swish", keras.layers.Activation("silu"))):
        model = keras.Model(inputs, keras.layers.Dense(2)(layer(h)))
        monitor = DeadUnitMonitor(_data()[0])
        monitor.set_model(model)
        monitor.on_train_begin()
        logs = {"loss": 1.0}
        monitor.on_epoch_end(0, logs)
        assert logs == {"loss": 1.0}, name  # all outputs < 0, yet nothing is "dead"


def test_layer_uses_counts_calls_from_the_public_config():
    from kflow.insight.dead_units import layer_uses

    uses = layer_uses(_activations_model())
    assert uses["shared"] == 2 and uses["dense_relu"] == 1 and uses["inner"] == 1
    sequential = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    assert layer_uses(sequential)["d"] == 1


def test_subclassed_models_have_no_probed_layers():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, activation="relu")

        def call(self, x):
            return self.dense(x)

    assert relu_family_layers(Subclassed()) == []
