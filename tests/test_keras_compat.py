"""One test per private Keras name kflow touches (`kflow/_keras_compat.py`).

Each test fails with a message naming the private that changed, so that a
Keras upgrade says at once what to fix.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kflow import _keras_compat as compat


def _fit_once(optimizer):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
    model.compile(optimizer, "mse")
    return model


def test_keras_version_is_one_the_touches_were_checked_against():
    assert keras.__version__ in compat.CHECKED_KERAS_VERSIONS, (
        f"Keras {keras.__version__} is not in CHECKED_KERAS_VERSIONS "
        f"{compat.CHECKED_KERAS_VERSIONS}: run tests/test_keras_compat.py, then add it.")


# -- Gradient statistics (kflow.insight.insight_model) -----------------------------------
def test_optimizer_var_key_maps_keras_variables_and_backend_variables_alike():
    optimizer = keras.optimizers.Adam()
    key = compat.optimizer_var_key(optimizer)
    assert key is not None, (
        "the TensorFlow optimizer has no private `_var_key` any more "
        f"(Keras {keras.__version__}); InsightModel cannot match gradients to layers")
    model = _fit_once(optimizer)
    variable = model.trainable_variables[0]
    assert key(variable) == key(variable.value), (
        "the private `optimizer._var_key` no longer gives a Keras variable and its backend "
        f"tf.Variable the same key (Keras {keras.__version__})")
    wrapped = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    assert compat.optimizer_var_key(wrapped) is not None


def test_all_reduce_sum_gradients_wrapper_sees_the_applied_gradients():
    optimizer = keras.optimizers.SGD(0.1)
    seen: list = []
    assert compat.wrap_all_reduce_sum_gradients(optimizer, seen.append), (
        "the TensorFlow optimizer has no private `_all_reduce_sum_gradients` any more "
        f"(Keras {keras.__version__}); InsightModel cannot see the applied gradients")
    model = _fit_once(optimizer)
    x = np.ones((4, 3), "float32")
    y = np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert seen, (
        "`optimizer._all_reduce_sum_gradients` is no longer called by the update step "
        f"(Keras {keras.__version__}); gradient norms would silently stop being recorded")
    pairs = seen[0]
    key = compat.optimizer_var_key(optimizer)
    assert [key(v) for _, v in pairs] == [key(v) for v in model.trainable_variables], (
        "`_all_reduce_sum_gradients` no longer receives (gradient, variable) pairs of the "
        f"model's trainable variables (Keras {keras.__version__})")
    # Wrapping again replaces the callback instead of stacking a second wrapper.
    again: list = []
    count = len(seen)
    compat.wrap_all_reduce_sum_gradients(optimizer, again.append)
    model.make_train_function(force=True)  # the hook runs when the step is traced
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert again and len(seen) == count


def test_wrapping_an_optimizer_without_the_private_reports_false():
    class NoPrivates:
        pass

    assert compat.wrap_all_reduce_sum_gradients(NoPrivates(), print) is False
    assert compat.optimizer_var_key(NoPrivates()) is None


def test_the_error_names_the_private_and_the_keras_version():
    error = compat._changed("optimizer._var_key", "gone")
    assert "optimizer._var_key" in str(error) and keras.__version__ in str(error)
    with pytest.raises(compat.KerasCompatError):
        raise error


# -- Exact resume (kflow.training.callbacks.backup) --------------------------------------
def test_set_initial_epoch_makes_fit_start_there():
    class StartAt(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            compat.set_initial_epoch(self.model, 3)

        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    seen: list[int] = []
    model = _fit_once("sgd")
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=5, verbose=0, callbacks=[StartAt()])
    assert seen == [3, 4], (
        f"fit() no longer starts at the private `Model._initial_epoch` set in on_train_begin "
        f"(Keras {keras.__version__}); ResumableBackup cannot resume")
    compat.set_initial_epoch(model, None)
    seen.clear()
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=2, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(
                  on_epoch_begin=lambda epoch, logs=None: seen.append(epoch))])
    assert seen == [0, 1]


def test_global_seed_generator_is_the_one_unseeded_random_ops_advance():
    generator = compat.global_seed_generator(create=True)
    assert isinstance(generator, keras.random.SeedGenerator), (
        f"Keras {keras.__version__} has no global SeedGenerator under the private name")
    assert compat.global_seed_generator() is generator
    before = np.array(generator.state.numpy())
    keras.random.uniform((2,))  # no seed: draws from the global generator
    assert not np.array_equal(before, generator.state.numpy()), (
        "unseeded keras.random calls no longer advance the private global SeedGenerator "
        f"(Keras {keras.__version__}); ResumableBackup does not save what they use")


def test_swap_ema_weights_flag_tells_whether_the_model_holds_the_average():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5),
                  loss="mse")
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2, verbose=0, callbacks=[swap])
    assert compat.ema_weights_in_model(swap) is True, (
        f"SwapEMAWeights (Keras {keras.__version__}) no longer records in the private "
        "`_ema_weights_in_model` that it swapped the EMA weights in at epoch end; "
        "kflow.training.features.EmaWeights cannot resume")
    assert compat.ema_weights_in_model(swap, False) is False


# -- Multi-worker and multi-step training (kflow.training.distributed) --------------------
def test_multi_worker_reduce_is_installed_once_and_other_strategies_pass_through():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    compat.install_multi_worker_reduce()
    installed = tf_trainer.reduce_per_replica
    assert getattr(installed, "_kflow_multi_worker", False), (
        "keras.src.backend.tensorflow.trainer.reduce_per_replica could not be replaced "
        f"(Keras {keras.__version__}); multi-worker fit fails on scalar logs "
        "(keras-team/keras#20585)")
    compat.install_multi_worker_reduce()
    assert tf_trainer.reduce_per_replica is installed  # no double wrapping
    model = _fit_once("sgd")
    history = model.fit(np.ones((8, 3), "float32"), np.zeros((8, 2), "float32"), epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_local_symbolic_build_lets_fit_run_under_a_strategy():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _fit_once("sgd")
        model.compile("sgd", "mse", metrics=["mae"])
    compat.local_symbolic_build(model)
    ds = tf.data.Dataset.from_tensor_slices(
        (np.ones((8, 3), "float32"), np.zeros((8, 2), "float32"))).batch(4)
    history = model.fit(ds, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "mae"}


_MULTI_STEP = """
import json, tensorflow as tf, keras, numpy as np
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kflow import _keras_compat as compat
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
x = np.random.RandomState(0).rand(256, 8).astype("float32"); y = (x.sum(1) > 4).astype("int32")
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
out = {}
for name, spe, inline in (("one", 1, False), ("plain", 4, False), ("inline", 4, True)):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((8,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        model.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=spe)
    if inline:
        compat.inline_replica_steps(model)
    try:
        out[name] = model.fit(ds, epochs=2, verbose=0).history["loss"]
    except Exception as e:
        out[name] = str(e)
print("RESULT" + json.dumps(out))
"""


def test_multi_step_with_two_replicas_needs_the_inline_step():
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-c", _MULTI_STEP], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(ln for ln in proc.stdout.splitlines()
                          if ln.startswith("RESULT"))[len("RESULT"):])
    assert isinstance(out["plain"], str) and "must feed a value for placeholder" in out["plain"], (
        f"Keras {keras.__version__} runs steps_per_execution=4 on 2 replicas without kflow's "
        "inline step: upstream fixed it; remove `inline_replica_steps` from "
        "kflow/_keras_compat.py and kflow.training.distributed.adapt_model")
    assert out["inline"] == pytest.approx(out["one"], rel=1e-5), (
        "`inline_replica_steps` no longer gives the numbers of one step per call "
        f"(Keras {keras.__version__})")


def test_the_coordination_service_private_is_there():
    import inspect

    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    configure = getattr(context.context(), "configure_coordination_service", None)
    assert configure is not None and hasattr(multi_worker_util, "coordination_leader"), (
        "TensorFlow's private context().configure_coordination_service moved; kflow cannot "
        "set the multi-worker peer timeouts")
    params = inspect.signature(configure).parameters
    for name in ("cluster_register_timeout_in_ms", "heartbeat_timeout_in_ms",
                 "coordinated_jobs", "service_leader"):
        assert name in params, f"configure_coordination_service lost its `{name}` argument"


def test_keras_train_function_holds_its_one_step_function():
    model = _fit_once("sgd")
    model.make_train_function()
    step = compat.keras_train_step_function(model.train_function)
    assert step is not None, (
        "Keras' train function no longer has a closure variable `one_step_on_data` "
        f"(Keras {keras.__version__}); InsightModel's recording executions trace the train "
        "step a second time (slower start-up, same results)")
    import tensorflow as tf

    x, y = tf.ones((4, 3)), tf.zeros((4, 2))
    logs = step((x, y))
    assert set(logs) == {"loss"} and np.isfinite(float(logs["loss"]))
    assert compat.keras_train_step_function(lambda it: it) is None
    compiled = compat.keras_multi_step_function(model.train_function)
    assert compiled is not None and compiled.experimental_get_tracing_count() >= 0, (
        "Keras' train function no longer has a compiled closure variable "
        f"`multi_step_on_iterator` (Keras {keras.__version__}); the test that each train "
        "function is traced once cannot read its tracing count")
