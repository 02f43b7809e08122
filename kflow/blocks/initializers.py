"""Weight initializers by name.

The registry is importable without keras; keras is imported when an
initializer is built.

Variance rules (`fan_in`, `fan_out` as in `keras.initializers`):

| name             | distribution                 | std / limit                      |
|------------------|------------------------------|----------------------------------|
| `uniform_fan_in` | U(-l, l)                     | l = 1/sqrt(fan_in)               |
| `glorot_normal`  | truncated N(0, s)            | std = sqrt(2/(fan_in+fan_out))   |
| `glorot_uniform` | U(-l, l)                     | l = sqrt(6/(fan_in+fan_out))     |
| `he_normal`      | truncated N(0, s)            | std = sqrt(2/fan_in)             |
| `he_uniform`     | U(-l, l)                     | l = sqrt(6/fan_in)               |
| `lecun_normal`   | truncated N(0, s)            | std = sqrt(1/fan_in)             |
| `lecun_uniform`  | U(-l, l)                     | l = sqrt(3/fan_in)               |

For the truncated normals, Keras scales the pre-truncation stddev by
`1/0.8796` so that the std of the drawn values is the one in the table.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from kflow._registry import Registry
from kflow.errors import ConfigError, KflowError

if TYPE_CHECKING:
    import keras

__all__ = ["INITIALIZERS", "get_initializer", "register_custom_objects"]

INITIALIZERS = Registry("initializer")


def register_custom_objects() -> dict[str, Any]:
    """Registers kflow's Keras classes so that `load_model()` can find them.

    Call it before `keras.models.load_model()` in a process that has not
    built a kflow model yet. Importing keras is the cost.

    Returns:
        The `{registered_name: class}` dict, usable as `custom_objects=`.
    """
    from kflow.blocks.keras_objects import UniformFanIn
    from kflow.data.impute import Impute
    from kflow.data.training_augmentation import TrainingAugmentation
    from kflow.insight.insight_model import InsightModel

    return {"kflow>UniformFanIn": UniformFanIn, "kflow>Impute": Impute,
            "kflow>TrainingAugmentation": TrainingAugmentation,
            "kflow>InsightModel": InsightModel}


@INITIALIZERS.register("uniform_fan_in", doc="U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (lecture's rule).")
def _uniform_fan_in(seed: int | None = None):
    from kflow.blocks.keras_objects import UniformFanIn

    return UniformFanIn(seed=seed)


def _register_keras(
    name: str,
    class_name: str,
    doc: str,
    aliases: tuple[str, ...] = (),
    random: bool = True,
) -> None:
    """Registers a Keras built-in initializer class by its name."""

    def factory(seed: int | None = None, **kwargs: Any):
        import keras

        cls = getattr(keras.initializers, class_name)
        if random:
            kwargs["seed"] = seed
        return cls(**kwargs)

    factory.__name__ = f"_{name}"
    INITIALIZERS.register(name, factory, aliases=aliases, doc=doc)


_register_keras(
    "glorot_normal",
    "GlorotNormal",
    "Truncated normal, std sqrt(2/(fan_in+fan_out)) (Xavier).",
    aliases=("xavier_normal", "xavier"),
)
_register_keras(
    "glorot_uniform",
    "GlorotUniform",
    "Uniform, limit sqrt(6/(fan_in+fan_out)) (Xavier).",
    aliases=("xavier_uniform",),
)
_register_keras(
    "he_normal",
    "HeNormal",
    "Truncated normal, std sqrt(2/fan_in) (Kaiming); for ReLU-like units.",
    aliases=("kaiming_normal",),
)
_register_keras(
    "he_uniform",
    "HeUniform",
    "Uniform, limit sqrt(6/fan_in) (Kaiming); for ReLU-like units.",
    aliases=("kaiming_uniform",),
)
_register_keras("lecun_normal", "LecunNormal", "Truncated normal, std sqrt(1/fan_in); for SELU.")
_register_keras("lecun_uniform", "LecunUniform", "Uniform, limit sqrt(3/fan_in).")
_register_keras("zeros", "Zeros", "All zeros.", random=False)
_register_keras("ones", "Ones", "All ones.", random=False)
_register_keras("constant", "Constant", "A constant `value` (defaults to 0).", random=False)
_register_keras("random_normal", "RandomNormal", "N(mean, stddev); defaults mean=0, stddev=0.05.")
_register_keras(
    "random_uniform",
    "RandomUniform",
    "U(minval, maxval); defaults minval=-0.05, maxval=0.05.",
)
_register_keras(
    "truncated_normal",
    "TruncatedNormal",
    "Normal cut at 2 stddev; defaults mean=0, stddev=0.05.",
)
_register_keras("orthogonal", "Orthogonal", "A random orthogonal matrix times `gain`.")
_register_keras(
    "variance_scaling",
    "VarianceScaling",
    "Generic rule: `scale`, `mode` (fan_in/fan_out/fan_avg), `distribution`.",
)
_register_keras(
    "identity", "Identity", "Identity matrix times `gain` (2D kernels only).", random=False
)


def get_initializer(
    identifier: str | dict[str, Any] | keras.initializers.Initializer | None,
    seed: int | None = None,
) -> keras.initializers.Initializer | None:
    """Returns a Keras initializer from a name, a dict or an initializer.

    Example:

    >>> init = get_initializer("he_normal", seed=1)
    >>> init = get_initializer({"name": "random_normal", "stddev": 0.01})

    Args:
        identifier: A registered name or alias (`"xavier"`), a dict
            `{"name": NAME, **kwargs}` whose kwargs go to the Keras class, an
            initializer object (returned as is), or `None` (returns `None`).
        seed: Seed of random initializers; ignored by deterministic ones and
            overridden by a `"seed"` key of a dict identifier. With an integer
            seed an initializer gives the same values at every call, so give
            each layer its own seed. Defaults to `None` (random).

    Returns:
        A Keras initializer, or `None` when `identifier` is `None`.

    Raises:
        ConfigError: For an unknown name (listing the valid ones) or invalid
            arguments.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ConfigError(f"The seed must be an int or None. Got {seed!r} instead.")
    kwargs: dict[str, Any] = {}
    seed = None if seed is None else int(seed)
    if seed is not None and not (isinstance(identifier, dict) and "seed" in identifier):
        kwargs["seed"] = seed
    try:
        return INITIALIZERS.get(identifier, **kwargs)
    except KflowError:
        raise
    except ValueError as exc:
        raise ConfigError(f"Invalid arguments for initializer {identifier!r}: {exc}") from exc
