"""Train / validation / test splits (stratified for classification)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import DataError

__all__ = ["Splits", "train_val_test_split"]


@dataclass
class Splits:
    """The three splits of a dataset."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None


def train_val_test_split(
    data: Dataset, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> Splits:
    """Splits `data` with scikit-learn, stratified by class for classification.

    Args:
        data: The full dataset.
        val_fraction: Fraction for validation. Defaults to 0.15.
        test_fraction: Fraction for the final test. Defaults to 0.15.
        seed: Shuffling seed; the same seed gives the same split. Defaults to 0.
    """
    from sklearn.model_selection import train_test_split

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
    if stratify is not None:
        classes = np.unique(data.y)
        missing = np.setdiff1d(classes, np.unique(data.y[train]))
        if len(missing):
            raise DataError(
                f"The training split of '{data.name}' has no samples of class(es) "
                f"{missing.tolist()}; use more data or smaller val/test fractions."
            )
    return Splits(
        train=data.subset(train),
        val=data.subset(val) if len(val) else None,
        test=data.subset(test) if len(test) else None,
    )
