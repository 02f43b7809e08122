"""Keras classes defined by kflow, and their built-in equivalents for saved models.

Importing this module imports keras. The rest of `kflow.blocks` imports it only
when one of these classes is needed, so that names can be validated cheaply.

A run's `model.keras` holds none of these classes: `builtin_config` replaces
them in layer configs with the built-in Keras object that behaves the same
(see `kflow.training.plain_model`), so plain `keras.saving.load_model` opens
it. They stay registered (package "kflow") for models a user saves directly.
"""

from __future__ import annotations

import math
import random
from typing import Any

import keras

__all__ = ["UniformFanIn", "builtin_config"]


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

    def as_builtin(self) -> keras.initializers.VarianceScaling:
        """The built-in initializer that draws from the same distribution.

        `VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")`
        draws from U(-l, l) with l = sqrt(3 * scale / fan_in) = 1/sqrt(fan_in),
        with Keras' `fan_in` (the same as `UniformFanIn.fan_in`). The drawn
        values differ (another random stream); the distribution is the same.
        """
        seed = self._init_seed if isinstance(self._init_seed, int) else None
        return keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed)

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


#: Registered names of kflow's Keras classes -> their class.
_CLASSES = {"kflow>UniformFanIn": UniformFanIn}


def builtin_config(config: Any) -> Any:
    """A layer config with kflow's serialized objects replaced by built-in ones.

    Walks the (nested) config and replaces each serialized kflow object
    (`"registered_name": "kflow>..."`) that has a built-in equivalent
    (`as_builtin()`) with that object's serialization; the rest is returned
    unchanged (a new structure; `config` is not modified).

    Args:
        config: A layer's `get_config()`.

    Example:

    ```python
    layer = keras.layers.Dense(4, kernel_initializer=UniformFanIn(seed=0))
    builtin_config(layer.get_config())["kernel_initializer"]["class_name"]
    # 'VarianceScaling'
    ```
    """
    if isinstance(config, dict):
        cls = _CLASSES.get(config.get("registered_name"))
        if cls is not None and isinstance(config.get("config"), dict):
            obj = cls.from_config(config["config"])
            return keras.saving.serialize_keras_object(obj.as_builtin())
        return {k: builtin_config(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return type(config)(builtin_config(v) for v in config)
    return config
