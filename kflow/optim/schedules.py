"""Learning-rate schedules by name, built from Keras' built-in schedules.

Only Keras' own schedule classes are returned, so an optimizer using them
saves to and reloads from `model.keras` without custom objects. Steps are
optimizer steps (batches); epochs are converted with `steps_per_epoch`.

| name          | learning rate at step t (lr = base rate, E = steps_per_epoch)  |
|---------------|-----------------------------------------------------------------|
| `constant`    | lr (a float), after an optional linear warmup                   |
| `step`        | lr * decay_rate ** floor(t / (decay_epochs * E))                |
| `exponential` | lr * decay_rate ** (t / (decay_epochs * E))                     |
| `cosine`      | linear warmup 0 -> lr, then cosine lr -> min_lr_ratio * lr     |
| `one_cycle`   | linear lr/25 -> lr over the first 25 % of steps, then cosine   |
|               | lr -> lr/(25 * 1e4) (fastai's one-cycle rates; momentum fixed)  |
| `plateau`     | lr, multiplied by decay_rate when the monitored metric has not |
|               | improved for plateau_patience epochs (ReduceLROnPlateau)        |

Warmup rises linearly from 0 at step 0 to `lr` at step
`warmup_epochs * E`; it is available for `constant` and `cosine`.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from kflow._registry import Registry
from kflow.errors import ConfigError

if TYPE_CHECKING:
    import keras

__all__ = ["SCHEDULES", "build_schedule"]

SCHEDULES = Registry("schedule")
_WARMUP_SCHEDULES = ("constant", "cosine")


@SCHEDULES.register("constant", doc="A fixed rate, with optional linear warmup.")
def _constant(learning_rate, *, total_steps, warmup_steps, **_unused):
    if not warmup_steps:
        return learning_rate
    import keras

    # alpha=1.0 makes the decay phase flat: (1 - alpha) * cos + alpha = 1.
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=1.0,
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
        name="ConstantWithWarmup",
    )


@SCHEDULES.register("step", doc="Multiply by decay_rate every decay_epochs (staircase).")
def _step(learning_rate, *, decay_steps, decay_rate, **_unused):
    import keras

    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps, decay_rate, staircase=True, name="StepDecay"
    )


@SCHEDULES.register("exponential", doc="Smooth decay by decay_rate per decay_epochs.")
def _exponential(learning_rate, *, decay_steps, decay_rate, **_unused):
    import keras

    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps, decay_rate, staircase=False
    )


@SCHEDULES.register("cosine", doc="Linear warmup, then cosine decay to min_lr_ratio * lr.")
def _cosine(learning_rate, *, total_steps, warmup_steps, min_lr_ratio, **_unused):
    import keras

    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        alpha=min_lr_ratio,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


#: fastai's `fit_one_cycle` defaults: start at lr / 25, rise over 25 % of the steps,
#: end at lr / (25 * 1e4).
ONE_CYCLE_DIV, ONE_CYCLE_FINAL_DIV, ONE_CYCLE_PCT_START = 25.0, 1e4, 0.25


@SCHEDULES.register("one_cycle", doc="fastai's one-cycle: rise from lr/25 to lr over 25 % "
                    "of the steps, then cosine down to lr/2.5e5.")
def _one_cycle(learning_rate, *, total_steps, **_unused):
    import keras

    warmup = min(max(1, round(ONE_CYCLE_PCT_START * total_steps)), max(1, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / ONE_CYCLE_DIV,
        decay_steps=max(1, total_steps - warmup),
        alpha=1.0 / (ONE_CYCLE_DIV * ONE_CYCLE_FINAL_DIV),
        warmup_target=learning_rate,
        warmup_steps=warmup,
        name="OneCycle",
    )


@SCHEDULES.register("plateau", doc="Constant until the monitored metric stalls for "
                    "plateau_patience epochs, then times decay_rate (ReduceLROnPlateau).")
def _plateau(learning_rate, **_unused):
    # A plain float: `ReduceLROnPlateau` (added by the trainer) assigns the optimizer's rate.
    return learning_rate


def _number(
    name: str,
    value: Any,
    *,
    low: float,
    low_open: bool,
    high: float = math.inf,
    integer: bool = False,
) -> float:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Integral if integer else numbers.Real)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and value <= high
    )
    if not ok:
        kind = "an int" if integer else "a float"
        left = "(" if low_open else "["
        right = ")" if high == math.inf else "]"
        raise ConfigError(
            f"'{name}' must be {kind} in the range {left}{low}, {high}{right}. "
            f"Got {value!r} instead."
        )
    return int(value) if integer else float(value)


def build_schedule(
    name: str,
    learning_rate: float,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0,
    decay_rate: float = 0.5,
    decay_epochs: float = 10,
    min_lr_ratio: float = 0.0,
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Builds a learning rate (schedule) for `build_optimizer`.

    Example:

    >>> lr = build_schedule("cosine", 1e-3, steps_per_epoch=100, epochs=30,
    ...                     warmup_epochs=2, min_lr_ratio=0.01)
    >>> lr = build_schedule("step", 0.1, steps_per_epoch=100, epochs=30,
    ...                     decay_rate=0.1, decay_epochs=10)

    Args:
        name: One of `SCHEDULES.names()`: constant, step, exponential, cosine,
            one_cycle, plateau (`plateau` returns the float rate; the trainer
            adds `ReduceLROnPlateau`).
        learning_rate: Base (peak) learning rate, > 0.
        steps_per_epoch: Optimizer steps (batches) per epoch, >= 1.
        epochs: Number of training epochs, >= 1.
        warmup_epochs: Epochs of linear warmup from 0 (may be fractional);
            `constant` and `cosine` only; must be < `epochs`. Defaults to `0`.
        decay_rate: Factor in (0, 1] applied every `decay_epochs`, used by
            `step` and `exponential`. Defaults to `0.5`.
        decay_epochs: Epochs per decay by `decay_rate` (may be fractional),
            used by `step` and `exponential`. Defaults to `10`.
        min_lr_ratio: Final rate as a fraction of `learning_rate` for
            `cosine`, in [0, 1]. Defaults to `0.0`.

    Returns:
        A float for `constant` without warmup, else a Keras
        `LearningRateSchedule` (a built-in class, so it serializes).

    Raises:
        ConfigError: For an unknown name, a value out of range, or warmup /
            `min_lr_ratio` with a schedule that does not support them.
    """
    canonical = SCHEDULES.canonical(name)
    learning_rate = _number("learning_rate", learning_rate, low=0.0, low_open=True)
    steps_per_epoch = _number(
        "steps_per_epoch", steps_per_epoch, low=1, low_open=False, integer=True
    )
    epochs = _number("epochs", epochs, low=1, low_open=False, integer=True)
    warmup_epochs = _number("warmup_epochs", warmup_epochs, low=0.0, low_open=False)
    decay_rate = _number("decay_rate", decay_rate, low=0.0, low_open=True, high=1.0)
    decay_epochs = _number("decay_epochs", decay_epochs, low=0.0, low_open=True)
    min_lr_ratio = _number("min_lr_ratio", min_lr_ratio, low=0.0, low_open=False, high=1.0)

    if warmup_epochs and canonical not in _WARMUP_SCHEDULES:
        raise ConfigError(
            f"warmup_epochs is only supported by the 'constant' and 'cosine' "
            f"schedules. Got warmup_epochs={warmup_epochs} with schedule "
            f"'{canonical}'."
        )
    if warmup_epochs >= epochs:
        raise ConfigError(
            f"warmup_epochs must be < epochs. Got warmup_epochs={warmup_epochs} "
            f"and epochs={epochs}."
        )
    if min_lr_ratio and canonical != "cosine":
        raise ConfigError(
            f"min_lr_ratio is only supported by the 'cosine' schedule. "
            f"Got min_lr_ratio={min_lr_ratio} with schedule '{canonical}'."
        )

    total_steps = steps_per_epoch * epochs
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    if warmup_epochs:  # At least one warmup step, and one step after it.
        warmup_steps = min(max(1, warmup_steps), total_steps - 1)
    return SCHEDULES.get(
        canonical,
        learning_rate=learning_rate,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        decay_steps=max(1, round(decay_epochs * steps_per_epoch)),
        decay_rate=decay_rate,
        min_lr_ratio=min_lr_ratio,
    )
