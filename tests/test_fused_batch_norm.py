"""FusedBatchNormalization computes what keras.layers.BatchNormalization computes."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from kflow.blocks.fused_batch_norm import FusedBatchNormalization  # noqa: E402


def _pair(shape, **kwargs):
    ref, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    ref.build(shape)
    fused.build(shape)
    rng = np.random.RandomState(1)
    for a, b in zip(ref.weights, fused.weights, strict=True):
        value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    return ref, fused


@pytest.mark.parametrize("shape", [(16, 6, 6, 5), (32, 7), (3, 2, 2, 1)])
@pytest.mark.parametrize("kwargs", [{}, {"center": False}, {"scale": False, "momentum": 0.9}])
def test_training_step_matches_keras(shape, kwargs):
    ref, fused = _pair(shape, **kwargs)
    x = tf.constant(np.random.RandomState(0).normal(2.0, 3.0, shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ref, y_fused = ref(x, training=True), fused(x, training=True)
        loss_ref, loss_fused = tf.reduce_sum(y_ref**3), tf.reduce_sum(y_fused**3)
    np.testing.assert_allclose(y_fused, y_ref, rtol=1e-5, atol=1e-5)
    # Moving statistics: Keras' momentum rule with the biased batch variance.
    for a, b in zip(ref.non_trainable_weights, fused.non_trainable_weights, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    grads_ref = tape.gradient(loss_ref, [x, *ref.trainable_weights])
    grads_fused = tape.gradient(loss_fused, [x, *fused.trainable_weights])
    for a, b in zip(grads_ref, grads_fused, strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-3, atol=1e-3 * float(np.abs(a).max()))


def test_inference_and_fallbacks_run_the_keras_layer():
    ref, fused = _pair((8, 3, 3, 4))
    x = np.random.RandomState(2).normal(size=(8, 3, 3, 4)).astype("float32")
    np.testing.assert_array_equal(fused(x, training=False), ref(x, training=False))
    # Rank 3 is not fused: the Keras code runs, training mode included.
    ref3, fused3 = _pair((8, 5, 4))
    x3 = x.reshape(8, 9, 4)[:, :5]
    np.testing.assert_allclose(fused3(x3, training=True), ref3(x3, training=True), atol=1e-6)
    assert not fused3._fusable(tf.constant(x3), None)
    assert fused._fusable(tf.constant(x), None)


def test_saves_and_reloads(tmp_path):
    inputs = keras.Input((4, 4, 2))
    outputs = FusedBatchNormalization(name="bn", momentum=0.8)(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.RandomState(3).normal(size=(5, 4, 4, 2)).astype("float32")
    model(x, training=True)  # moves the statistics
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(reloaded.get_layer("bn")) is FusedBatchNormalization
    assert reloaded.get_layer("bn").momentum == 0.8
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
