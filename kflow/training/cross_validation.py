"""K-fold cross-validation of a recipe: `kflow.cross_validate` and `kflow cv`."""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kflow.recipe.base import Recipe

__all__ = ["CVResult", "cross_validate"]


@dataclass
class CVResult:
    """The result of `kflow.cross_validate`.

    Attributes:
        folds: One dict per fold: the held-out fold's metrics (`loss`,
            `accuracy`...) plus `fold`, `num_train`, `num_early_stopping`,
            `num_held_out` and `epochs_run`.
        mean: The mean of each metric over the folds.
        std: The standard deviation of each metric over the folds (NumPy's
            `std`, ddof=0, as scikit-learn's examples report it).
        out_dir: The folder holding `cv.json`, `cv.csv` and `config.yaml`
            (`None` when not saved).
        config: The resolved configuration.
        info: Splitter, seed, pool and test sizes.
    """

    folds: list[dict[str, Any]]
    mean: dict[str, float]
    std: dict[str, float]
    out_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        return list(self.mean)

    def summary(self) -> str:
        """One line per metric: `accuracy: 0.9650 ± 0.0123`."""
        return "\n".join(f"{k}: {self.mean[k]:.4f} ± {self.std[k]:.4f}" for k in self.mean)

    def table(self) -> str:
        """Per-fold metrics, then the mean ± std rows, as an aligned text table."""
        names = self.metric_names
        head = ["fold", *names, "epochs"]
        rows = [[str(f["fold"]), *(f"{f[k]:.4f}" for k in names), str(f["epochs_run"])]
                for f in self.folds]
        rows.append(["mean ± std", *(f"{self.mean[k]:.4f} ± {self.std[k]:.4f}" for k in names),
                     ""])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [head, *rows]]
        return "\n".join(lines)

    def to_csv(self) -> str:
        """`cv.csv`: one row per fold, then a `mean` and a `std` row."""
        names = self.metric_names
        columns = ["fold", "num_train", "num_early_stopping", "num_held_out", "epochs_run",
                   *names]
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for f in self.folds:
            writer.writerow(f)
        writer.writerow({"fold": "mean", **self.mean})
        writer.writerow({"fold": "std", **self.std})
        return out.getvalue()


def _say(verbose: int, *parts: Any) -> None:
    if verbose:
        print("kflow:", *parts, flush=True)


_COUNTS = ("fold", "num_train", "num_early_stopping", "num_held_out", "epochs_run")


@contextlib.contextmanager
def _quiet_retracing() -> Iterator[None]:
    """Hides TensorFlow's "triggered tf.function retracing" warnings (one model per fold)."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def _fit_fold(trainer: Any, fit_part: Any, held_out: Any) -> dict[str, Any]:
    """Builds a fresh model on `fit_part` (preprocessing refitted), trains, scores `held_out`.

    The fold trains with the trainer's own callbacks (early stopping on a
    `val_fraction` slice of `fit_part`, the NaN guard, gradient statistics),
    without writing files.
    """
    import keras

    from kflow.data.splits import train_val_test_split
    from kflow.training.trainer import set_seed

    h = trainer.hparams
    keras.backend.clear_session()
    set_seed(trainer.seed)
    stop_part = None
    if h["early_stopping"] and h["val_fraction"] > 0:
        inner = train_val_test_split(fit_part, h["val_fraction"], 0.0, trainer.seed)
        fit_part, stop_part = inner.train, inner.val
    model = trainer.build_model(fit_part)
    outcome = trainer.fit(model, fit_part, stop_part, verbose=0)
    scores = trainer.evaluate(model, {"held_out": held_out})["held_out"]
    return {
        "num_train": len(fit_part),
        "num_early_stopping": len(stop_part) if stop_part is not None else 0,
        "num_held_out": len(held_out),
        "epochs_run": outcome.epochs_run,
        **scores,
    }


def cross_validate(
    recipe: str | type[Recipe] | Recipe,
    *,
    folds: int = 5,
    overrides: Mapping[str, Any] | None = None,
    set_args: Iterable[str] = (),
    epochs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    verbose: int | str = "auto",
    save: bool = True,
) -> CVResult:
    """K-fold cross-validation of a recipe on its train + validation rows.

    Splits the data exactly as `kflow.train` does (same seed, same test
    split), puts the test split aside untouched, and cuts the rest into
    `folds` folds with scikit-learn's `StratifiedKFold` (classification) or
    `KFold` (regression). For each fold a fresh model is built, so its
    preprocessing (imputation, scaling, vocabularies) is refitted on that
    fold's training part only; it trains with early stopping on a
    `val_fraction` slice of the training part, and is scored on the held-out
    fold. No checkpoints, backups or TensorBoard logs are written per fold.

    Args:
        recipe: A registered name, `file.py[:Class]`, a YAML config, a Recipe
            class or instance.
        folds: Number of folds K >= 2. Defaults to 5.
        overrides: Hyperparameter values (flat, dotted or grouped keys).
        set_args: `KEY=VALUE` strings (as from `--set`).
        epochs: Shortcut for `overrides={"epochs": N}`. Defaults to `None`.
        seed: Seed of the splits, folds and initialization. Defaults to 0
            (or the YAML file's `seed`).
        out_dir: Where to write `cv.json`, `cv.csv` and `config.yaml`.
            Defaults to `runs_root/<recipe>-cv<K>-<config hash>`.
        runs_root: Parent of the default `out_dir`. Defaults to "runs".
        verbose: 0 silent, 1 one line per fold; "auto" is 1. Defaults to "auto".
        save: Write `out_dir`. Defaults to `True`.

    Returns:
        A `CVResult` with per-fold metrics and their mean and std.

    Example:

    ```python
    result = kflow.cross_validate("breast-cancer-mlp", folds=5, epochs=20)
    print(result.table())
    print(result.mean["accuracy"], result.std["accuracy"])
    ```
    """
    import yaml

    from kflow.data.dataset import concat_datasets
    from kflow.data.splits import kfold_splits
    from kflow.run import RunDir, config_hash
    from kflow.training.trainer import Trainer

    trainer = Trainer(recipe, overrides=overrides, set_args=set_args, epochs=epochs, seed=seed,
                      verbose=0)
    verbose = 1 if verbose == "auto" else int(verbose)
    label, config, seed = trainer.label, trainer.config(), trainer.seed
    splits = trainer.splits()
    pool = concat_datasets([splits.train, splits.val])
    fold_index = kfold_splits(pool, folds, seed)
    splitter = "KFold" if pool.task == "regression" else "StratifiedKFold"
    num_test = len(splits.test) if splits.test is not None else 0
    _say(verbose, f"{folds}-fold cross-validation of {label} ({splitter}) on "
         f"{len(pool)} train + validation rows; the {num_test} test rows are not used")

    results: list[dict[str, Any]] = []
    with _quiet_retracing():
        for fold, (train_idx, held_idx) in enumerate(fold_index, start=1):
            start = time.perf_counter()
            row = {"fold": fold, **_fit_fold(trainer, pool.subset(train_idx),
                                             pool.subset(held_idx))}
            results.append(row)
            shown = ", ".join(f"{k}={row[k]:.4f}" for k in row if k not in _COUNTS)
            _say(verbose, f"fold {fold}/{folds}: {shown} ({row['num_train']} train / "
                 f"{row['num_held_out']} held out, {row['epochs_run']} epochs, "
                 f"{time.perf_counter() - start:.1f}s)")

    names = [k for k in results[0] if k not in _COUNTS]
    mean = {k: float(np.mean([r[k] for r in results])) for k in names}
    std = {k: float(np.std([r[k] for r in results])) for k in names}
    info = {"recipe": config["recipe"], "folds": folds, "splitter": splitter, "seed": seed,
            "num_pool": len(pool), "num_test_not_used": num_test, "task": pool.task}
    result = CVResult(folds=results, mean=mean, std=std, config=config, info=info)
    _say(verbose, f"{folds}-fold CV of {label}: " + ", ".join(
        f"{k} {mean[k]:.4f} ± {std[k]:.4f}" for k in names))
    if save:
        if out_dir is None:
            stem = {k: v for k, v in config.items() if k != "kflow_version"}
            out_dir = Path(runs_root) / f"{label}-cv{folds}-{config_hash(stem)}"
        rd = RunDir(out_dir)
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_text(rd.config, yaml.safe_dump(config, sort_keys=False))
        rd.write_json(rd.cv_json, {**info, "per_fold": results, "mean": mean, "std": std})
        rd.write_text(rd.cv_csv, result.to_csv())
        result.out_dir = rd.path
    return result
