"""Weight regularizers by name.

The penalty added to the loss for a kernel `w` is:

| name    | penalty                                   |
|---------|-------------------------------------------|
| `none`  | nothing                                   |
| `l1`    | strength * sum(abs(w))                    |
| `l2`    | strength * sum(w ** 2)                    |
| `l1_l2` | strength * sum(abs(w)) + strength * sum(w ** 2) |

Note that Keras' L2 has no factor 1/2: `l2` with strength `s` is the weight
decay `2 * s * w` on the gradient.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from kflow._registry import Registry
from kflow.errors import ConfigError

if TYPE_CHECKING:
    import keras

__all__ = ["REGULARIZERS", "get_regularizer", "validate_strength"]

REGULARIZERS = Registry("regularizer")


def validate_strength(strength: Any, what: str = "regularizer strength") -> float:
    """Returns `strength` as a float, or raises ConfigError if it is not >= 0.

    Args:
        strength: The value to check.
        what: How to name it in the message. Defaults to
            `"regularizer strength"`.
    """
    if (
        isinstance(strength, bool)
        or not isinstance(strength, numbers.Real)
        or not math.isfinite(strength)
        or strength < 0
    ):
        raise ConfigError(f"The {what} must be a float >= 0. Got {strength!r} instead.")
    return float(strength)


@REGULARIZERS.register("none", doc="No penalty.")
def _none(strength: float = 0.0) -> None:
    return None


@REGULARIZERS.register("l1", doc="strength * sum(|w|) (lasso; sparse weights).")
def _l1(strength: float = 1e-4):
    import keras

    return keras.regularizers.L1(l1=strength)


@REGULARIZERS.register("l2", doc="strength * sum(w^2) (ridge; weight decay).")
def _l2(strength: float = 1e-4):
    import keras

    return keras.regularizers.L2(l2=strength)


@REGULARIZERS.register(
    "l1_l2",
    aliases=("elastic_net",),
    doc="l1 * sum(|w|) + l2 * sum(w^2); both default to strength.",
)
def _l1_l2(strength: float = 1e-4, l1: float | None = None, l2: float | None = None):
    import keras

    l1 = strength if l1 is None else validate_strength(l1, "l1 strength")
    l2 = strength if l2 is None else validate_strength(l2, "l2 strength")
    return keras.regularizers.L1L2(l1=l1, l2=l2)


def get_regularizer(
    name: str | dict[str, Any] | keras.regularizers.Regularizer | None,
    strength: float = 1e-4,
) -> keras.regularizers.Regularizer | None:
    """Returns a Keras regularizer, or `None` for `"none"`.

    Example:

    >>> reg = get_regularizer("l2", strength=1e-3)
    >>> layer = keras.layers.Dense(3, kernel_regularizer=reg)

    Args:
        name: A registered name or alias (`"elastic_net"`), a dict
            `{"name": NAME, "strength": ...}` (`l1_l2` also takes `l1` and
            `l2` keys), a regularizer object (returned as is), or `None`.
        strength: The penalty factor, overridden by a `"strength"` key of a
            dict. Defaults to `1e-4`.

    Returns:
        A Keras regularizer, or `None`.

    Raises:
        ConfigError: For an unknown name or a negative strength.
    """
    if isinstance(name, dict) and "strength" in name:
        name = dict(name)
        strength = name.pop("strength")
    strength = validate_strength(strength)
    return REGULARIZERS.get(name, strength=strength)
