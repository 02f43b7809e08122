"""`FusedBatchNormalization`: Keras' BatchNormalization with TensorFlow's fused training kernel.

Keras 3 computes batch normalization from generic ops (moments, then
`(x - mean) * rsqrt(var + eps) * gamma + beta`): about ten kernels forward
and twenty backward per layer. TensorFlow has one fused kernel for each
direction (`FusedBatchNormV3` and its gradient, what `tf.keras` 2 used by
default). On the small convolutional recipes here that saves ~10 % of the
training step on a CPU (`benchmarks/bench_training_speed.py`).

Only the training-mode forward pass changes; the maths, the weights, the
moving-statistics update (Keras' momentum rule, biased batch variance) and
the saved config are those of `keras.layers.BatchNormalization`, and
inference runs Keras' own code, so exported models (SavedModel, TFLite) are
the same graph as with the Keras layer.
"""

from __future__ import annotations

import keras

__all__ = ["FusedBatchNormalization"]


@keras.saving.register_keras_serializable(package="kflow")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that trains with TensorFlow's fused kernel.

    The fused kernel is used in training mode on the TensorFlow backend for
    float32 inputs of rank 2 or 4 normalized over the last axis, without a
    mask, renormalization or synchronization; every other case (and
    inference) runs the Keras layer unchanged.

    Args:
        **kwargs: Those of `keras.layers.BatchNormalization` (`momentum`
            0.99, `epsilon` 1e-3, `center`, `scale`, initializers, ...).

    Example:

    ```python
    x = keras.layers.Conv2D(32, 3, use_bias=False)(inputs)
    x = FusedBatchNormalization(name="bn")(x)
    ```
    """

    def _fusable(self, inputs, mask) -> bool:
        axis = self.axis if isinstance(self.axis, int) else None
        rank = len(inputs.shape)
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and rank in (2, 4) and axis in (-1, rank - 1)
                and inputs.dtype == "float32" and self.moving_mean.dtype == "float32")

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        gamma = self.gamma.value if self.scale else tf.ones([channels], tf.float32)
        beta = self.beta.value if self.center else tf.zeros([channels], tf.float32)
        empty = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
            is_training=True, data_format="NHWC")
        # The kernel returns the unbiased (n - 1) variance; Keras averages the biased one.
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        if len(inputs.shape) != 4:
            y = tf.reshape(y, tf.shape(inputs))
        return tf.cast(y, self.compute_dtype)
