"""tabular: an MLP on any CSV or Parquet table, pointed at by a YAML file.

```yaml
# my.yaml -- then: kflow train my.yaml
recipe: tabular
data: {path: houses.csv, target: price}
```

Classification or regression follows from the target column. Missing values,
scaling and category encoding are fitted on the training split and built
into the model, so the saved model predicts from raw rows (NaN or "" for
missing values; unseen categories are fine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import dense_block
from kflow.data.tabular import COLUMN_TYPES, MISSING_STRATEGIES, TARGET_TASKS, load_table
from kflow.errors import ConfigError


class ColumnMap(hp.HParam):
    """A `{column: value}` mapping, e.g. `{zip: categorical, age: numeric}`.

    From the command line: `--set column_types=zip:categorical,age:numeric`
    (or YAML flow style, `{zip: categorical}`).
    """

    type_name = "column mapping"

    def __init__(self, *, allowed: tuple[str, ...], **kwargs: Any):
        self.allowed = allowed
        super().__init__({}, **kwargs)

    def describe(self) -> str:
        return "a mapping {column: value} with values among: " + ", ".join(self.allowed)

    def parse(self, text: str) -> Any:
        text = text.strip()
        if text.startswith("{") or text.lower() in ("", "none", "null", "{}"):
            return super().parse(text) or {}
        pairs = [p.split(":", 1) for p in text.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            return text  # rejected by validation with the full message
        return {k.strip(): v.strip() for k, v in pairs}

    def _validate(self, value: Any, owner: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self._fail(value, owner)
        out = {}
        for column, choice in value.items():
            if choice not in self.allowed:
                raise self._fail(value, owner, extra=f": {choice!r} (column {column!r}) is "
                                 f"not one of {', '.join(self.allowed)}")
            out[str(column)] = choice
        return out


class ColumnList(hp.HParam):
    """A list of column names, or `None` for "all the others"."""

    type_name = "column list"

    def describe(self) -> str:
        return "a list of column names (or none: all columns but the target)"

    def parse(self, text: str) -> Any:
        if text.strip().startswith("["):
            return super().parse(text)
        if text.strip().lower() in ("none", "null", ""):
            return None
        return [c.strip() for c in text.split(",") if c.strip()]

    def _validate(self, value: Any, owner: str) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise self._fail(value, owner)
        return [str(c) for c in value]


class Tabular(LayerChoices, Recipe):
    """Dense layers on a table's columns, with the preprocessing inside the model."""

    name = "tabular"
    description = ("MLP on any CSV/Parquet file: set path and target (classification or "
                   "regression from the target).")
    # Measured against scikit-learn baselines on the same splits (benchmarks/bench_baselines.py,
    # README "An honest baseline"): two layers of 32 with dropout 0.1 and patience 10 scored
    # 1-4 points below logistic regression / boosted trees on the shipped example,
    # breast-cancer and wine. One layer of 16 units with an L2 penalty (as strong as
    # LogisticRegression's default C=1 on a few hundred rows), a larger step size and more
    # patience is within a point on every bundled table.
    defaults = {"batch_norm": "none", "dropout": 0.0, "epochs": 100, "patience": 30,
                "regularizer": "l2", "regularizer_strength": 0.01, "learning_rate": 3e-3}

    # -- data -----------------------------------------------------------------
    path = hp.Str("", group="data", doc="The CSV or Parquet file, or TFRecord files of "
                  "tf.train.Example rows (a .tfrecord file, a folder or a glob of them; always "
                  "streamed); relative paths: from the YAML file's folder.")
    target = hp.Str("", group="data", doc="The label column.")
    features = ColumnList(None, nullable=True, group="data",
                          doc="Feature columns (none: all columns but target/split_column).")
    column_types = ColumnMap(allowed=COLUMN_TYPES, group="data",
                             doc="Column type overrides (integer: category ids); others "
                             "are inferred.")
    missing = hp.Choice("mean", MISSING_STRATEGIES, group="data",
                        doc="Missing feature values: drop the rows, or fill with the training "
                        "split's mean/median/most frequent value, or a constant.")
    missing_by_column = ColumnMap(allowed=MISSING_STRATEGIES, group="data",
                                  doc="Per-column overrides of `missing`.")
    fill_value = hp.Float(0.0, group="data", doc="The numeric fill value of missing=constant "
                          "(text columns get the category 'missing').")
    drop_missing_labels = hp.Bool(False, group="data", doc="Drop rows without a label "
                                  "(default: an error naming them).")
    split_column = hp.Str(None, nullable=True, group="data",
                          doc="A column of train/val/test per row, used instead of the "
                          "val/test fractions.")
    weight_column = hp.Str(None, nullable=True, group="data",
                           doc="A column of per-row loss weights (>= 0), not a feature.")
    streaming = hp.Bool(False, group="data",
                        doc="Read a CSV file in chunks each epoch instead of loading it "
                        "(tables larger than memory; see kflow.data.streaming). TFRecord "
                        "input is always streamed.")
    sample_rows = hp.Int(100_000, low=100, group="data",
                         doc="Streaming (and TFRecord input): training rows the "
                         "preprocessing is fitted on.",
                         requires={"streaming": (True,)}, strict_requires=False)
    task = hp.Choice("auto", TARGET_TASKS, group="data",
                     doc="auto: classes for text or few whole numbers, else regression.")
    # -- model ----------------------------------------------------------------
    categorical_encoding = hp.Choice(
        "one_hot", ["one_hot", "embedding"], search=True,
        doc="Category columns: one-hot, or a learned embedding (both with an "
        "out-of-vocabulary bucket).")
    embedding_dim = hp.Int(4, low=1, doc="Embedding size per category column.",
                           search=(2, 16))
    hidden_layers = hp.Int(1, low=0, high=16, doc="Hidden dense layers (0: a linear / "
                           "logistic model).", search=(1, 3))
    units = hp.Int(16, low=1, doc="Units per hidden layer.", search=(8, 128, "log"))

    def data_path(self) -> Path:
        """`path`, resolved against the YAML file's folder when relative."""
        return self.resolve_path(self.path)

    def config(self) -> dict[str, dict[str, Any]]:
        cfg = super().config()
        if self.path:  # config.yaml reproduces the run from any folder
            cfg["data"]["path"] = str(self.data_path().resolve())
        return cfg

    def load_data(self):
        if not self.path or not self.target:
            raise ConfigError(
                "The tabular recipe needs `path` (a CSV or Parquet file) and `target` (the "
                "label column). Set them in a YAML file (recipe: tabular, path: data.csv, "
                "target: label) or with --set path=data.csv --set target=label."
            )
        from kflow.data.tfrecord import is_tfrecord_path

        tfrecord = is_tfrecord_path(self.data_path())
        if self.streaming or tfrecord:  # TFRecord files are always streamed
            from kflow.data.streaming import CsvStream
            from kflow.data.tfrecord import TFRecordStream

            return (TFRecordStream if tfrecord else CsvStream)(
                self.data_path(), self.target, features=self.features,
                column_types=self.column_types, missing=self.missing,
                missing_by_column=self.missing_by_column, fill_value=self.fill_value,
                task=self.task, weight_column=self.weight_column,
                drop_missing_labels=self.drop_missing_labels, sample_rows=self.sample_rows,
                seed=self.seed)
        return load_table(
            self.data_path(), self.target, features=self.features,
            column_types=self.column_types, missing=self.missing,
            missing_by_column=self.missing_by_column, fill_value=self.fill_value,
            drop_missing_labels=self.drop_missing_labels, task=self.task,
            split_column=self.split_column, weight_column=self.weight_column,
        )

    def build_backbone(self, x):
        style = self.layer_style()
        for i in range(self.hidden_layers):
            x = dense_block(x, self.units, style, f"hidden_{i}")
        return x
