"""The training engine: `kflow.train`."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kflow.recipe.base import Recipe
from kflow.recipe.overrides import resolve_recipe
from kflow.run import Run, read_history
from kflow.run import RunDir, atomic_save, atomic_write_text, config_hash

__all__ = ["train", "resolved_config", "auto_steps_per_execution", "prepare"]

_DETERMINISM_ON = False


def _say(verbose: int, *parts: Any) -> None:
    if verbose:
        print("kflow:", *parts, flush=True)


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy and TensorFlow; makes TF ops deterministic."""
    global _DETERMINISM_ON
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic and not _DETERMINISM_ON:
        tf.config.experimental.enable_op_determinism()
        _DETERMINISM_ON = True


def recipe_reference(recipe: Recipe) -> str:
    """How `config.yaml` names the recipe: its registered name, or `file.py:Class`."""
    from kflow.recipe.registry import list_recipes

    cls = type(recipe)
    if cls.name and list_recipes().get(cls.name) is cls:
        return cls.name
    module = sys.modules.get(cls.__module__)
    source = getattr(module, "__file__", None)
    return f"{source}:{cls.__name__}" if source else cls.__name__


def resolved_config(recipe: Recipe, seed: int) -> dict[str, Any]:
    """The full configuration of a run, as written to `config.yaml`."""
    from kflow import __version__

    return {"recipe": recipe_reference(recipe), "seed": seed, **recipe.config(),
            "kflow_version": __version__}


def auto_steps_per_execution(steps_per_epoch: int) -> int:
    """Train steps per `tf.function` call: amortize Python overhead, keep epochs whole."""
    return max(1, min(steps_per_epoch, 32))


def prepare(recipe: Recipe, seed: int):
    """Loads and splits the recipe's data (shared by train, cv and tune)."""
    from kflow.data.splits import train_val_test_split

    data = recipe.load_data()
    return data, train_val_test_split(
        data, recipe.hparams["val_fraction"], recipe.hparams["test_fraction"], seed
    )


def build_optimizer_for(recipe: Recipe, steps_per_epoch: int):
    from kflow.optim.optimizers import build_optimizer
    from kflow.optim.schedules import build_schedule

    h = recipe.hparams
    lr = build_schedule(
        h["lr_schedule"], h["learning_rate"], steps_per_epoch=steps_per_epoch,
        epochs=h["epochs"], warmup_epochs=h["warmup_epochs"], decay_rate=h["decay_rate"],
        decay_epochs=h["decay_epochs"],
    )
    return build_optimizer(
        h["optimizer"], lr, momentum=h["momentum"], nesterov=h["nesterov"],
        weight_decay=h["weight_decay"] or None, clipnorm=h["clipnorm"],
        global_clipnorm=h["global_clipnorm"],
    )


def compile_model(recipe: Recipe, train_data, steps_per_epoch: int):
    """Builds and compiles the recipe's model (call inside a strategy scope)."""
    model = recipe.build_model(train_data)
    from kflow.insight.engine_hooks import wrap_model

    model = wrap_model(model, recipe.hparams.get("grad_log_every", 0))
    spe = recipe.hparams["steps_per_execution"] or auto_steps_per_execution(steps_per_epoch)
    import tensorflow as tf

    if spe > 1 and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        # Keras 3.15 / TF 2.21: the multi-step loop fails under MirroredStrategy
        # ("You must feed a value for placeholder tensor ..."), even in plain Keras.
        if recipe.hparams["steps_per_execution"]:
            import warnings

            warnings.warn(
                f"steps_per_execution={spe} is not supported with several replicas in "
                "Keras 3.15 / TF 2.21; using 1.", stacklevel=2,
            )
        spe = 1
    model.compile(
        optimizer=build_optimizer_for(recipe, steps_per_epoch),
        loss=recipe.loss(train_data.task),
        metrics=recipe.metrics(train_data.task),
        steps_per_execution=spe,
    )
    return model


def _backup_epoch(rd: RunDir) -> int:
    import json

    meta = rd.backup / "training_metadata.json"
    return int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0


def _truncate_history(rd: RunDir, epoch: int) -> None:
    """Keeps the history rows of epochs < `epoch` (those the backup holds)."""
    if not rd.history.is_file():
        return
    lines = rd.history.read_text().splitlines(keepends=True)
    kept = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].strip().isdigit()
                        and int(ln.split(",", 1)[0]) < epoch]
    atomic_write_text(rd.history, "".join(kept))


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

    Returns:
        A `Run` with the model, history and metrics.

    Example:

    ```python
    import kflow
    run = kflow.train("digits-mlp", epochs=5, set_args=["dropout=0.1"])
    print(run.metrics["test"]["accuracy"], run.run_dir)
    ```
    """
    import keras
    import yaml

    from kflow.training.callbacks import (
        BestModelCheckpoint,
        EpochTensorBoard,
        ExplainedEarlyStopping,
        ResumableBackup,
        wait_for_writes,
    )
    from kflow.training.strategy import describe_strategy, resolve_strategy

    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    recipe_obj, engine_opts = resolve_recipe(recipe, overrides, set_args)
    seed = int(seed if seed is not None else engine_opts.get("seed", 0))
    strategy = engine_opts.get("strategy", strategy) if strategy == "auto" else strategy
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    config = resolved_config(recipe_obj, seed)
    label = (recipe_obj.name or type(recipe_obj).__name__)

    if run_dir is not None:
        rd, resuming = RunDir.explicit(run_dir, overwrite=overwrite)
    else:
        stem = f"{label}-{config_hash({k: v for k, v in config.items() if k != 'kflow_version'})}"
        rd, resuming = RunDir.choose(runs_root, stem)
    if resuming and rd.config.is_file():
        previous = yaml.safe_load(rd.config.read_text())
        previous.pop("kflow_version", None)
        current = {k: v for k, v in config.items() if k != "kflow_version"}
        if previous != current:
            from kflow.errors import RunError

            raise RunError(
                f"Run directory '{rd.path}' holds an unfinished run with a different "
                "config; choose another --run-dir, or delete its backup/ to start over."
            )

    set_seed(seed)
    recipe_obj._seed = seed
    data, splits = prepare(recipe_obj, seed)
    bs = recipe_obj.hparams["batch_size"]
    batch_size = len(splits.train) if bs == "full" else int(bs)
    steps_per_epoch = math.ceil(len(splits.train) / batch_size)

    dist = resolve_strategy(strategy)
    from kflow.data.pipeline import make_dataset

    train_ds = make_dataset(splits.train.x, splits.train.y, batch_size, training=True, seed=seed)
    val_ds = (make_dataset(splits.val.x, splits.val.y, max(batch_size, 256), training=False)
              if splits.val is not None else None)
    with dist.scope():
        model = compile_model(recipe_obj, splits.train, steps_per_epoch)

    if save:
        rd.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(rd.config, yaml.safe_dump(config, sort_keys=False))
        rd.write_json(rd.path / "run.json", {
            "recipe": config["recipe"], "task": splits.train.task,
            "class_names": splits.train.class_names,
            "feature_names": splits.train.feature_names,
            "input_shape": list(getattr(splits.train.x, "shape", [None])[1:]),
            "num_train": len(splits.train),
            "num_val": len(splits.val) if splits.val is not None else 0,
            "num_test": len(splits.test) if splits.test is not None else 0,
            "strategy": describe_strategy(dist),
            "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
        })
        rd.write_status("running")
    _say(verbose, f"{'resuming' if resuming else 'training'} {label} in {rd.path} "
         f"({describe_strategy(dist)}; {len(splits.train)} train / "
         f"{len(splits.val) if splits.val is not None else 0} val / "
         f"{len(splits.test) if splits.test is not None else 0} test samples)")

    monitor, mode = recipe_obj.monitor(splits.train.task)
    if val_ds is None:
        monitor = monitor.removeprefix("val_")
    from kflow.insight.engine_hooks import InsightHooks

    insight = InsightHooks(rd.path if save else None, recipe_obj.hparams.get("grad_log_every", 0),
                           probe_x=splits.train.x, log=lambda m: _say(verbose, m))
    cbs: list[Any] = list(insight.callbacks)  # first: CSVLogger/TensorBoard see their logs
    if save:
        # History first, backup after it: a crash between the two re-runs the epoch, and
        # the resumed run drops the history rows of epochs it will redo.
        if resuming:
            _truncate_history(rd, _backup_epoch(rd))
        cbs.append(keras.callbacks.CSVLogger(str(rd.history), append=resuming))
        cbs.append(ResumableBackup(str(rd.backup)))
    stopper = None
    if recipe_obj.hparams["early_stopping"]:
        stopper = ExplainedEarlyStopping(
            state_dir=str(rd.backup) if save else None, monitor=monitor, mode=mode,
            patience=recipe_obj.hparams["patience"], restore_best_weights=True,
            log=(lambda m: _say(verbose, m)),
        )
        cbs.append(stopper)
    if save:
        cbs += [
            BestModelCheckpoint(rd.best_checkpoint, monitor=monitor, mode=mode),
            EpochTensorBoard(rd.tensorboard),  # keras' TensorBoard files, without TF ops
        ]
    cbs += list(callbacks)

    start = time.perf_counter()
    try:
        model.fit(
            train_ds, validation_data=val_ds, epochs=recipe_obj.hparams["epochs"],
            callbacks=cbs, verbose=verbose, shuffle=False,
        )
    except KeyboardInterrupt:
        if save:
            rd.write_status("interrupted")
        _say(verbose, f"interrupted; re-run the same command to resume {rd.path} "
             "from its last completed epoch.")
        raise
    except Exception as exc:
        if save:
            rd.write_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        wait_for_writes()  # the callbacks' background backup writes (even after a crash)
    train_seconds = time.perf_counter() - start

    history = read_history(rd.history) if save else {
        k: [float(v) for v in vals] for k, vals in model.history.history.items()
    }
    epochs_run = len(next(iter(history.values()), []))
    metrics: dict[str, Any] = {}
    for split_name in ("train", "val", "test"):
        part = getattr(splits, split_name)
        if part is None:
            continue
        ds = make_dataset(part.x, part.y, max(batch_size, 256), training=False, cache=False)
        metrics[split_name] = {
            k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()
        }
    metrics.update({
        "epochs_run": epochs_run,
        "stopped_early": bool(stopper is not None and stopper.stopped_epoch > 0),
        "stop_reason": stopper.message if stopper is not None else "",
        "best_epoch": (stopper.best_epoch + 1) if stopper is not None and stopper.best_epoch
        is not None else epochs_run,
        "train_seconds_this_session": round(train_seconds, 3),
        "seed": seed,
    })
    metrics.update(insight.extra_metrics())  # a NaN stop: its reason and where
    if save:
        atomic_save(rd.model, model.save)
        rd.write_json(rd.metrics, metrics)
        rd.write_status("finished", **insight.extra_metrics())
        insight.finish(model, splits, batch_size)  # confusion matrix, findings, report.html
    test = metrics.get("test", {})
    summary = ", ".join(f"{k}={v:.4f}" for k, v in test.items())
    _say(verbose, f"finished {label}: test {summary}")
    return Run(run_dir=rd.path, model=model, history=history, metrics=metrics, config=config,
               info={"task": splits.train.task, "class_names": splits.train.class_names})
