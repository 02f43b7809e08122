"""Tables: CSV / Parquet / DataFrame / NumPy loading, type inference, bad input."""

import textwrap

import numpy as np
import pandas as pd
import pytest

import kflow
from kflow.data import load_arrays, load_table, sanitize_names
from kflow.errors import ConfigError, DataError
from tests.conftest import REPO

EXAMPLE = REPO / "recipes" / "example_tabular" / "students.csv"


def write_csv(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture(scope="module")
def students():
    return load_table(EXAMPLE, "result", drop_missing_labels=True)


def test_example_csv_becomes_named_raw_columns(students):
    assert len(students) == 397 and students.task == "binary"
    assert students.class_names == ["fail", "pass"]
    assert students.feature_names == ["hours_studied", "sleep_hours", "previous_score",
                                      "school", "tutoring", "absences"]
    kinds = {k: v["kind"] for k, v in students.meta["columns"].items()}
    assert kinds == {"hours_studied": "numeric", "sleep_hours": "numeric",
                     "previous_score": "numeric", "school": "categorical",
                     "tutoring": "boolean", "absences": "numeric"}
    assert students.meta["columns"]["previous_score"]["column"] == "previous score"
    x = students.x
    assert x["hours_studied"].dtype == np.float32 and np.isnan(x["hours_studied"]).sum() > 0
    assert x["school"].dtype == object and (x["school"] == "").sum() > 0
    assert set(np.unique(x["tutoring"])) == {0.0, 1.0}
    assert students.meta["rows_dropped"] == 3


def test_column_type_overrides(tmp_path):
    path = write_csv(tmp_path, """
        zip,rooms,code,ok,y
        02139,3,7,yes,1.5
        10001,,7,no,2.5
        02139,4,,yes,3.5
        94110,2,2,,4.5
    """)
    data = load_table(path, "y", column_types={"zip": "categorical", "code": "integer"})
    assert data.task == "regression" and data.y.dtype == np.float32
    assert data.x["zip"].tolist() == ["2139", "10001", "2139", "94110"]
    assert data.x["code"].tolist() == [7, 7, -1, 2] and data.x["code"].dtype == np.int64
    assert np.isnan(data.x["rooms"][1]) and np.isnan(data.x["ok"][3])
    assert data.meta["columns"]["ok"]["kind"] == "boolean"


@pytest.mark.parametrize("labels, task, names", [
    (["a", "b", "a", "b"], "binary", ["a", "b"]),
    (["x", "y", "z", "x"], "multiclass", ["x", "y", "z"]),
    ([3, 1, 2, 3], "multiclass", ["1", "2", "3"]),
    ([0.5, 1.25, 2.0, 7.5], "regression", None),
])
def test_task_follows_from_the_target(labels, task, names):
    frame = pd.DataFrame({"f": [1.0, 2.0, 3.0, 4.0], "t": labels})
    data = load_table(frame, "t")
    assert data.task == task and data.class_names == names


def test_task_override_and_binary_check():
    frame = pd.DataFrame({"f": [1.0, 2.0, 3.0, 4.0], "t": [0, 1, 2, 3]})
    assert load_table(frame, "t", task="regression").task == "regression"
    with pytest.raises(DataError, match="has 4 classes, so it cannot be task=binary"):
        load_table(frame, "t", task="binary")


def test_parquet_dataframe_and_csv_agree(tmp_path, students):
    frame = pd.read_csv(EXAMPLE)
    parquet = tmp_path / "students.parquet"
    frame.to_parquet(parquet)
    for source in (parquet, frame):
        data = load_table(source, "result", drop_missing_labels=True)
        np.testing.assert_array_equal(data.y, students.y)
        np.testing.assert_array_equal(data.x["school"], students.x["school"])
        np.testing.assert_allclose(data.x["sleep_hours"], students.x["sleep_hours"])


def test_numpy_arrays_with_missing_values():
    x = np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 1.0], [4.0, 0.5]])
    data = load_arrays(x, np.array(["a", "b", "a", "b"]), feature_names=["u", "v w"])
    assert sorted(data.x) == ["u", "v_w"] and data.class_names == ["a", "b"]
    assert np.isnan(data.x["v_w"][0])


def test_missing_drop_per_column(tmp_path):
    path = write_csv(tmp_path, """
        a,b,y
        1,,p
        ,2,q
        3,4,p
        5,6,q
    """)
    assert len(load_table(path, "y", missing="drop")) == 2
    dropped_b = load_table(path, "y", missing="mean", missing_by_column={"b": "drop"})
    assert len(dropped_b) == 3 and np.isnan(dropped_b.x["a"]).sum() == 1
    assert dropped_b.meta["columns"]["a"]["missing"] == "mean"


def test_sanitized_names_are_unique_input_names():
    assert sanitize_names(["previous score", "2nd", "a-b", "a b", "é", "standardize"]) == [
        "previous_score", "col_2nd", "a_b", "a_b_2", "col", "standardize_column"]


@pytest.mark.parametrize("content, kwargs, error, message", [
    (None, {"target": "y", "source": "nope.csv"}, DataError,
     r"Data file '.*nope.csv' does not exist. Check the path \(relative paths in a YAML "
     r"config are resolved against the YAML file's folder\)."),
    ("a,y\n1,p\n2,q\n", {"target": "reslt"}, DataError,
     r"Target column 'reslt' is not a column of 'bad.csv'. Available columns: a, y."),
    ("age,y\n1,p\n2,q\n", {"target": "ag"}, DataError,
     r"Target column 'ag' is not a column of 'bad.csv' \(did you mean 'age'\?\)"),
    ("age,y\n31,p\n?,q\n45,p\n52,q\n", {"target": "y"}, DataError,
     r"Column 'age' of 'bad.csv' cannot be parsed as numeric: the column looks numeric but "
     r"'\?' \(row 1\) is not valid. Fix those values \(leave a cell empty for a missing "
     r"value\), or set column_types: \{age: categorical\}."),
    ("city,y\nParis,p\nRome,q\n", {"target": "y", "column_types": {"city": "numeric"}},
     DataError, r"Column 'city' of 'bad.csv' cannot be parsed as numeric: 'Paris' \(row 0\), "
     r"'Rome' \(row 1\) are not valid"),
    ("a,empty,y\n1,,p\n2,,q\n", {"target": "y"}, DataError,
     r"Feature column 'empty' of 'bad.csv' has no values: all 2 are missing. Remove it "
     r"from `features`, or fill it in."),
    ("a,y\n1,p\n2,p\n3,p\n", {"target": "y"}, DataError,
     r"Target column 'y' of 'bad.csv' has one class only \('p'\); classification needs at "
     r"least two."),
    ("a,y\n1,p\n2,\n3,q\n4,\n", {"target": "y"}, DataError,
     r"Target column 'y' of 'bad.csv' has 2 missing value\(s\) at rows \[1, 3\] \(0-based, "
     r"header not counted\); fill them in, or set drop_missing_labels: true to drop those "
     r"rows."),
    ("a,y\n1,p\n2,q\n", {"target": "y", "features": ["a", "b"]}, DataError,
     r"Feature column 'b' is not a column of 'bad.csv'"),
    ("a,y\n1,p\n2,q\n", {"target": "y", "column_types": {"a": "text"}}, ConfigError,
     r"The type of column 'a' must be one of: numeric, categorical, integer, boolean. "
     r"Got 'text' instead."),
    ("a,y\n1,p\n2,q\n", {"target": "y", "missing": "avg"}, ConfigError,
     r"missing-value strategy of column '\(all\)' must be one of: drop, mean, median"),
    ("a,y,s\n1,p,train\n2,q,holdout\n", {"target": "y", "split_column": "s"}, DataError,
     r"Split column 's' of 'bad.csv' has values \['holdout'\] \(e.g. row 1\); allowed: "
     r"train, val \(or validation\), test."),
])
def test_bad_tables_explain_themselves(tmp_path, content, kwargs, error, message):
    kwargs = dict(kwargs)
    source = kwargs.pop("source", None)
    path = tmp_path / source if source else write_csv(tmp_path, content)
    with pytest.raises(error, match=message):
        load_table(path, **kwargs)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "table.xlsx"
    path.write_bytes(b"\0")
    with pytest.raises(DataError, match=r"has an unsupported type '.xlsx'; kflow reads .csv, "
                                        r".tsv and .parquet files."):
        load_table(path, "y")


def test_tabular_recipe_needs_path_and_target():
    with pytest.raises(ConfigError, match=r"The tabular recipe needs `path` \(a CSV or Parquet "
                                          r"file\) and `target`"):
        kflow.get_recipe_class("tabular")().load_data()


def test_tabular_recipe_column_mapping_hparams():
    from kflow.recipe.overrides import resolve_recipe

    r, _ = resolve_recipe("tabular", set_args=[
        "column_types=zip:categorical,code:integer", "missing_by_column={school: constant}",
        "features=a,b"])
    assert r.column_types == {"zip": "categorical", "code": "integer"}
    assert r.missing_by_column == {"school": "constant"} and r.features == ["a", "b"]
    with pytest.raises(ConfigError, match=r"The 'column_types' parameter of tabular must be a "
                                          r"mapping .*'txt' \(column 'zip'\) is not one of"):
        resolve_recipe("tabular", set_args=["column_types=zip:txt"])
