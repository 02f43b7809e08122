"""Tables: CSV / Parquet files, pandas DataFrames and NumPy arrays as a `Dataset`.

A table becomes a dict of named raw columns, one per feature: float32 with
NaN for missing numbers (numeric and boolean columns), strings with "" for
missing categories, int64 with -1 for missing integer category ids. Nothing
is fitted here (no statistics, so no leakage): imputation, scaling and
encoding are fitted on the training split by `kflow.data.preprocess_columns`
and live inside the model, which therefore takes raw rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import ConfigError, DataError, did_you_mean

__all__ = [
    "COLUMN_TYPES",
    "MISSING_STRATEGIES",
    "TARGET_TASKS",
    "MAX_AUTO_CLASSES",
    "load_table",
    "load_arrays",
    "read_table",
    "infer_column_type",
    "infer_target_task",
    "sanitize_names",
]

COLUMN_TYPES = ("numeric", "categorical", "integer", "boolean")
TARGET_TASKS = ("auto", "multiclass", "binary", "regression")
MISSING_STRATEGIES = ("drop", "mean", "median", "most_frequent", "constant")
# An integer target with at most this many distinct values is taken as class ids.
MAX_AUTO_CLASSES = 20
_TRUE = {"true", "yes", "y", "t", "1", "1.0"}
_FALSE = {"false", "no", "n", "f", "0", "0.0"}
_RESERVED = ("preprocessed", "numeric_features", "numeric_impute", "standardize", "minmax")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def _rows(index: Any, limit: int = 10) -> str:
    rows = [int(i) if isinstance(i, (int, np.integer)) else i for i in list(index)[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"{rows}{more}"


def sanitize_names(names: Sequence[Any]) -> list[str]:
    """Model input names for column names: letters, digits and `_`, unique.

    `"previous score"` becomes `previous_score`, `"2nd"` becomes `col_2nd`,
    `"preprocessed"` (a kflow layer name) `preprocessed_column`; a name that is
    taken gets a `_2`, `_3`... suffix. The names are valid Keras
    input names and SavedModel signature keys.
    """
    result: list[str] = []
    for raw in names:
        name = re.sub(r"[^0-9A-Za-z_]+", "_", str(raw)).strip("_") or "col"
        if name[0].isdigit():
            name = f"col_{name}"
        if name in _RESERVED:  # the names of kflow's preprocessing layers
            name = f"{name}_column"
        candidate, i = name, 2
        while candidate in result:
            candidate, i = f"{name}_{i}", i + 1
        result.append(candidate)
    return result


# -- reading -------------------------------------------------------------------
def read_table(source: Any) -> tuple[Any, str]:
    """Reads a CSV/TSV/Parquet file (or takes a DataFrame / dict of columns).

    Returns:
        The `pandas.DataFrame` and a name for messages (the file name).
    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source, "DataFrame"
    if isinstance(source, Mapping):
        return pd.DataFrame(dict(source)), "table"
    if not isinstance(source, (str, Path)):
        raise DataError(
            "load_table() reads a file path, a pandas DataFrame or a dict of columns. "
            f"Got a {type(source).__name__} instead; for NumPy arrays use load_arrays(x, y)."
        )
    path = Path(source)
    if not path.is_file():
        where = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(
            f"Data file '{path}' {where}. Check the path (relative paths in a YAML "
            "config are resolved against the YAML file's folder)."
        )
    suffixes = [s.lower() for s in path.suffixes]
    kind = ("parquet" if suffixes[-1:] in ([".parquet"], [".pq"]) else
            "tsv" if ".tsv" in suffixes else
            "csv" if ".csv" in suffixes or ".txt" in suffixes else None)
    if kind is None:
        raise DataError(
            f"Data file '{path}' has an unsupported type '{''.join(path.suffixes)}'; kflow "
            "reads .csv, .tsv and .parquet files. Export the table to CSV or Parquet."
        )
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if kind == "tsv" else ",",
                                skipinitialspace=True)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"Could not read '{path}' as {kind.upper()}: {first}. Fix the file, or save it "
            "again as a plain CSV (comma-separated, one header row)."
        ) from None
    if frame.empty:
        raise DataError(f"Data file '{path}' has no data rows; it needs a header and rows.")
    return frame, path.name


# -- column types ---------------------------------------------------------------
def _text(series: Any) -> Any:
    """The non-missing values of a column as stripped strings (index kept)."""
    values = series[series.notna()].astype(str).str.strip()
    return values[values != ""]


def infer_column_type(series: Any, *, column: str = "", source: str = "table") -> str:
    """Guesses a column's type: "numeric", "boolean" or "categorical".

    Numbers are numeric; true/false and yes/no columns boolean; other text
    categorical. A text column whose values are mostly numbers but not all is
    an error naming the values that do not parse, since it is most likely a
    numeric column with typos or missing-value markers such as "?".
    """
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    values = _text(series)
    lowered = set(values.str.lower().unique())
    if lowered and lowered <= (_TRUE | _FALSE) and not lowered <= {"1", "0", "1.0", "0.0"}:
        return "boolean"
    parsed = pd.to_numeric(values, errors="coerce")
    if len(values) and parsed.notna().all():
        return "numeric"
    if len(values) and parsed.notna().mean() >= 0.5:
        raise _unparseable(values[parsed.isna()], column, source, "numeric",
                           "the column looks numeric but")
    return "categorical"


def _unparseable(bad: Any, column: str, source: str, kind: str, lead: str = "") -> DataError:
    shown = ", ".join(f"{v!r} (row {i})" for i, v in list(bad.items())[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    other = "categorical" if kind != "categorical" else "numeric"
    return DataError(
        f"Column '{column}' of '{source}' cannot be parsed as {kind}: {lead + ' ' if lead else ''}"
        f"{shown}{more} {'are' if len(bad) > 1 else 'is'} not valid. Fix those values (leave a "
        f"cell empty for a missing value), or set column_types: {{{column}: {other}}}."
    )


def _convert(series: Any, kind: str, column: str, source: str) -> np.ndarray:
    """The raw model values of one column (see the module docstring)."""
    import pandas as pd

    present = series.notna() & (series.astype(str).str.strip() != "")
    if kind == "numeric":
        parsed = pd.to_numeric(series.where(present), errors="coerce")
        bad = series[present & parsed.isna()]
        if len(bad):
            raise _unparseable(bad, column, source, "numeric")
        return parsed.to_numpy(dtype="float32", na_value=np.nan)
    if kind == "integer":
        parsed = pd.to_numeric(series.where(present), errors="coerce")
        bad = series[present & (parsed.isna() | (parsed.fillna(0) % 1 != 0)
                                | (parsed.fillna(0) < 0))]
        if len(bad):
            raise _unparseable(bad, column, source, "integer (category ids >= 0)")
        return parsed.fillna(-1).to_numpy(dtype="int64")
    if kind == "boolean":
        text = series.where(present).astype(str).str.strip().str.lower()
        out = np.full(len(series), np.nan, dtype="float32")
        is_true, is_false = text.isin(_TRUE).to_numpy(), text.isin(_FALSE).to_numpy()
        out[is_true], out[is_false] = 1.0, 0.0
        bad = series[present & ~(text.isin(_TRUE) | text.isin(_FALSE))]
        if len(bad):
            raise _unparseable(bad, column, source, "boolean (true/false, yes/no, 1/0)")
        return out
    values = series.where(present)
    if pd.api.types.is_float_dtype(series) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")  # 3.0 -> "3"
    return np.array(["" if pd.isna(v) else str(v).strip() for v in values], dtype=object)


def _missing_mask(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind in "iu":
        return values == -1
    return values == ""


# -- the target -----------------------------------------------------------------
def infer_target_task(series: Any) -> str:
    """Chooses the task from the target column.

    Text and booleans are classes (binary with two, else multiclass); whole
    numbers with at most `MAX_AUTO_CLASSES` distinct values are class ids;
    other numbers are a regression target.
    """
    import pandas as pd

    values = series.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "binary" if values.nunique() == 2 else "multiclass"
    if (values % 1 == 0).all() and values.nunique() <= MAX_AUTO_CLASSES:
        return "binary" if values.nunique() == 2 else "multiclass"
    return "regression"


def _encode_target(series: Any, task: str, target: str, source: str):
    import pandas as pd

    if task == "auto":
        task = infer_target_task(series)
    if task == "regression":
        parsed = pd.to_numeric(series, errors="coerce")
        bad = series[parsed.isna()]
        if len(bad):
            shown = ", ".join(f"{v!r} (row {i})" for i, v in list(bad.items())[:3])
            raise DataError(
                f"Target column '{target}' of '{source}' cannot be parsed as numbers for "
                f"task=regression: {shown}. Fix those values, or set task to binary or "
                "multiclass."
            )
        return parsed.to_numpy(dtype="float32"), task, None
    values = series
    if pd.api.types.is_float_dtype(values) and (values % 1 == 0).all():
        values = values.astype("int64")
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        values = values.astype(str).str.strip()
    classes, codes = np.unique(values.to_numpy(), return_inverse=True)
    class_names = [str(c) for c in classes]
    if len(classes) < 2:
        raise DataError(
            f"Target column '{target}' of '{source}' has one class only ({class_names[0]!r}); "
            "classification needs at least two. Check the file or the `target` column."
        )
    if task == "binary" and len(classes) != 2:
        raise DataError(
            f"Target column '{target}' of '{source}' has {len(classes)} classes, so it cannot "
            "be task=binary; set task to multiclass (or auto)."
        )
    return codes.astype("int64"), task, class_names


# -- the loader -----------------------------------------------------------------
def _check_names(wanted: Sequence[str], available: Sequence[str], what: str,
                 source: str) -> None:
    for name in wanted:
        if name not in available:
            raise DataError(
                f"{what} '{name}' is not a column of '{source}'"
                f"{did_you_mean(str(name), [str(a) for a in available])}. "
                f"Available columns: {', '.join(map(str, available))}."
            )


def _check_choices(mapping: Mapping[str, str], allowed: Sequence[str], what: str) -> None:
    for column, value in mapping.items():
        if value not in allowed:
            raise ConfigError(
                f"The {what} of column '{column}' must be one of: {', '.join(allowed)}. "
                f"Got {value!r} instead{did_you_mean(str(value), allowed)}."
            )


def load_table(
    source: Any,
    target: str,
    *,
    features: Sequence[str] | None = None,
    column_types: Mapping[str, str] | None = None,
    missing: str = "mean",
    missing_by_column: Mapping[str, str] | None = None,
    fill_value: float = 0.0,
    drop_missing_labels: bool = False,
    task: str = "auto",
    split_column: str | None = None,
    name: str | None = None,
    weight_column: str | None = None,
) -> Dataset:
    """Loads a CSV / Parquet file or a DataFrame as a `Dataset` of raw columns.

    Column types are inferred (numbers: numeric; true/false, yes/no: boolean;
    other text: categorical) and can be overridden per column. The task
    follows from the target (text or few whole numbers: classification; other
    numbers: regression) unless `task` is given. Missing cells stay missing
    (NaN, "" or -1): the model fills them in with statistics of the training
    split, chosen by `missing` (recorded here, fitted by
    `kflow.data.preprocess_columns`). With "drop", rows with a missing value
    are dropped instead.

    Args:
        source: Path of a .csv, .tsv or .parquet file, a pandas DataFrame or a
            dict of columns.
        target: The label column.
        features: The feature columns. Defaults to all other columns (except
            `split_column`).
        column_types: Type overrides, `{column: "numeric" | "categorical" |
            "integer" | "boolean"}` ("integer": integer category ids).
            Defaults to `None` (all inferred).
        missing: How to handle missing feature values: "drop" (drop those
            rows), "mean", "median", "most_frequent" or "constant" (fill in).
            Text columns use "most_frequent" for mean/median. Defaults to "mean".
        missing_by_column: Per-column overrides of `missing`. Defaults to `None`.
        fill_value: The fill value of "constant" for numeric columns (text
            columns get the category "missing"). Defaults to 0.
        drop_missing_labels: Drop rows whose label is missing instead of
            raising an error naming them. Defaults to `False`.
        task: "auto", "multiclass", "binary" or "regression". Defaults to "auto".
        split_column: A column assigning each row to "train", "val" or "test"
            (also "validation", "dev"...), used instead of random fractions.
            Defaults to `None`.
        name: Name for logs and messages. Defaults to the file name.
        weight_column: A numeric column of per-row loss weights (>= 0), kept
            out of the features (`Dataset.sample_weight`). Defaults to `None`.

    Returns:
        A `Dataset` whose `x` is a dict of raw columns keyed by model input
        name (see `sanitize_names`).

    Example:

    ```python
    data = kflow.data.load_table("recipes/example_tabular/students.csv", "passed",
                                 missing="median", column_types={"school": "categorical"})
    data.task, data.class_names, sorted(data.x)
    ```
    """
    frame, source_name = read_table(source)
    source_name = name or source_name
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1).reset_index(drop=True)
    if task not in TARGET_TASKS:
        raise ConfigError(f"`task` must be one of: {', '.join(TARGET_TASKS)}. Got {task!r} "
                          f"instead{did_you_mean(str(task), TARGET_TASKS)}.")
    if not target:
        raise ConfigError(
            f"Name the label column of '{source_name}' with `target`. "
            f"Available columns: {', '.join(columns)}."
        )
    _check_names([target], columns, "Target column", source_name)
    if split_column is not None:
        _check_names([split_column], columns, "Split column", source_name)
    if weight_column is not None:
        _check_names([weight_column], columns, "Weight column", source_name)
    if features is None:
        features = [c for c in columns if c not in (target, split_column, weight_column)]
    features = [str(f) for f in features]
    _check_names(features, columns, "Feature column", source_name)
    for special, what in ((target, "target"), (split_column, "split column"),
                          (weight_column, "weight column")):
        if special in features:
            raise ConfigError(
                f"Column '{special}' is the {what} and cannot also be a feature; remove it "
                "from `features`."
            )
    if not features:
        raise ConfigError(f"'{source_name}' has no feature columns besides the target.")
    column_types = dict(column_types or {})
    missing_by_column = dict(missing_by_column or {})
    _check_names(list(column_types), features, "column_types entry", source_name)
    _check_names(list(missing_by_column), features, "missing_by_column entry",
                 source_name)
    _check_choices(column_types, COLUMN_TYPES, "type")
    _check_choices({"(all)": missing, **missing_by_column}, MISSING_STRATEGIES,
                   "missing-value strategy")

    # Labels: missing ones are an error naming the rows, or dropped on request.
    labels = frame[target]
    label_missing = labels.isna() | (labels.astype(str).str.strip() == "")
    if label_missing.any():
        rows = np.flatnonzero(label_missing.to_numpy())
        if not drop_missing_labels:
            raise DataError(
                f"Target column '{target}' of '{source_name}' has {len(rows)} missing "
                f"value(s) at rows {_rows(rows)} (0-based, header not counted); fill them "
                "in, or set drop_missing_labels: true to drop those rows."
            )
        frame = frame[~label_missing].reset_index(drop=True)
        if frame.empty:
            raise DataError(f"Every label of column '{target}' in '{source_name}' is missing.")

    keys = sanitize_names(features)
    x: dict[str, np.ndarray] = {}
    specs: dict[str, dict[str, Any]] = {}
    for key, column in zip(keys, features, strict=True):
        series = frame[column]
        kind = column_types.get(column) or infer_column_type(
            series, column=column, source=source_name)
        values = _convert(series, kind, column, source_name)
        if _missing_mask(values).all():
            raise DataError(
                f"Feature column '{column}' of '{source_name}' has no values: all "
                f"{len(values)} are missing. Remove it from `features`, or fill it in."
            )
        x[key] = values
        specs[key] = {"column": column, "kind": kind,
                      "missing": missing_by_column.get(column, missing),
                      "fill_value": float(fill_value)}

    drop = np.zeros(len(frame), dtype=bool)
    for key, spec in specs.items():
        if spec["missing"] == "drop":
            drop |= _missing_mask(x[key])
    if drop.any():
        if drop.all():
            raise DataError(
                f"Every row of '{source_name}' has a missing value in a column whose "
                "missing-value strategy is 'drop'; fill them in instead (missing: mean, "
                "median, most_frequent or constant)."
            )
        keep = ~drop
        x = {k: v[keep] for k, v in x.items()}
        frame = frame[keep].reset_index(drop=True)

    y, task, class_names = _encode_target(frame[target], task, target, source_name)
    split = None
    if split_column is not None:
        raw = frame[split_column].astype(str).str.strip().str.lower()
        split = raw.map(_SPLIT_ALIASES)
        bad = frame[split_column][split.isna()]
        if len(bad):
            raise DataError(
                f"Split column '{split_column}' of '{source_name}' has values "
                f"{sorted(set(map(str, bad)))[:5]} (e.g. row {bad.index[0]}); allowed: "
                "train, val (or validation), test."
            )
        split = split.to_numpy(dtype=object).astype(str)
    meta = {"source": str(source) if isinstance(source, (str, Path)) else source_name,
            "target": target, "columns": specs, "split_column": split_column,
            "rows_dropped": int(drop.sum() + label_missing.sum())}
    weights = None
    if weight_column is not None:
        import pandas as pd

        weights = pd.to_numeric(frame[weight_column], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
        if len(bad):
            raise DataError(
                f"Weight column '{weight_column}' of '{source_name}' needs a number >= 0 in "
                f"every row; rows {_rows(bad)} (0-based) are missing, negative or not numbers.")
        meta["weight_column"] = weight_column
    return Dataset(x, y, task=task, class_names=class_names, feature_names=keys,
                   name=source_name, meta=meta, split=split, sample_weight=weights)


def load_arrays(
    x: Any,
    y: Any,
    *,
    feature_names: Sequence[str] | None = None,
    name: str = "arrays",
    **kwargs: Any,
) -> Dataset:
    """Loads NumPy features and labels as a table (named raw columns).

    Missing values (NaN) are then filled in by the model, like a CSV's. For
    complete numeric arrays `kflow.data.Dataset(x, y)` is enough.

    Args:
        x: A 2-D array (rows x features).
        y: The labels (class names, class ids or numbers).
        feature_names: Column names. Defaults to `x0, x1, ...`.
        name: Name for logs and messages. Defaults to "arrays".
        **kwargs: Passed to `load_table` (`column_types`, `missing`, `task`...).

    Example:

    ```python
    x = np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 1.0], [4.0, 0.5]])
    data = kflow.data.load_arrays(x, np.array(["a", "b", "a", "b"]))
    ```
    """
    import pandas as pd

    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(
            f"load_arrays() needs a 2-D feature array (rows x features). Got shape "
            f"{x.shape}; reshape it, or use kflow.data.Dataset(x, y) for images."
        )
    names = list(feature_names) if feature_names is not None else [
        f"x{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise DataError(f"Got {len(names)} feature_names for {x.shape[1]} feature columns.")
    frame = pd.DataFrame(x, columns=names)
    target = "target" if "target" not in names else "__target__"
    frame[target] = np.asarray(y)
    return load_table(frame, target, name=name, **kwargs)
