"""`TrainingAugmentation`: Keras augmentation layers that run only when training.

Importing this module imports keras. Keras' random image layers
(`RandomFlip`, `RandomRotation`...) default to `training=True` when nobody
says otherwise, and `model.export()` calls the model without a `training`
argument: on their own they would keep augmenting in the exported SavedModel.
This wrapper defaults to `training=False`, so the exported inference graph
holds no augmentation op at all. Being identity at inference, it is left out
of what a run saves (`kflow.training.plain_model.to_plain_model`), so
`model.keras` opens with plain Keras.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

__all__ = ["TrainingAugmentation"]


@keras.saving.register_keras_serializable(package="kflow")
class TrainingAugmentation(keras.layers.Layer):
    """Applies augmentation layers in training and passes inputs through otherwise.

    Args:
        layers: The augmentation layers, applied in order. Their output must
            have the input's shape.
        **kwargs: Base layer keyword arguments (`name`, ...).

    Example:

    ```python
    aug = TrainingAugmentation([keras.layers.RandomRotation(0.05, seed=0)])
    aug(images)                 # unchanged
    aug(images, training=True)  # rotated
    ```
    """

    def __init__(self, layers: Sequence[keras.layers.Layer], **kwargs: Any):
        super().__init__(**kwargs)
        self.augmenters = list(layers)

    def build(self, input_shape: Any) -> None:
        shape = input_shape
        for layer in self.augmenters:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs: Any, training: bool | None = False) -> Any:
        if not training:
            return inputs
        x = inputs
        for layer in self.augmenters:
            x = layer(x, training=True)
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "layers": [
            keras.saving.serialize_keras_object(layer) for layer in self.augmenters]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainingAugmentation:
        config = dict(config)
        layers = [keras.saving.deserialize_keras_object(c) for c in config.pop("layers")]
        return cls(layers, **config)
