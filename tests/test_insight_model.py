"""`InsightModel`: the recorded norms are the applied gradients', at any
`steps_per_execution`, under MirroredStrategy, and the model round-trips."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from kflow.insight.insight_model import InsightModel, as_insight_model, layer_groups
from tests.conftest import REPO


def _model(every=1, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,), name="x")
    h = keras.layers.Dense(7, activation="tanh", name="hidden")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(h)
    return InsightModel(inputs, outputs, grad_log_every=every, name="tiny")


def _data(n=32):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, rng.integers(0, 3, n)


def _rows(model):
    data = model.grad_stats.read()
    order = np.argsort(data["steps"])
    keep = order[data["steps"][order] > 0]
    return {k: v[keep] for k, v in data.items()}


def test_layer_groups_follow_variable_paths_in_layer_order():
    groups, index = layer_groups(_model())
    assert [(g.name, g.kind, g.params) for g in groups] == [
        ("hidden", "Dense", 5 * 7 + 7), ("bn", "BatchNormalization", 14),
        ("head", "Dense", 7 * 3 + 3)]
    assert index == [0, 0, 1, 1, 2, 2]


def test_recorded_norms_are_those_of_the_applied_gradients():
    model = _model(every=1)
    lr = 0.1
    model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
    x, y = _data()
    # The first step's gradient, computed by hand on the same full batch.
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, model.trainable_variables)
    initial = [v.numpy() for v in model.trainable_variables]
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)

    rows = _rows(model)
    assert rows["steps"].tolist() == [1.0]
    sq = [float(tf.reduce_sum(g**2)) for g in grads]
    expected = [np.sqrt(sq[0] + sq[1]), np.sqrt(sq[2] + sq[3]), np.sqrt(sq[4] + sq[5]),
                np.sqrt(sum(sq))]
    np.testing.assert_allclose(rows["grad"][0], expected, rtol=1e-4)
    after = [v.numpy() for v in model.trainable_variables]
    weight = [np.sqrt(np.sum(after[i] ** 2) + np.sum(after[i + 1] ** 2)) for i in (0, 2, 4)]
    np.testing.assert_allclose(rows["weight"][0][:3], weight, rtol=1e-5)
    # The update ratio of the step: SGD moves each layer by lr * ||g||.
    before = [np.sqrt(np.sum(initial[i] ** 2) + np.sum(initial[i + 1] ** 2)) for i in (0, 2, 4)]
    np.testing.assert_allclose(rows["ratio"][0][:3], lr * np.asarray(expected[:3]) / before,
                               rtol=1e-4)


def test_update_ratio_of_sgd_is_lr_times_grad_over_weight():
    model = _model(every=1)
    lr = 0.05
    model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    rows = _rows(model)
    assert rows["steps"].tolist() == [1, 2, 3, 4]
    # SGD: ||w_t - w_(t-1)|| = lr * ||g_t||; the ratio divides by ||w_(t-1)||.
    for t in range(1, 4):  # (step 0's ratio: the test above)
        np.testing.assert_allclose(
            rows["ratio"][t], lr * rows["grad"][t] / rows["weight"][t - 1], rtol=2e-3)


# A call of the train function records its first step when the step has reached
# the next multiple of `every`: 16 steps, calls starting at 0, spe, 2 spe, ...
@pytest.mark.parametrize("spe, every, recorded", [
    (1, 3, [1, 4, 7, 10, 13, 16]), (4, 1, [1, 5, 9, 13]), (5, 2, [1, 6, 11, 16]),
    (16, 3, [1]), (2, 4, [1, 5, 9, 13])])
def test_recorded_steps_with_steps_per_execution(spe, every, recorded):
    model = _model(every=every)
    model.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=spe)
    x, y = _data(64)
    steps = []

    class Reader(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            steps.extend(_rows(self.model)["steps"].tolist())

    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[Reader()])
    assert sorted(set(steps)) == recorded


@pytest.mark.parametrize("every", [0, 4])
def test_each_train_function_is_traced_once(every):
    # Keras (without an explicit strategy) creates the optimizer's slots while the
    # train function is traced, and a tf.function that creates variables is traced
    # twice; the insight model builds them first.
    model = _model(every=every)
    model.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=2)
    x, y = _data(32)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert model.optimizer.built
    function = model.train_function
    if every:  # the recording execution (steps 0, 4, 8, 12), Keras' own (2, 6, 10, 14)
        assert function.recording.experimental_get_tracing_count() == 1
        function = function.keras_function
    from kflow._keras_compat import keras_multi_step_function

    assert keras_multi_step_function(function).experimental_get_tracing_count() == 1


def test_off_records_nothing_and_subclassed_models_stay_as_they_are():
    model = _model(every=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = _data()
    model.fit(x, y, epochs=1, verbose=0)
    assert model.grad_stats is None

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(1)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    assert as_insight_model(sub, 5) is sub
    with pytest.raises(ValueError, match=r"`grad_log_every` must be an int >= 0 \(0: off\)\. "
                                         r"Got -1 instead\."):
        _model(every=-1)


def test_statistics_are_not_weights_and_the_model_round_trips(tmp_path):
    model = _model(every=2)
    plain_weights = len(model.weights)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    model.fit(x, y, epochs=1, verbose=0)
    assert model.grad_stats is not None
    assert len(model.weights) == plain_weights
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, InsightModel) and reloaded.grad_log_every == 2
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    reloaded.fit(x, y, epochs=1, verbose=0)  # and trains on, recording
    assert reloaded.grad_stats is not None


_FRESH = textwrap.dedent("""
    import sys, numpy as np, kflow
    run = kflow.load_run(sys.argv[1])
    print(type(run.model).__name__,
          run.model.predict(np.zeros((1, 64), "float32"), verbose=0).shape)
""")


@pytest.mark.slow
def test_model_keras_reloads_in_a_fresh_process(tmp_path):
    import kflow

    run = kflow.train("digits-mlp", epochs=1, run_dir=tmp_path / "r", verbose=0,
                      set_args=["grad_log_every=4"])
    assert isinstance(run.model, InsightModel)
    out = subprocess.run([sys.executable, "-c", _FRESH, str(run.run_dir)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # The run saved the plain functional model (the InsightModel is training-time only).
    assert out.stdout.split()[-3:] == ["Functional", "(1,", "10)"]


_MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kflow.run import read_grad_norms
    from kflow.training.engine import train
    out = {}
    for strategy in ("default", "mirrored"):
        run = train("digits-mlp", epochs=2, run_dir=sys.argv[1] + "/" + strategy,
                    strategy=strategy, verbose=0, seed=0,
                    set_args=["dropout=0.0", "early_stopping=false", "batch_size=64",
                              "grad_log_every=5"])
        g = read_grad_norms(run.run_dir)
        out[strategy] = {"steps": g.steps["total"], "total": g.grad["total"],
                         "history": run.history["grad_norm/total"]}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.multidevice
def test_mirrored_strategy_logs_the_norms_of_the_all_reduced_gradients(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    default, mirrored = res["default"], res["mirrored"]
    assert mirrored["steps"] == default["steps"] == list(range(1, 41, 5))
    # Each replica computes the gradient of its half of the batch with the loss scaled by
    # 1/2, so a replica-local norm is about half of one device's on the whole batch. The
    # logged norm is that of the all-reduced (summed) gradient: the same scale as one
    # device's. (The replicas' batches are not the single-device batches, so the values
    # agree only roughly.)
    ratio = mirrored["total"][0] / default["total"][0]
    assert 0.8 < ratio < 1.25, ratio
    for a, b in zip(default["history"], mirrored["history"], strict=True):
        assert b == pytest.approx(a, rel=0.25)
