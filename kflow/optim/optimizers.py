"""Optimizers by name, with checked hyperparameters.

One update of a variable `w` with gradient `g` and learning rate `lr`
(Keras conventions, `eps = 1e-7`):

| name      | update                                                       |
|-----------|--------------------------------------------------------------|
| `sgd`     | `m = momentum * m - lr * g; w += m` (`w -= lr * g` if no momentum);
|           | nesterov: `w += momentum * m - lr * g`                       |
| `adagrad` | `a += g^2; w -= lr * g / sqrt(a + eps)` (a starts at 0.1)    |
| `rmsprop` | `v = 0.9 v + 0.1 g^2; w -= lr * g / sqrt(v + eps)`           |
| `adam`    | bias-corrected moments, betas 0.9 / 0.999                    |
| `adamw`   | adam, then decoupled decay `w -= lr * weight_decay * w`      |
| `nadam`   | adam with Nesterov momentum                                  |

`weight_decay` is decoupled (applied to the weights before the update) for
every optimizer; `adamw` defaults it to 0.004 (Keras' default).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from kflow._registry import Registry
from kflow.errors import ConfigError

if TYPE_CHECKING:
    import keras

__all__ = ["OPTIMIZERS", "build_optimizer", "MOMENTUM_OPTIMIZERS", "NESTEROV_OPTIMIZERS"]


def _is_optimizer(obj: Any) -> bool:
    return hasattr(obj, "apply_gradients")


OPTIMIZERS = Registry("optimizer", passthrough=_is_optimizer)

#: Optimizers taking a `momentum` argument.
MOMENTUM_OPTIMIZERS = frozenset({"sgd", "rmsprop"})
#: Optimizers taking `nesterov=True`.
NESTEROV_OPTIMIZERS = frozenset({"sgd"})
ADAMW_DEFAULT_WEIGHT_DECAY = 0.004


@OPTIMIZERS.register("sgd", doc="Stochastic gradient descent, optional (Nesterov) momentum.")
def _sgd(learning_rate, momentum: float = 0.0, nesterov: bool = False, **common):
    import keras

    return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov, **common)


@OPTIMIZERS.register("adagrad", doc="Per-weight rate shrinking with the sum of squared gradients.")
def _adagrad(learning_rate, **common):
    import keras

    return keras.optimizers.Adagrad(learning_rate, **common)


@OPTIMIZERS.register("rmsprop", doc="Per-weight rate from a moving average of g^2.")
def _rmsprop(learning_rate, momentum: float = 0.0, **common):
    import keras

    return keras.optimizers.RMSprop(learning_rate, momentum=momentum, **common)


@OPTIMIZERS.register("adam", doc="Adaptive moments (betas 0.9, 0.999).")
def _adam(learning_rate, **common):
    import keras

    return keras.optimizers.Adam(learning_rate, **common)


@OPTIMIZERS.register("adamw", doc="Adam with decoupled weight decay (0.004 by default).")
def _adamw(learning_rate, weight_decay: float | None = None, **common):
    import keras

    if weight_decay is None:
        weight_decay = ADAMW_DEFAULT_WEIGHT_DECAY
    return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **common)


@OPTIMIZERS.register("nadam", doc="Adam with Nesterov momentum.")
def _nadam(learning_rate, **common):
    import keras

    return keras.optimizers.Nadam(learning_rate, **common)


def _check_float(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool,
    high_open: bool = True,
) -> float:
    bad = (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (value <= low if low_open else value < low)
        or (value >= high if high_open else value > high)
    )
    if bad:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(
            f"'{name}' must be a float in the range {left}{low}, {high}{right}. "
            f"Got {value!r} instead."
        )
    return float(value)


def _check_learning_rate(learning_rate: Any) -> Any:
    import keras

    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return learning_rate
    if callable(learning_rate) and not isinstance(learning_rate, numbers.Real):
        return learning_rate
    return _check_float("learning_rate", learning_rate, 0.0, low_open=True)


def build_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    ema: bool = False,
    ema_momentum: float = 0.99,
    grad_accumulation: int = 1,
) -> keras.optimizers.Optimizer:
    """Builds a Keras optimizer, rejecting arguments it would ignore.

    Example:

    >>> opt = build_optimizer("sgd", 0.01, momentum=0.9, nesterov=True)
    >>> schedule = build_schedule("cosine", 1e-3, steps_per_epoch=100, epochs=10)
    >>> opt = build_optimizer("adamw", schedule, weight_decay=1e-4,
    ...                       global_clipnorm=1.0)

    Args:
        name: One of `OPTIMIZERS.names()`: sgd, adagrad, rmsprop, adam,
            adamw, nadam.
        learning_rate: A float > 0 or a
            `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: Momentum in [0, 1); only for `sgd` and `rmsprop`.
            Defaults to `0.0`.
        nesterov: Nesterov momentum; only for `sgd` with `momentum > 0`.
            Defaults to `False`.
        weight_decay: Decoupled weight decay factor >= 0 (`w -= lr * wd * w`
            each step). Defaults to `None`: no decay, except `adamw` whose
            default is 0.004.
        clipnorm: Clips each variable's gradient to this L2 norm.
            Defaults to `None`.
        clipvalue: Clips each gradient element to [-clipvalue, clipvalue].
            Defaults to `None`.
        global_clipnorm: Rescales all gradients together so that their
            global L2 norm is at most this. Defaults to `None`.
        ema: Keep an exponential moving average of the weights (Keras'
            `use_ema`): `avg = ema_momentum * avg + (1 - ema_momentum) * w`
            after each update (`avg = w` after the first). Defaults to `False`.
        ema_momentum: The EMA momentum in [0, 1). Defaults to `0.99`.
        grad_accumulation: Apply the mean gradient of this many batches in
            one update (Keras' `gradient_accumulation_steps`); the effective
            batch is `grad_accumulation * batch_size` and the learning rate
            is used as is, i.e. as for that larger batch (rescale it yourself
            if you tuned it for the small batch). Defaults to `1` (off).

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ConfigError: For an unknown name, a value out of range, an argument
            the optimizer does not take, or more than one clipping argument.
    """
    canonical = OPTIMIZERS.canonical(name)
    learning_rate = _check_learning_rate(learning_rate)
    momentum = _check_float("momentum", momentum, 0.0, 1.0, low_open=False)
    if not isinstance(nesterov, bool):
        raise ConfigError(f"'nesterov' must be a bool. Got {nesterov!r} instead.")
    if momentum and canonical not in MOMENTUM_OPTIMIZERS:
        raise ConfigError(
            f"momentum is only supported by the 'sgd' and 'rmsprop' optimizers. "
            f"Got momentum={momentum} with optimizer '{canonical}'."
        )
    if nesterov and canonical not in NESTEROV_OPTIMIZERS:
        raise ConfigError(
            f"nesterov=True is only supported by the 'sgd' optimizer. Got optimizer '{canonical}'."
        )
    if nesterov and not momentum:
        raise ConfigError(
            "nesterov=True needs momentum > 0 (Nesterov momentum without "
            "momentum is plain SGD). Got momentum=0.0."
        )
    if weight_decay is not None:
        weight_decay = _check_float("weight_decay", weight_decay, 0.0, low_open=False)

    clipping = {
        "clipnorm": clipnorm,
        "clipvalue": clipvalue,
        "global_clipnorm": global_clipnorm,
    }
    given = [k for k, v in clipping.items() if v is not None]
    if len(given) > 1:
        raise ConfigError(
            "Only one of clipnorm, clipvalue and global_clipnorm can be set "
            "(clipnorm clips each variable's gradient, global_clipnorm all of "
            f"them together). Got {', '.join(f'{k}={clipping[k]}' for k in given)}."
        )
    for key in given:
        clipping[key] = _check_float(key, clipping[key], 0.0, low_open=True)

    if isinstance(grad_accumulation, bool) or not isinstance(grad_accumulation, numbers.Integral) \
            or grad_accumulation < 1:
        raise ConfigError(f"'grad_accumulation' must be an int >= 1. Got {grad_accumulation!r} "
                          "instead.")
    kwargs: dict[str, Any] = {"learning_rate": learning_rate, **clipping}
    if ema:
        kwargs["use_ema"] = True
        kwargs["ema_momentum"] = _check_float("ema_momentum", ema_momentum, 0.0, 1.0,
                                              low_open=False)
    if grad_accumulation > 1:
        kwargs["gradient_accumulation_steps"] = int(grad_accumulation)
    if canonical in MOMENTUM_OPTIMIZERS:
        kwargs["momentum"] = momentum
    if canonical in NESTEROV_OPTIMIZERS:
        kwargs["nesterov"] = nesterov
    if weight_decay is not None or canonical == "adamw":
        kwargs["weight_decay"] = weight_decay
    return OPTIMIZERS.get(canonical, **kwargs)
