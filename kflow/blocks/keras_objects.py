"""Keras classes defined by kflow, registered for `model.keras` reloading.

Importing this module imports keras. The rest of `kflow.blocks` imports it only
when one of these classes is needed, so that names can be validated cheaply.

Before `keras.models.load_model()` in a process that has not built a model
with them, call `kflow.blocks.register_custom_objects()` (or import this
module) so that Keras can find the classes by their registered names.
"""

from __future__ import annotations

import math
import random

import keras

__all__ = ["UniformFanIn"]


@keras.saving.register_keras_serializable(package="kflow")
class UniformFanIn(keras.initializers.Initializer):
    """Draws weights from U(-1/sqrt(fan_in), +1/sqrt(fan_in)).

    This is the lecture's rule (and PyTorch's default for `Linear`/`Conv`
    layers): the limit only depends on the number of inputs of a unit, so the
    standard deviation is `1 / sqrt(3 * fan_in)`.

    `fan_in` is `prod(shape[:-1])`: the input size of a `Dense` kernel
    `(fan_in, units)` and `kernel_h * kernel_w * in_channels` of a `Conv2D`
    kernel. For a 1D shape (a bias) it is `shape[0]`.

    Example:

    >>> init = UniformFanIn(seed=0)
    >>> layer = keras.layers.Dense(3, kernel_initializer=init)

    Args:
        seed: A Python integer (deterministic: the same values at every call)
            or a `keras.random.SeedGenerator`. Defaults to `None`, which picks
            a random seed when the initializer is created.
    """

    def __init__(self, seed: int | keras.random.SeedGenerator | None = None):
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, keras.random.SeedGenerator))
        ):
            raise ValueError(
                "`seed` must be an integer, a keras.random.SeedGenerator or "
                f"None. Got {seed!r} instead."
            )
        self._init_seed = seed
        self.seed = random.randint(1, 10**9) if seed is None else seed

    @staticmethod
    def fan_in(shape: tuple[int, ...]) -> int:
        """The number of inputs of one unit for a weight of this shape."""
        shape = tuple(int(d) for d in shape)
        if not shape:
            return 1
        if len(shape) == 1:
            return max(1, shape[0])
        return max(1, math.prod(shape[:-1]))

    def limit(self, shape: tuple[int, ...]) -> float:
        """The bound `1 / sqrt(fan_in)` used for a weight of this shape."""
        return 1.0 / math.sqrt(self.fan_in(shape))

    def __call__(self, shape, dtype=None):
        limit = self.limit(shape)
        return keras.random.uniform(shape, minval=-limit, maxval=limit, dtype=dtype, seed=self.seed)

    def get_config(self) -> dict:
        seed = self._init_seed
        if isinstance(seed, keras.random.SeedGenerator):
            seed = keras.saving.serialize_keras_object(seed)
        return {"seed": seed}

    @classmethod
    def from_config(cls, config: dict) -> UniformFanIn:
        config = dict(config)
        if isinstance(config.get("seed"), dict):
            config["seed"] = keras.saving.deserialize_keras_object(config["seed"])
        return cls(**config)
