"""The learning-rate range test (LR finder).

Train for a short while with a learning rate that grows exponentially from
`min_lr` to `max_lr`, one step per rate, and watch the loss: too small a
rate barely moves it, a good one makes it fall fastest, too large a one
makes it blow up. The suggested rate is where the smoothed loss falls
fastest (the steepest descent against log10(lr)); the rate of the minimum
loss divided by 10 is given as a second opinion. The model's weights and
optimizer state are restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LRFinderResult", "lr_range_test", "lr_find", "suggest_learning_rate"]

#: Exponential smoothing factor of the loss (as in the fastai / Leslie Smith recipe).
SMOOTHING = 0.98
#: The test stops when the smoothed loss exceeds this multiple of its minimum.
DIVERGENCE = 4.0
#: Fraction of the first steps ignored when looking for the steepest descent.
SKIP_START = 0.1


@dataclass
class LRFinderResult:
    """What the range test measured and suggests.

    Attributes:
        lrs: The learning rate of each step.
        losses: The training loss of each step.
        smoothed: The exponentially smoothed (bias-corrected) loss.
        suggested_lr: The suggestion: steepest descent of the smoothed loss.
        min_loss_lr: The rate at the minimum smoothed loss.
        stopped_early: Whether the loss diverged before `max_lr`.
        plot_path: The PNG written, if any.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggested_lr: float | None = None
    min_loss_lr: float | None = None
    stopped_early: bool = False
    plot_path: Path | None = None

    def summary(self) -> str:
        """A few lines, as `kflow lr-find` prints them."""
        if self.suggested_lr is None:
            return "No suggestion: the loss did not decrease over the tested range."
        lines = [f"suggested learning rate: {self.suggested_lr:.2e} (steepest descent of the "
                 "smoothed loss)"]
        if self.min_loss_lr:
            lines.append(f"minimum loss at {self.min_loss_lr:.2e}; a tenth of it: "
                         f"{self.min_loss_lr / 10:.2e}")
        lines.append(f"tested {len(self.lrs)} steps from {self.lrs[0]:.1e} to "
                     f"{self.lrs[-1]:.1e}" + (" (stopped: the loss diverged)"
                                              if self.stopped_early else ""))
        if self.plot_path:
            lines.append(f"plot: {self.plot_path}")
        return "\n".join(lines)


def suggest_learning_rate(lrs: list[float], smoothed: list[float]) -> tuple[float | None,
                                                                             float | None]:
    """(steepest-descent rate, rate of the minimum) from a range test's smoothed loss."""
    values = np.asarray(smoothed, dtype=float)
    if len(values) < 5 or not np.isfinite(values).any():
        return None, None
    finite = np.where(np.isfinite(values), values, np.inf)
    start = int(len(values) * SKIP_START)  # the first smoothed values are the noisiest
    best = start + int(np.argmin(finite[start:]))
    min_lr = float(lrs[best])
    if best - start < 3:
        return (min_lr / 10 if best > 0 else None), min_lr
    slope = np.gradient(values[start:best + 1], np.log10(np.asarray(lrs[start:best + 1])))
    steepest = start + int(np.argmin(slope))
    if slope[steepest - start] >= 0:
        return min_lr / 10, min_lr
    return float(lrs[steepest]), min_lr


def lr_range_test(model: Any, x: Any, y: Any, *, batch_size: int = 32, min_lr: float = 1e-7,
                  max_lr: float = 10.0, steps: int = 100, seed: int = 0) -> LRFinderResult:
    """Runs the range test on a compiled Keras model, then restores it.

    The optimizer must have a float learning rate (not a schedule). Its
    weights and the model's are put back as they were.

    Args:
        model: A compiled model.
        x: Training inputs (an array or a dict of arrays).
        y: Training targets.
        batch_size: Samples per step. Defaults to 32.
        min_lr: First learning rate. Defaults to 1e-7.
        max_lr: Last learning rate. Defaults to 10.
        steps: Number of steps (rates). Defaults to 100.
        seed: Seed of the batch order. Defaults to 0.

    Example:

    ```python
    result = lr_range_test(model, x_train, y_train, steps=80)
    print(result.suggested_lr)
    ```
    """
    import keras

    from kflow.data.dataset import take_rows

    if not 0 < min_lr < max_lr:
        raise ValueError(f"Need 0 < min_lr < max_lr. Got min_lr={min_lr}, max_lr={max_lr}.")
    if steps < 5:
        raise ValueError(f"`steps` must be >= 5. Got {steps}.")
    optimizer = model.optimizer
    n = len(y)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    weights = model.get_weights()
    opt_state = ([keras.ops.convert_to_numpy(v) for v in optimizer.variables]
                 if optimizer.built else None)
    lr0 = float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    result = LRFinderResult()
    average, best = 0.0, math.inf
    factor = (max_lr / min_lr) ** (1.0 / (steps - 1))
    position = 0
    try:
        for i in range(steps):
            lr = min_lr * factor**i
            optimizer.learning_rate = lr
            if position + batch_size > n:
                order, position = rng.permutation(n), 0
            idx = order[position:position + batch_size]
            position += batch_size
            logs = model.train_on_batch(take_rows(x, idx), take_rows(y, idx), return_dict=True)
            loss = float(logs["loss"])
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smooth = average / (1 - SMOOTHING ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(loss)
            result.smoothed.append(smooth)
            if not math.isfinite(smooth) or smooth > DIVERGENCE * best:
                result.stopped_early = True
                break
            best = min(best, smooth)
    finally:
        model.set_weights(weights)
        if opt_state is not None:
            for v, value in zip(optimizer.variables, opt_state, strict=True):
                v.assign(value)
        elif optimizer.built:
            for v in optimizer.variables:
                v.assign(keras.ops.zeros(v.shape, v.dtype))
        optimizer.learning_rate = lr0
    result.suggested_lr, result.min_loss_lr = suggest_learning_rate(result.lrs,
                                                                    result.smoothed)
    return result


def lr_find(
    recipe: Any,
    *,
    overrides: Mapping[str, Any] | None = None,
    set_args: Iterable[str] = (),
    seed: int | None = None,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    plot_path: str | Path | None = "lr_find.png",
) -> LRFinderResult:
    """The range test on a recipe: its data, model, optimizer and batch size.

    Args:
        recipe: A registered name, file, YAML config, Recipe class or instance.
        overrides: Hyperparameter values.
        set_args: `KEY=VALUE` strings (as from `--set`).
        seed: Seed for the split, the initial weights and the batch order.
            Defaults to 0.
        min_lr: First learning rate. Defaults to 1e-7.
        max_lr: Last learning rate. Defaults to 10.
        steps: Number of steps. Defaults to 100.
        plot_path: Where to write the plot. Defaults to "lr_find.png";
            `None` writes none.

    Returns:
        An `LRFinderResult`.

    Example:

    ```python
    result = kflow.lr_find("digits-cnn", steps=80)
    print(result.summary())
    ```
    """
    from kflow.training.trainer import Trainer

    trainer = Trainer(recipe, overrides=overrides, set_args=set_args, seed=seed, verbose=0)
    train = trainer.splits().train
    batch_size = trainer.batch_size(train)
    model = trainer.build_model(train, learning_rate=min_lr, insight=False)
    result = lr_range_test(model, train.x, train.y, batch_size=batch_size, min_lr=min_lr,
                           max_lr=max_lr, steps=steps, seed=trainer.seed)
    if plot_path is not None:
        from kflow.insight.plots import plot_lr_finder

        path = Path(plot_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(plot_lr_finder(result.lrs, result.losses, result.smoothed,
                                        result.suggested_lr, result.min_loss_lr))
        result.plot_path = path
    return result
