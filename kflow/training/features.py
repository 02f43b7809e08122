"""Training features a Keras, Lightning or Ludwig user expects, built from Keras' own parts.

Each is a hyperparameter declared in `kflow.recipe.base.Recipe` (validated,
shown by `kflow recipes show`) and wired into `kflow.training.Trainer` here:

| setting              | what it does                                                   |
|----------------------|----------------------------------------------------------------|
| `class_weight`       | `none`, `balanced` (n / (k * n_c) from the training split, as  |
|                      | scikit-learn's `compute_class_weight`), or `{class: weight}`   |
| sample weights       | a table's `weight_column` (tabular recipe), times class weights |
| `label_smoothing`    | built-in Keras losses with `label_smoothing` (multiclass: one-hot |
|                      | targets and `CategoricalCrossentropy`)                          |
| `lr_schedule: plateau` | `keras.callbacks.ReduceLROnPlateau` on the monitored metric  |
| `ema`                | the optimizer's `use_ema`; `keras.callbacks.SwapEMAWeights` puts |
|                      | the averaged weights in the model for validation, checkpoints, |
|                      | early stopping and the saved model                             |
| `grad_accumulation`  | the optimizer's `gradient_accumulation_steps`                   |
| `--profile-steps A:B`| a TensorBoard profile of steps A..B (`tf.profiler`)             |

The weights the loss sees are `class_weight[y] * weight_column`: Keras
reduces a weighted batch as `sum(w_i * loss_i) / batch_size`. Validation and
test metrics are unweighted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kflow.errors import ConfigError
from kflow.recipe.class_weight import ClassWeight

__all__ = ["ClassWeight", "class_weights", "sample_weights", "smoothed_loss",
           "feature_callbacks", "parse_profile_steps", "ProfileSteps", "PlateauScheduler",
           "EmaWeights"]

def class_weights(y: np.ndarray, setting: Any, class_names: list[str] | None = None,
                  num_classes: int | None = None) -> np.ndarray | None:
    """One weight per class id, or `None` for `class_weight: none`.

    Args:
        y: Integer class ids of the training split.
        setting: "none", "balanced" (`n / (k * n_c)`, scikit-learn's
            `compute_class_weight("balanced")`), or `{class: weight}` where a
            class is named by its name or its id; classes not named get 1.
        class_names: Names of the classes (index = id). Defaults to `None`.
        num_classes: Number of classes. Defaults to `max(y) + 1`.

    Returns:
        A float32 array of `num_classes` weights, or `None`.

    Raises:
        ConfigError: For a mapping naming a class that does not exist.

    Example:

    >>> class_weights(np.array([0, 0, 0, 1]), "balanced")
    array([0.6666667, 2.       ], dtype=float32)
    """
    if setting is None or setting == "none":
        return None
    y = np.asarray(y).astype(np.int64).reshape(-1)
    k = int(num_classes or (len(class_names) if class_names else int(y.max()) + 1))
    if setting == "balanced":
        counts = np.bincount(y, minlength=k).astype(np.float64)
        weights = np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 1.0)
        return weights.astype(np.float32)
    weights = np.ones(k, dtype=np.float32)
    names = [str(c) for c in (class_names or [])]
    for key, value in dict(setting).items():
        key = str(key)
        if key in names:
            weights[names.index(key)] = value
        elif key.lstrip("-").isdigit() and 0 <= int(key) < k:
            weights[int(key)] = value
        else:
            known = ", ".join(names) if names else f"ids 0..{k - 1}"
            raise ConfigError(f"class_weight names class {key!r}, which is not a class of "
                              f"the data (classes: {known}).")
    return weights


def sample_weights(train: Any, setting: Any) -> np.ndarray | None:
    """The per-row loss weights of a training split: class weights times `sample_weight`.

    Args:
        train: The training `Dataset` (its `sample_weight`, from a table's
            weight column, may be `None`).
        setting: The `class_weight` hyperparameter.

    Returns:
        A float32 array with one weight per row, or `None` when unweighted.
    """
    row = getattr(train, "sample_weight", None)
    per_class = None
    if setting not in (None, "none"):
        if train.task == "regression":
            raise ConfigError("class_weight applies to classification; the data's task is "
                              "regression. Leave class_weight at none (a table's "
                              "weight_column weighs rows of any task).")
        per_class = class_weights(train.y, setting, train.class_names,
                                  train.num_classes if train.task == "multiclass" else 2)
    if row is None and per_class is None:
        return None
    weights = np.ones(len(train), dtype=np.float32)
    if per_class is not None:
        weights *= per_class[np.asarray(train.y).astype(np.int64).reshape(-1)]
    if row is not None:
        weights *= np.asarray(row, dtype=np.float32)
    return weights


def smoothed_loss(task: str, label_smoothing: float, loss: Any, metrics: list[Any]
                  ) -> tuple[Any, list[Any], bool]:
    """The loss and metrics with label smoothing, and whether targets must be one-hot.

    Binary: `BinaryCrossentropy(label_smoothing=s)` (targets `y(1-s) + s/2`).
    Multiclass: Keras' sparse loss has no smoothing, so the targets become
    one-hot (`y(1-s) + s/k`) for `CategoricalCrossentropy(label_smoothing=s)`
    and sparse accuracy becomes `CategoricalAccuracy` (same name). Only
    built-in Keras objects, so `model.keras` still loads without kflow.
    """
    if not label_smoothing:
        return loss, metrics, False
    import keras

    if task == "regression":
        raise ConfigError("label_smoothing applies to classification losses; the data's task "
                          "is regression. Leave label_smoothing at 0.")
    if task == "binary":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing), metrics, False
    swapped = [keras.metrics.CategoricalAccuracy(name=m.name)
               if isinstance(m, keras.metrics.SparseCategoricalAccuracy) else m
               for m in metrics]
    return (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            swapped, True)


def parse_profile_steps(text: str | None) -> tuple[int, int] | None:
    """`"A:B"` -> `(A, B)`: profile training steps A to B (1-based, inclusive)."""
    if text in (None, ""):
        return None
    parts = str(text).split(":")
    try:
        a, b = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (int(parts[0]),) * 2
    except ValueError:
        a = b = -1
    if a < 1 or b < a:
        raise ConfigError(f"--profile-steps must be A:B with 1 <= A <= B (training steps, "
                          f"counted from 1 over the whole run). Got {text!r}.")
    return a, b


def _callback_base() -> type:
    import keras

    return keras.callbacks.Callback


class ProfileSteps(_callback_base()):
    """Writes a TensorBoard profile of training steps `start..stop` to `log_dir`.

    Steps count from 1 over the whole fit. With `steps_per_execution` > 1 the
    profile covers whole groups of steps (Keras calls the batch hooks once per
    group). Open it with `tensorboard --logdir RUN/tensorboard` (Profile tab,
    needs the `tensorboard-plugin-profile` package to view).

    Args:
        log_dir: Folder for the profile (`plugins/profile/<time>/`).
        steps: `(start, stop)`, 1-based and inclusive.
    """

    def __init__(self, log_dir: Any, steps: tuple[int, int]):
        super().__init__()
        self.log_dir = str(log_dir)
        self.start, self.stop = steps
        self._step = 0
        self._running = False
        self.profiled = False

    def on_train_batch_begin(self, batch, logs=None):
        if not self._running and not self.profiled and self._step + 1 >= self.start:
            import tensorflow as tf

            tf.profiler.experimental.start(self.log_dir)
            self._running = True

    def on_train_batch_end(self, batch, logs=None):
        self._step = batch + 1 + self._epoch_offset
        if self._running and self._step >= self.stop:
            self._finish()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_offset = epoch * int((self.params or {}).get("steps") or 0)

    def on_train_end(self, logs=None):
        if self._running:
            self._finish()

    def _finish(self) -> None:
        import tensorflow as tf

        tf.profiler.experimental.stop()
        self._running = False
        self.profiled = True

    _epoch_offset = 0


class PlateauScheduler(_callback_base()):
    """`keras.callbacks.ReduceLROnPlateau`, with its state kept in kflow's resume backup.

    Multiplies the rate by `factor` when `monitor` has not improved for
    `patience` epochs (then waits `cooldown` epochs), down to `min_lr`.
    """

    def __init__(self, monitor: str, mode: str, factor: float, patience: int,
                 min_lr: float = 0.0, log: Any = None):
        super().__init__()
        import keras

        self.inner = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=factor, patience=patience, min_lr=min_lr,
            verbose=0)
        self.log = log
        self.reductions: list[tuple[int, float]] = []

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        before = float(self.model.optimizer.learning_rate.numpy())
        self.inner.on_epoch_end(epoch, logs)
        after = float(self.model.optimizer.learning_rate.numpy())
        if after < before:
            self.reductions.append((epoch + 1, after))
            if self.log:
                self.log(f"epoch {epoch + 1}: {self.inner.monitor} did not improve for "
                         f"{self.inner.patience} epochs; learning rate {before:.3g} -> "
                         f"{after:.3g}")

    def get_resume_state(self) -> dict[str, Any]:
        best = self.inner.best
        return {"wait": int(self.inner.wait), "cooldown_counter":
                int(self.inner.cooldown_counter),
                "best": None if best is None else float(best)}

    def set_resume_state(self, state: dict[str, Any]) -> None:
        self.inner.wait = state["wait"]
        self.inner.cooldown_counter = state["cooldown_counter"]
        if state["best"] is not None:
            self.inner.best = state["best"]


def _swap_base() -> type:
    import keras

    return keras.callbacks.SwapEMAWeights


class EmaWeights(_swap_base()):
    """`keras.callbacks.SwapEMAWeights(swap_on_epoch=True)`, resumable.

    Validation runs on the averaged weights, and from the end of each epoch
    to the start of the next the model holds them, so early stopping, the
    best checkpoint and the backup see the EMA weights; `fit` ends with them
    in the model (Keras' `finalize_variable_values`), so `model.keras` holds
    them. The backup records whether the averaged weights were in the model
    when it was written, so a resumed run swaps back correctly.
    """

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def get_resume_state(self) -> dict[str, Any]:
        from kflow._keras_compat import ema_weights_in_model

        return {"ema_in_model": ema_weights_in_model(self)}

    def set_resume_state(self, state: dict[str, Any]) -> None:
        from kflow._keras_compat import ema_weights_in_model

        ema_weights_in_model(self, bool(state["ema_in_model"]))


def feature_callbacks(hparams: Mapping[str, Any], *, monitor: str, mode: str,
                      log: Any = None, profile_dir: Any = None,
                      profile_steps: tuple[int, int] | None = None) -> dict[str, Any]:
    """The callbacks of these features, by their `CALLBACK_ORDER` name."""
    named: dict[str, Any] = {}
    if hparams.get("ema"):
        named["ema_weights"] = EmaWeights()
    if hparams.get("lr_schedule") == "plateau":
        named["lr_plateau"] = PlateauScheduler(
            monitor, mode, factor=hparams["decay_rate"],
            patience=hparams.get("plateau_patience", 3), log=log)
    if profile_steps and profile_dir is not None:
        named["profiler"] = ProfileSteps(profile_dir, profile_steps)
    return named


def one_hot_targets(ds: Any, num_classes: int) -> Any:
    """Maps a tf.data pipeline's integer targets to one-hot rows (label smoothing)."""
    import tensorflow as tf

    def fn(x, y, *w):
        return (x, tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes), *w)

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
