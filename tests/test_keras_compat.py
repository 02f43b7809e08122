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
