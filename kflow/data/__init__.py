"""Data: datasets, splits and tf.data pipelines."""

from kflow.data.dataset import Dataset, infer_task
from kflow.data.pipeline import make_dataset
from kflow.data.sklearn import SKLEARN_DATASETS, load_sklearn
from kflow.data.splits import Splits, train_val_test_split

__all__ = [
    "Dataset",
    "infer_task",
    "make_dataset",
    "load_sklearn",
    "SKLEARN_DATASETS",
    "Splits",
    "train_val_test_split",
]
