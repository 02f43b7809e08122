"""K-fold cross-validation of one configuration, as a tuning objective.

KerasTuner scores a trial by one validation split. With `--cv K` a trial
trains K models instead, one per fold of the train + validation rows (the
test split stays held out), each with kflow's normal engine and its own run
directory (`fold_0/` ... `fold_{K-1}/`), and is scored by the mean of the
held-out folds' metric.

Each fold is an ordinary `kflow.train` run of the recipe whose data carries a
predefined split (`Dataset.split`: the fold's rows "train", the held-out fold
"val", the test rows "test"), so preprocessing, early stopping and the run
directory behave exactly as in `kflow train`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kflow.recipe.base import Recipe

__all__ = ["CVResult", "cross_validate_config", "fold_recipes"]


@dataclass
class CVResult:
    """Per-fold results of a cross-validated configuration."""

    scores: list[float]
    runs: list[Any] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores))


def _pool_and_test(data: Any, recipe: Recipe, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of train + validation (the pool to fold) and of the test split."""
    from kflow.data.dataset import Dataset
    from kflow.data.splits import train_val_test_split

    n = len(data)
    if getattr(data, "split", None) is not None:
        split = np.asarray(data.split).astype(str)
        return np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    # The same seeded, stratified split the engine makes, computed on row numbers.
    rows = Dataset(x=np.arange(n)[:, None], y=data.y, task=data.task, name=data.name)
    splits = train_val_test_split(rows, 0.0, recipe.hparams["test_fraction"], seed)
    test = splits.test.x[:, 0] if splits.test is not None else np.array([], dtype=int)
    return splits.train.x[:, 0], test


def _kfold(data: Any, pool: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    try:
        from kflow.data.splits import kfold_splits
    except ImportError:  # pragma: no cover - older data layer
        kfold_splits = None
    part = data.subset(pool)
    if kfold_splits is not None:
        folds = kfold_splits(part, folds=k, seed=seed)
    else:  # pragma: no cover
        from sklearn.model_selection import KFold, StratifiedKFold

        splitter = (KFold(k, shuffle=True, random_state=seed) if data.task == "regression"
                    else StratifiedKFold(k, shuffle=True, random_state=seed))
        folds = list(splitter.split(np.arange(len(pool)), part.y))
    return [(pool[tr], pool[held]) for tr, held in folds]


def fold_recipes(recipe: Recipe, k: int, seed: int) -> list[Recipe]:
    """K copies of `recipe` whose data is split into one fold each (loaded once)."""
    base_cls = type(recipe)
    data = recipe.load_data()
    pool, test = _pool_and_test(data, recipe, seed)
    recipes = []
    for i, (train_rows, held_rows) in enumerate(_kfold(data, pool, k, seed)):
        split = np.full(len(data), "", dtype=object)
        split[test] = "test"
        split[train_rows] = "train"
        split[held_rows] = "val"
        keep = np.flatnonzero(split != "")
        fold_data = dataclasses.replace(data.subset(keep), split=split[keep].astype(str))

        def load_data(self, _data=fold_data):
            return _data

        # name "" keeps the fold class out of the recipe registry.
        fold_cls = type(base_cls.__name__, (base_cls,), {
            "name": "", "load_data": load_data, "__module__": base_cls.__module__,
            "__doc__": f"{base_cls.__name__}, fold {i + 1} of {k}.",
        })
        fold = fold_cls(**recipe.hparams)
        fold.config_dir = getattr(recipe, "config_dir", None)
        recipes.append(fold)
    return recipes


def cross_validate_config(
    recipe: Recipe, *, k: int, seed: int, metric: str, run_dir: str | Path,
) -> CVResult:
    """Trains `recipe` on each of `k` folds; scores the held-out fold by `metric`.

    Args:
        recipe: The configuration (a validated recipe).
        k: Number of folds (>= 2).
        seed: Seed of the split, the folds and the training.
        metric: Objective name, e.g. `val_accuracy` (the held-out fold's accuracy).
        run_dir: Parent of the folds' run directories `fold_<i>/`; a finished
            fold is read back, not retrained.
    """
    from kflow.train.engine import train
    from kflow.train.run import load_run
    from kflow.train.run_dir import RunDir

    run_dir = Path(run_dir)
    result = CVResult(scores=[])
    for i, fold in enumerate(fold_recipes(recipe, k, seed)):
        fold_dir = run_dir / f"fold_{i}"
        if RunDir(fold_dir).finished:
            run = load_run(fold_dir, load_model=False)
        else:
            import keras

            keras.backend.clear_session()
            run = train(fold, run_dir=fold_dir, seed=seed, verbose=0)
        result.runs.append(run)
        result.scores.append(float(run.metrics["val"][metric.removeprefix("val_")]))
    return result
