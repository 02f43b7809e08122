"""Preprocessing of tabular columns as Keras layers, fitted on the training split.

`preprocess_columns` turns the named raw inputs of a model (one `keras.Input`
per column, from `column_inputs`) into one feature vector:

    numeric and boolean columns -> Concatenate -> impute -> Normalization
    each category column        -> impute -> StringLookup / IntegerLookup
                                   (one-hot, or int -> Embedding)
    all parts                   -> Concatenate(name="preprocessed")

Every statistic (fill values, mean and variance, min and max, vocabularies)
comes from the training split only, computed by scikit-learn
(`SimpleImputer`, `StandardScaler`, `MinMaxScaler`) or by the lookup layers'
`adapt()`, and is
stored in the layers, so the saved and exported model takes raw rows:
NaN for a missing number, "" for a missing category, unseen categories go to
an out-of-vocabulary bucket. Imputation is `kflow.data.impute.impute`:
built-in `keras.ops` (`where(isnan(x), fill, x)`), so the model holds only
Keras' own layers and operations and plain `keras.saving.load_model` opens it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kflow.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from kflow.data.dataset import Dataset

__all__ = [
    "scaling_layer",
    "CATEGORICAL_ENCODINGS",
    "SCALINGS",
    "column_specs",
    "column_inputs",
    "preprocess_columns",
    "rows_to_inputs",
    "split_preprocessing",
]

SCALINGS = ("standard", "minmax", "none")
CATEGORICAL_ENCODINGS = ("one_hot", "embedding")
_NUMERIC_KINDS = ("numeric", "boolean")


def column_specs(data: Dataset) -> dict[str, dict[str, Any]]:
    """Kind and missing-value strategy of each column of a tabular dataset.

    From `data.meta["columns"]` (written by `load_table`), else inferred from
    the array dtypes: floats and ints numeric, bools boolean, text categorical.
    """
    if not isinstance(data.x, dict):
        raise DataError(
            f"Dataset '{data.name}' is not tabular: its features are a "
            f"{type(data.x).__name__}, not a dict of named columns."
        )
    known = data.meta.get("columns") or {}
    specs = {}
    for key, values in data.x.items():
        spec = dict(known.get(key) or {})
        if "kind" not in spec:
            kind = np.asarray(values).dtype.kind
            spec["kind"] = ("boolean" if kind == "b" else
                            "numeric" if kind in "fiu" else "categorical")
        spec.setdefault("missing", "mean")
        spec.setdefault("fill_value", 0.0)
        specs[key] = spec
    return specs


def column_inputs(data: Dataset) -> dict[str, keras.KerasTensor]:
    """One named `keras.Input` of shape (1,) per column of a tabular dataset.

    Numeric and boolean columns are float32 inputs, category columns string
    (or int64 for integer category ids) inputs. The input names are the
    dataset's column keys.
    """
    import keras

    dtypes = {"numeric": "float32", "boolean": "float32", "categorical": "string",
              "integer": "int64"}
    return {key: keras.Input(shape=(1,), name=key, dtype=dtypes[spec["kind"]])
            for key, spec in column_specs(data).items()}


def _check_option(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"`{what}` must be one of: {', '.join(allowed)}. Got {value!r} instead.")


def _fit_strategy(spec: dict[str, Any]) -> str:
    # Rows with missing values were dropped for training; a missing value at
    # prediction time still gets a sensible fill: the training mean.
    return "mean" if spec["missing"] == "drop" else spec["missing"]


def _column_values(train: Dataset, key: str, spec: dict[str, Any]) -> np.ndarray:
    values = np.asarray(train.x[key])
    if spec["kind"] in _NUMERIC_KINDS:
        values = values.astype("float32")
        empty = np.isnan(values).all()
    elif spec["kind"] == "integer":
        values = values.astype("int64")
        empty = (values == -1).all()
    else:
        values = values.astype(object)
        empty = (values == "").all()
    if empty:
        column = spec.get("column", key)
        raise DataError(
            f"Feature column '{column}' of '{train.name}' has no values in the training "
            f"split (all {len(values)} are missing), so nothing can be fitted; remove it "
            "from `features`, or fill it in."
        )
    return values


def scaling_layer(values: Any, scaling: str) -> Any:
    """A `Normalization` layer scaling features as fitted on `values` (the training split).

    The one implementation of the `scaling` hyperparameter, for arrays and tables:
    "standard" (scikit-learn's `StandardScaler`: mean 0, std 1; a feature
    constant on the training split gets scale 1, not 1/epsilon), "minmax"
    (`MinMaxScaler`: the training split's min and max map to 0 and 1), or
    "none" (returns `None`). The statistics are layer weights of a built-in
    layer, so they travel with the saved and exported model.

    Args:
        values: Training values, features on the last axis (any leading axes).
        scaling: "standard", "minmax" or "none".

    Example:

    ```python
    layer = scaling_layer(x_train, "standard")
    x = layer(inputs) if layer is not None else inputs
    ```
    """
    import keras

    if scaling == "none":
        return None
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}. Got {scaling!r}.")
    flat = np.asarray(values, dtype="float64")
    flat = flat.reshape(-1, flat.shape[-1]) if flat.ndim > 1 else flat.reshape(-1, 1)
    if scaling == "standard":
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(flat)
        return keras.layers.Normalization(axis=-1, mean=scaler.mean_,
                                          variance=np.square(scaler.scale_), name="standardize")
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler().fit(flat)
    span = np.where(scaler.data_range_ > 0, scaler.data_range_, 1.0)
    return keras.layers.Normalization(axis=-1, mean=scaler.data_min_, variance=np.square(span),
                                      name="minmax")


def preprocess_columns(
    inputs: dict[str, Any],
    train: Dataset,
    *,
    scaling: str = "standard",
    categorical_encoding: str = "one_hot",
    embedding_dim: int = 8,
    seed: int | None = None,
) -> Any:
    """Imputes, scales and encodes named raw inputs, fitted on `train` only.

    Args:
        inputs: The model's inputs, `{column key: keras.Input}` (see
            `column_inputs`).
        train: The training split (a tabular `Dataset`); nothing else is seen.
        scaling: Numeric scaling, as a `Normalization` layer holding
            scikit-learn's statistics of the training split: "standard"
            (`StandardScaler`: mean 0, std 1), "minmax" (`MinMaxScaler`:
            training min -> 0, max -> 1) or "none".
            Defaults to "standard".
        categorical_encoding: "one_hot" (a lookup with one out-of-vocabulary
            slot) or "embedding" (a lookup then a trainable `Embedding` of
            `embedding_dim`). Defaults to "one_hot".
        embedding_dim: Embedding size per category column. Defaults to 8.
        seed: Seed of the embedding initializer. Defaults to `None`.

    Returns:
        The preprocessed feature tensor, from a layer named "preprocessed".

    Example:

    ```python
    data = kflow.data.load_table("students.csv", "passed")
    inputs = kflow.data.column_inputs(data)
    x = kflow.data.preprocess_columns(inputs, data, scaling="minmax")
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)  # takes raw rows
    ```
    """
    import keras

    from kflow.data.impute import fit_impute, impute

    _check_option(scaling, SCALINGS, "scaling")
    _check_option(categorical_encoding, CATEGORICAL_ENCODINGS, "categorical_encoding")
    specs = column_specs(train)
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise DataError(f"Model inputs {unknown} are not columns of dataset '{train.name}'.")
    parts = []

    numeric = [k for k in inputs if specs[k]["kind"] in _NUMERIC_KINDS]
    if numeric:
        values = np.stack([_column_values(train, k, specs[k]) for k in numeric], axis=1)
        fills = [
            fit_impute(values[:, [i]], _fit_strategy(specs[k]), specs[k]["fill_value"])[0]
            for i, k in enumerate(numeric)
        ]
        x = (keras.layers.Concatenate(name="numeric_features")([inputs[k] for k in numeric])
             if len(numeric) > 1 else inputs[numeric[0]])
        x = impute(x, fills)
        imputed = np.where(np.isnan(values), np.asarray(fills, "float32"), values)
        layer = scaling_layer(imputed, scaling)
        parts.append(layer(x) if layer is not None else x)

    for key in inputs:
        spec = specs[key]
        if spec["kind"] in _NUMERIC_KINDS:
            continue
        values = _column_values(train, key, spec)
        fill = fit_impute(values[:, None], _fit_strategy(spec))[0]
        x = impute(inputs[key], fill)
        mode = "one_hot" if categorical_encoding == "one_hot" else "int"
        if spec["kind"] == "integer":
            imputed = np.where(values == -1, fill, values)
            lookup = keras.layers.IntegerLookup(
                num_oov_indices=1, mask_token=None, output_mode=mode, name=f"{key}_lookup")
            lookup.adapt(imputed[imputed != -1] if (imputed != -1).any() else imputed)
        else:
            imputed = np.where(values == "", fill, values).astype(str)
            lookup = keras.layers.StringLookup(
                num_oov_indices=1, mask_token=None, output_mode=mode, name=f"{key}_lookup")
            lookup.adapt(imputed)
        x = lookup(x)
        if categorical_encoding == "embedding":
            x = keras.layers.Embedding(
                lookup.vocabulary_size(), embedding_dim, name=f"{key}_embedding",
                embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
            )(x)
            x = keras.layers.Flatten(name=f"{key}_flatten")(x)
        parts.append(x)

    if not parts:
        raise DataError(f"Dataset '{train.name}' has no feature columns to preprocess.")
    if len(parts) == 1:
        return keras.layers.Identity(name="preprocessed")(parts[0])
    return keras.layers.Concatenate(name="preprocessed")(parts)


def split_preprocessing(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Splits a model at its "preprocessed" layer into (preprocessor, network).

    `preprocessor` maps raw inputs to the preprocessed feature vector (use it
    in a tf.data pipeline: `ds.map(lambda x, y: (preprocessor(x), y))`), and
    `network` maps that vector to the outputs; `network(preprocessor(x))`
    equals `model(x)`.

    Args:
        model: A functional model with a layer named "preprocessed" (as built
            by `preprocess_columns`).
    """
    import keras

    try:
        layer = model.get_layer("preprocessed")
    except ValueError:
        raise DataError(
            f"Model '{model.name}' has no layer named 'preprocessed'; only models built "
            "with kflow.data.preprocess_columns can be split."
        ) from None
    preprocessor = keras.Model(model.input, layer.output, name="preprocessor")
    network = keras.Model(layer.output, model.output, name="network")
    return preprocessor, network


def rows_to_inputs(rows: Any, model: keras.Model) -> dict[str, np.ndarray]:
    """Converts raw rows to the input dict of a model built on named columns.

    Keras cannot take NumPy unicode arrays or `None`; this gives each input
    the array it expects: float32 with NaN for a missing number, object
    strings with "" for a missing category, int64 with -1 for a missing
    category id.

    Args:
        rows: A list of `{column: value}` dicts, a pandas DataFrame or a dict
            of column lists. Columns are named as in the file ("previous
            score") or as model inputs ("previous_score"); `None` and NaN are
            missing values.
        model: The model (its inputs give the names and dtypes).

    Returns:
        `{input name: array}` for `model.predict` or `model(...)`.

    Example:

    ```python
    rows = [{"hours_studied": None, "school": "Atlantis", ...}]
    model.predict(kflow.data.rows_to_inputs(rows, model))
    ```
    """
    import pandas as pd

    from kflow.data.tabular import sanitize_names

    frame = rows if isinstance(rows, pd.DataFrame) else (
        pd.DataFrame(rows) if not isinstance(rows, dict) else pd.DataFrame(
            {k: np.ravel(np.asarray(v, dtype=object)) for k, v in rows.items()}))
    frame = frame.rename(columns={c: sanitize_names([c])[0] for c in frame.columns
                                  if c not in [t.name for t in model.inputs]})
    wanted = {t.name: str(t.dtype) for t in model.inputs}
    absent = [name for name in wanted if name not in frame.columns]
    if absent:
        raise DataError(
            f"The rows lack column(s) {absent} that model '{model.name}' takes; give every "
            "column (None for a missing value)."
        )
    out: dict[str, np.ndarray] = {}
    for name, dtype in wanted.items():
        column = frame[name]
        if dtype == "string":
            out[name] = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v))
                                  else str(v) for v in column], dtype=object)
        elif dtype.startswith("int"):
            out[name] = pd.to_numeric(column, errors="coerce").fillna(-1).to_numpy("int64")
        else:
            values = column.map(lambda v: {"true": 1.0, "yes": 1.0, "false": 0.0, "no": 0.0}
                                .get(v.strip().lower(), v) if isinstance(v, str) else v)
            parsed = pd.to_numeric(values, errors="coerce")
            bad = values[values.notna() & parsed.isna()]
            if len(bad):
                raise DataError(
                    f"Column '{name}' of the rows must hold numbers; got {bad.iloc[0]!r} "
                    f"(row {bad.index[0]}). Use None for a missing value."
                )
            out[name] = parsed.to_numpy("float32")
    return out
