"""`kflow.train`: train a recipe end to end into a run directory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kflow.recipe.base import Recipe
from kflow.run import Run

__all__ = ["train"]


def train(
    recipe: str | type[Recipe] | Recipe,
    *,
    overrides: Mapping[str, Any] | None = None,
    set_args: Iterable[str] = (),
    epochs: int | None = None,
    run_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    seed: int | None = None,
    strategy: str = "auto",
    verbose: int | str = "auto",
    callbacks: Sequence[Any] = (),
    overwrite: bool = False,
    save: bool = True,
    profile_steps: str | tuple[int, int] | None = None,
    track: str | None = None,
) -> Run:
    """Trains a recipe end to end and leaves a complete run directory.

    Splits the data (stratified, seeded), builds the model inside a
    `tf.distribute` strategy, trains with early stopping, best-model
    checkpoints, resumable backups, CSV history and TensorBoard logs, then
    evaluates on train/validation/test and saves `model.keras`.

    Re-running the same call after a crash or Ctrl-C resumes the unfinished
    run from its last completed epoch.

    Args:
        recipe: A registered name, `file.py[:Class]`, a YAML config, a Recipe
            class or instance.
        overrides: Hyperparameter values (flat, dotted or grouped keys).
        set_args: `KEY=VALUE` strings (as from `--set`).
        epochs: Shortcut for `overrides={"epochs": N}`. Defaults to `None`.
        run_dir: Run directory; default `runs_root/<recipe>-<config hash>`.
        runs_root: Parent of default run directories. Defaults to "runs".
        seed: Seed for splits, initialization and shuffling. Defaults to 0.
        strategy: "auto", "default", "mirrored", "tpu" or "multi_worker".
            Defaults to "auto".
        verbose: 0 silent, 1 progress bar, 2 one line per epoch; "auto"
            picks 1 on a terminal, else 2.
        callbacks: Extra Keras callbacks.
        overwrite: Replace a finished run in an explicit `run_dir`.
        save: Write the run directory. Defaults to `True`.
        profile_steps: `"A:B"`: a TensorBoard profile of training steps A to
            B in `tensorboard/`. Defaults to `None`.
        track: "mlflow" also logs the run to MLflow (`kflow.tracking.mlflow`).
            Defaults to `None` (TensorBoard only).

    Returns:
        A `Run` with the model, history and metrics.

    Example:

    ```python
    import kflow
    run = kflow.train("digits-mlp", epochs=5, set_args=["dropout=0.1"])
    print(run.metrics["test"]["accuracy"], run.run_dir)
    ```
    """
    from kflow.training.trainer import Trainer

    trainer = Trainer(recipe, overrides=overrides, set_args=set_args, epochs=epochs, seed=seed,
                      strategy=strategy, verbose=verbose, profile_steps=profile_steps,
                      track=track)
    return trainer.run(run_dir=run_dir, runs_root=runs_root, callbacks=callbacks,
                       overwrite=overwrite, save=save)
