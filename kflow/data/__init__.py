"""Data: sources, splits, preprocessing that travels with the model, tf.data pipelines.

Sources become a `Dataset`: tables (`load_table`, `load_arrays`),
scikit-learn's bundled datasets (`load_sklearn`), image folders
(`load_image_folder`) and TFDS (`load_tfds`). Splits and cross-validation
folds come from scikit-learn. Preprocessing (`preprocess_columns`,
`augment`) is built from Keras layers fitted on the training split, so
models take raw inputs.

Importing this package is cheap: keras, TensorFlow and pandas load when a
function needs them (the Keras layers `Impute` and `TrainingAugmentation`
load keras on first access).
"""

from typing import Any

from kflow.data.augmentation import AUGMENTATIONS, Augmentations, augment, augmentation_layers
from kflow.data.dataset import Dataset, concat_datasets, infer_task
from kflow.data.images import load_image_folder
from kflow.data.pipeline import make_dataset
from kflow.data.preprocessing import (
    column_inputs,
    column_specs,
    preprocess_columns,
    rows_to_inputs,
    split_preprocessing,
)
from kflow.data.sklearn import SKLEARN_DATASETS, load_sklearn
from kflow.data.splits import Splits, kfold_splits, train_val_test_split
from kflow.data.tabular import COLUMN_TYPES, load_arrays, load_table, sanitize_names
from kflow.data.tfds import load_tfds

__all__ = [
    "AUGMENTATIONS",
    "Augmentations",
    "COLUMN_TYPES",
    "Dataset",
    "Impute",
    "SKLEARN_DATASETS",
    "Splits",
    "TrainingAugmentation",
    "augment",
    "augmentation_layers",
    "column_inputs",
    "column_specs",
    "concat_datasets",
    "infer_task",
    "kfold_splits",
    "load_arrays",
    "load_image_folder",
    "load_sklearn",
    "load_table",
    "load_tfds",
    "make_dataset",
    "preprocess_columns",
    "rows_to_inputs",
    "sanitize_names",
    "split_preprocessing",
    "train_val_test_split",
]


def __getattr__(name: str) -> Any:
    # The Keras layers load keras; only on first access (PEP 562).
    if name == "Impute":
        from kflow.data.impute import Impute

        return Impute
    if name == "TrainingAugmentation":
        from kflow.data.training_augmentation import TrainingAugmentation

        return TrainingAugmentation
    if name in ("streaming", "tfrecord", "sequence", "text"):  # submodules named in the docs
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
