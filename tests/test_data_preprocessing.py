"""Preprocessing inside the model: no leakage, raw-input round trips, encodings."""

import json
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import kflow
from kflow.data import (
    column_inputs,
    load_table,
    make_dataset,
    preprocess_columns,
    rows_to_inputs,
    split_preprocessing,
    train_val_test_split,
)
from kflow.data.impute import imputed_fill_values
from kflow.errors import DataError
from kflow.recipe.overrides import resolve_recipe
from tests.conftest import REPO

EXAMPLE_YAML = REPO / "recipes" / "example_tabular" / "example.yaml"
EXAMPLE_CSV = REPO / "recipes" / "example_tabular" / "students.csv"
NUMERIC = ["hours_studied", "sleep_hours", "previous score", "tutoring", "absences"]
# Raw rows as a client sends them: a missing number, an unseen and a missing category.
RAW_ROWS = [
    {"hours_studied": None, "sleep_hours": 7.5, "previous score": 81, "school": "Atlantis",
     "tutoring": "yes", "absences": 1},
    {"hours_studied": 2.0, "sleep_hours": 5.0, "previous score": None, "school": None,
     "tutoring": "no", "absences": 9},
    {"hours_studied": 11.0, "sleep_hours": 8.0, "previous score": 90, "school": "Hilltop",
     "tutoring": "no", "absences": 0},
]


def _recipe(*set_args):
    recipe, _ = resolve_recipe(str(EXAMPLE_YAML), set_args=list(set_args))
    recipe = recipe.with_context(seed=0)
    return recipe


def _train_frame(splits):
    """The training split as the file's columns (NaN for missing), independently of kflow."""
    frame = pd.read_csv(EXAMPLE_CSV).dropna(subset=["result"]).reset_index(drop=True)
    frame["tutoring"] = (frame["tutoring"] == "yes").astype(float)
    assert len(frame) == len(splits.train) + len(splits.val) + len(splits.test)
    return frame


@pytest.mark.parametrize("scaling", ["standard", "minmax"])
def test_scaler_statistics_come_from_the_training_split_only(scaling):
    recipe = _recipe(f"scaling={scaling}")
    data = recipe.load_data()
    splits = train_val_test_split(data, 0.15, 0.15, seed=0)
    model = recipe.build_model(splits.train)
    full = _train_frame(splits)[NUMERIC]
    train = pd.DataFrame({c: splits.train.x[k] for c, k in zip(
        NUMERIC, ["hours_studied", "sleep_hours", "previous_score", "tutoring", "absences"],
        strict=True)}).astype("float64")
    # The imputer's medians are the training split's, and so are the scaler's statistics.
    fill = np.asarray(imputed_fill_values(model)["numeric_features"])
    np.testing.assert_allclose(fill, train.median().to_numpy(), rtol=1e-6)
    assert not np.allclose(fill, full.median().to_numpy())
    imputed = train.fillna(train.median())
    if scaling == "standard":
        layer_mean = np.ravel(model.get_layer("standardize").mean)
        np.testing.assert_allclose(layer_mean, imputed.mean().to_numpy(), rtol=1e-5)
        assert not np.allclose(layer_mean, full.fillna(full.median()).mean().to_numpy(),
                               rtol=1e-5)
        np.testing.assert_allclose(np.ravel(model.get_layer("standardize").variance),
                                   imputed.var(ddof=0).to_numpy(), rtol=1e-4)
    else:
        np.testing.assert_allclose(np.ravel(model.get_layer("minmax").mean),
                                   imputed.min().to_numpy(), rtol=1e-6)


def test_vocabulary_comes_from_the_training_split_only():
    frame = pd.DataFrame({
        "f": np.arange(40, dtype=float),
        "city": ["Paris", "Rome"] * 19 + ["Oslo", "Oslo"],
        "y": ["a", "b"] * 20,
        "split": ["train"] * 30 + ["val"] * 6 + ["test"] * 4,
    })
    frame.loc[36:, "city"] = "Oslo"
    data = load_table(frame, "y", split_column="split")
    splits = train_val_test_split(data)
    inputs = column_inputs(splits.train)
    model = keras.Model(inputs, preprocess_columns(inputs, splits.train))
    vocab = model.get_layer("city_lookup").get_vocabulary()
    assert sorted(vocab[1:]) == ["Paris", "Rome"] and "Oslo" not in vocab
    out = model.predict(rows_to_inputs([{"f": 1.0, "city": "Oslo"}], model), verbose=0)
    np.testing.assert_array_equal(out[0, 1:], [1.0, 0.0, 0.0])  # the OOV slot


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "example"
    return kflow.train(str(EXAMPLE_YAML), epochs=3, run_dir=run_dir, verbose=0)


def test_saved_model_predicts_from_raw_rows_like_the_live_model(example_run):
    live = example_run.model
    inputs = rows_to_inputs(RAW_ROWS, live)
    assert np.isnan(inputs["hours_studied"][0]) and inputs["school"][1] == ""
    expected = live.predict(inputs, verbose=0)
    assert np.isfinite(expected).all()
    reloaded = kflow.load_run(example_run.run_dir).model
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), expected, atol=1e-6)
    # An unseen category takes the out-of-vocabulary slot; a missing one is imputed.
    lookup = keras.Model(live.input, live.get_layer("school_lookup").output)
    onehot = lookup.predict(inputs, verbose=0)
    assert onehot[0, 0] == 1.0 and onehot[1, 0] == 0.0


def test_model_on_raw_rows_equals_pipeline_preprocessed_data(example_run):
    model = example_run.model
    data = load_table(EXAMPLE_CSV, "result", drop_missing_labels=True, missing="median",
                      missing_by_column={"school": "constant"})
    preprocessor, network = split_preprocessing(model)
    # Preprocessing as a vectorized map of the tf.data pipeline, then the network alone.
    ds = make_dataset(data.x, None, 64, training=False, map_fn=preprocessor)
    assert ds.element_spec.shape.as_list() == [None, model.get_layer("preprocessed")
                                               .output.shape[-1]]
    np.testing.assert_allclose(network.predict(ds, verbose=0),
                               model.predict(data.x, verbose=0), atol=1e-6)


def _serve_raw_rows(model, path):
    inputs = rows_to_inputs(RAW_ROWS, model)
    model.export(str(path), verbose=False)
    loaded = tf.saved_model.load(str(path))  # keep it: `serve` uses its variables
    served = loaded.serve({k: tf.constant(v.reshape(-1, 1)) for k, v in inputs.items()})
    np.testing.assert_allclose(served.numpy(), model.predict(inputs, verbose=0), atol=1e-6)


def test_exported_saved_model_takes_raw_rows(tmp_path):
    recipe = _recipe()
    splits = train_val_test_split(recipe.load_data(), 0.15, 0.15, seed=0)
    _serve_raw_rows(recipe.build_model(splits.train), tmp_path / "saved_model")


def test_exported_trained_model_takes_raw_rows(example_run, tmp_path):
    _serve_raw_rows(example_run.model, tmp_path / "saved_model")


@pytest.mark.slow  # a fresh Python process imports TensorFlow
def test_load_run_in_a_fresh_process_restores_the_preprocessing(example_run):
    code = (
        "import json, sys, numpy as np, kflow\n"
        "run = kflow.load_run(sys.argv[1])\n"
        "rows = json.loads(sys.argv[2])\n"
        "x = kflow.data.rows_to_inputs(rows, run.model)\n"
        "print(json.dumps(run.model.predict(x, verbose=0).ravel().tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(example_run.run_dir),
                          json.dumps(RAW_ROWS)], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    live = example_run.model.predict(rows_to_inputs(RAW_ROWS, example_run.model), verbose=0)
    np.testing.assert_allclose(fresh, live.ravel(), atol=1e-6)


def test_embedding_integer_categories_and_round_trip(tmp_path):
    frame = pd.DataFrame({
        "size": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0],
        "color": ["red", "blue", "", "red", "green", "blue", "red", ""],
        "code": [3, 3, 5, np.nan, 5, 3, 9, 9],
        "y": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
    })
    data = load_table(frame, "y", column_types={"code": "integer"}, missing="most_frequent")
    inputs = column_inputs(data)
    assert {k: str(v.dtype) for k, v in inputs.items()} == {
        "size": "float32", "color": "string", "code": "int64"}
    features = preprocess_columns(inputs, data, categorical_encoding="embedding",
                                  embedding_dim=3, scaling="none", seed=0)
    assert features.shape[-1] == 1 + 3 + 3
    model = keras.Model(inputs, keras.layers.Dense(1)(features))
    fills = imputed_fill_values(model)
    assert (fills["color"], fills["code"], fills["size"]) == ("red", 3, [1.0])
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(data.x, verbose=0),
                               model.predict(data.x, verbose=0), atol=1e-6)


def test_rows_to_inputs_rejects_missing_columns_and_bad_numbers(example_run):
    with pytest.raises(DataError, match=r"The rows lack column\(s\) \['absences'\] that model "
                                        r"'tabular' takes"):
        rows_to_inputs([{k: v for k, v in RAW_ROWS[0].items() if k != "absences"}],
                       example_run.model)
    with pytest.raises(DataError, match=r"Column 'sleep_hours' of the rows must hold numbers; "
                                        r"got 'late' \(row 0\)"):
        rows_to_inputs([{**RAW_ROWS[0], "sleep_hours": "late"}], example_run.model)


def test_a_feature_empty_in_the_training_split_is_an_error():
    frame = pd.DataFrame({"a": [np.nan] * 4 + [1.0, 2.0], "b": np.arange(6.0),
                          "y": ["p", "q"] * 3, "s": ["train"] * 4 + ["test"] * 2})
    splits = train_val_test_split(load_table(frame, "y", split_column="s"))
    with pytest.raises(DataError, match=r"Feature column 'a' of 'DataFrame' has no values in "
                                        r"the training split \(all 4 are missing\)"):
        preprocess_columns(column_inputs(splits.train), splits.train)
