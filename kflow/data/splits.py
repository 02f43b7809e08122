"""Train / validation / test splits and k-fold cross-validation folds.

Random splits are stratified by class for classification and seeded, with
scikit-learn's `train_test_split`; a dataset that carries its own split
(`Dataset.split`, e.g. from a split column of a CSV file) is split as given.
Cross-validation folds come from scikit-learn's `StratifiedKFold` (classification)
or `KFold` (regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import DataError

__all__ = ["Splits", "SPLIT_NAMES", "train_val_test_split", "kfold_splits"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Splits:
    """The three splits of a dataset."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None


def _split_source(data: Dataset) -> str:
    column = data.meta.get("split_column")
    return f"split column '{column}' of '{data.name}'" if column else f"dataset '{data.name}'"


def _class_label(data: Dataset, class_id: int) -> str:
    names = data.class_names
    return repr(names[class_id]) if names is not None and class_id < len(names) else str(class_id)


def _check_train_has_every_class(data: Dataset, train: np.ndarray, how: str) -> None:
    if data.task == "regression":
        return
    missing = np.setdiff1d(np.unique(data.y), np.unique(data.y[train]))
    if len(missing):
        labels = ", ".join(_class_label(data, int(c)) for c in missing)
        raise DataError(
            f"The training split of {_split_source(data)} has no samples of class(es) "
            f"{labels}; {how}."
        )


def _predefined_split(data: Dataset) -> Splits:
    split = np.asarray(data.split).astype(str)
    unknown = sorted(set(np.unique(split)) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(
            f"The {_split_source(data)} has values {unknown}; allowed: train, val, test."
        )
    index = {name: np.flatnonzero(split == name) for name in SPLIT_NAMES}
    if not len(index["train"]):
        raise DataError(
            f"The {_split_source(data)} marks no row as 'train'; mark the rows to "
            "train on with 'train'."
        )
    _check_train_has_every_class(
        data, index["train"], "mark some rows of each class as 'train'"
    )
    return Splits(
        train=data.subset(index["train"]),
        val=data.subset(index["val"]) if len(index["val"]) else None,
        test=data.subset(index["test"]) if len(index["test"]) else None,
    )


def train_val_test_split(
    data: Dataset, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> Splits:
    """Splits `data` with scikit-learn, stratified by class for classification.

    A dataset with a predefined split (`data.split`, values "train", "val",
    "test") is split as given and the fractions are ignored.

    Args:
        data: The full dataset.
        val_fraction: Fraction for validation. Defaults to 0.15.
        test_fraction: Fraction for the final test. Defaults to 0.15.
        seed: Shuffling seed; the same seed gives the same split. Defaults to 0.

    Example:

    ```python
    splits = kflow.data.train_val_test_split(kflow.data.load_sklearn("iris"), seed=0)
    len(splits.train), len(splits.val), len(splits.test)  # (104, 23, 23)
    ```
    """
    from sklearn.model_selection import train_test_split

    if data.split is not None:
        return _predefined_split(data)
    index = np.arange(len(data))
    stratify = data.y if data.task != "regression" else None

    def _split(idx: np.ndarray, fraction: float, strat: np.ndarray | None):
        if fraction <= 0:
            return idx, np.array([], dtype=int)
        try:
            return train_test_split(idx, test_size=fraction, random_state=seed,
                                    stratify=None if strat is None else strat[idx])
        except ValueError as exc:
            raise DataError(
                f"Cannot split dataset '{data.name}' ({len(idx)} rows) with fraction "
                f"{fraction}: {exc} Use more data or smaller val/test fractions."
            ) from None

    rest, test = _split(index, test_fraction, stratify)
    rel_val = val_fraction / (1.0 - test_fraction) if test_fraction < 1 else 0
    train, val = _split(rest, rel_val, stratify)
    _check_train_has_every_class(data, train, "use more data or smaller val/test fractions")
    return Splits(
        train=data.subset(train),
        val=data.subset(val) if len(val) else None,
        test=data.subset(test) if len(test) else None,
    )


def kfold_splits(
    data: Dataset, folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The `(train_index, held_out_index)` pairs of `folds` folds.

    Classification uses scikit-learn's `StratifiedKFold` (every fold keeps the
    class proportions), regression `KFold`; both shuffle with `seed`.

    Args:
        data: The rows to cross-validate (train + validation, never the test split).
        folds: Number of folds K >= 2. Defaults to 5.
        seed: Shuffling seed. Defaults to 0.

    Example:

    ```python
    for train_idx, held_idx in kflow.data.kfold_splits(data, folds=5):
        fold_train, fold_held_out = data.subset(train_idx), data.subset(held_idx)
    ```
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise DataError(
            f"Cross-validation needs folds >= 2 (an int). Got folds={folds!r}; use e.g. 5."
        )
    if folds > len(data):
        raise DataError(
            f"Cannot make {folds} folds of the {len(data)} rows of '{data.name}'; "
            f"use folds <= {len(data)}."
        )
    index = np.arange(len(data))
    if data.task == "regression":
        return list(KFold(folds, shuffle=True, random_state=seed).split(index))
    classes, counts = np.unique(data.y, return_counts=True)
    if counts.min() < folds:
        small = ", ".join(f"{_class_label(data, int(c))} ({n} rows)"
                          for c, n in zip(classes, counts, strict=True) if n < folds)
        raise DataError(
            f"Cannot make {folds} stratified folds of '{data.name}': class(es) {small} "
            f"have fewer rows than folds, so some folds would leave them out; use "
            f"folds <= {int(counts.min())} or more data."
        )
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(index, data.y))
