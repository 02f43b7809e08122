"""Splits: predefined split columns, k-fold folds, dict features; cross-validation."""

import json

import numpy as np
import pandas as pd
import pytest

import kflow
from kflow.data import Dataset, concat_datasets, kfold_splits, load_table, train_val_test_split
from kflow.errors import DataError
from tests.conftest import REPO

EXAMPLE_YAML = REPO / "recipes" / "example_tabular" / "example.yaml"


def _table(n=40, split=None):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "c": rng.choice(["u", "v"], n),
                          "y": ["p", "q"] * (n // 2)})
    if split is not None:
        frame["split"] = split
    return frame


def test_dict_features_subset_and_concat():
    data = load_table(_table(), "y")
    part = data.subset(np.array([3, 1]))
    assert part.x["a"].tolist() == [data.x["a"][3], data.x["a"][1]]
    assert part.x["c"].tolist() == [data.x["c"][3], data.x["c"][1]]
    both = concat_datasets([part, None, data.subset(np.array([0]))])
    assert len(both) == 3 and both.x["c"][2] == data.x["c"][0]
    with pytest.raises(DataError, match="different lengths"):
        Dataset({"a": np.zeros(3), "b": np.zeros(2)}, np.zeros(3))


def test_random_splits_are_stratified_and_seeded():
    data = load_table(_table(100), "y")
    a, b = train_val_test_split(data, 0.2, 0.2, seed=3), train_val_test_split(data, 0.2, 0.2,
                                                                              seed=3)
    assert (len(a.train), len(a.val), len(a.test)) == (60, 20, 20)
    np.testing.assert_array_equal(a.test.x["a"], b.test.x["a"])
    assert np.bincount(a.val.y).tolist() == [10, 10]


def test_split_column_is_used_instead_of_fractions():
    split = ["train"] * 24 + ["Validation"] * 8 + ["test"] * 8
    data = load_table(_table(40, split), "y", split_column="split")
    assert "split" not in data.x
    splits = train_val_test_split(data, 0.5, 0.3, seed=0)  # fractions are ignored
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 8, 8)
    np.testing.assert_array_equal(splits.test.x["a"], data.x["a"][32:])


def test_a_split_that_leaves_a_class_out():
    frame = _table(12, ["train"] * 8 + ["test"] * 4)
    frame.loc[:7, "y"] = "p"
    data = load_table(frame, "y", split_column="split")
    with pytest.raises(DataError, match=r"The training split of split column 'split' of "
                                        r"'DataFrame' has no samples of class\(es\) 'q'; mark "
                                        r"some rows of each class as 'train'."):
        train_val_test_split(data)


def test_kfold_is_stratified_for_classes_and_plain_for_regression():
    data = load_table(_table(50), "y")
    folds = kfold_splits(data, 5, seed=0)
    assert len(folds) == 5
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(50))  # every row held out exactly once
    for train_idx, held_idx in folds:
        assert not set(train_idx) & set(held_idx)
        assert np.bincount(data.y[held_idx]).tolist() == [5, 5]
    reg = Dataset(np.arange(20.0)[:, None], np.arange(20.0), task="regression")
    assert [len(h) for _, h in kfold_splits(reg, 4)] == [5, 5, 5, 5]


@pytest.mark.parametrize("folds, message", [
    (1, r"Cross-validation needs folds >= 2 \(an int\). Got folds=1; use e.g. 5."),
    (8, r"Cannot make 8 stratified folds of 'DataFrame': class\(es\) 'q' \(3 rows\) have "
        r"fewer rows than folds, so some folds would leave them out; use folds <= 3 or more data."),
])
def test_bad_fold_counts(folds, message):
    frame = _table(16)
    frame.loc[:9, "y"] = "p"
    with pytest.raises(DataError, match=message):
        kfold_splits(load_table(frame, "y"), folds)


def test_cross_validate_builds_a_model_per_fold_and_writes_cv_files(tmp_path, monkeypatch):
    from kflow.recipe.base import Recipe

    seen = []
    build = Recipe.build_model

    def spy(self, train):
        seen.append(len(train))
        return build(self, train)

    monkeypatch.setattr(Recipe, "build_model", spy)
    result = kflow.cross_validate("breast-cancer-mlp", folds=2, epochs=1, seed=0,
                                  set_args=["grad_log_every=0", "hidden_layers=1"],
                                  out_dir=tmp_path / "cv", verbose=0)
    # The test split (86 rows) is set aside exactly as `kflow train` does.
    assert result.info["num_pool"] == 483 and result.info["num_test_not_used"] == 86
    assert [f["fold"] for f in result.folds] == [1, 2]
    # One model (and preprocessing fit) per fold, on that fold's training part only.
    assert seen == [f["num_train"] for f in result.folds]
    assert all(f["num_train"] + f["num_early_stopping"] + f["num_held_out"] == 483
               for f in result.folds)
    assert result.mean["accuracy"] == pytest.approx(np.mean([f["accuracy"]
                                                             for f in result.folds]))
    assert result.std["accuracy"] == pytest.approx(np.std([f["accuracy"]
                                                           for f in result.folds]))
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert len(saved["per_fold"]) == 2 and set(saved["mean"]) == {"accuracy", "auc", "loss"}
    rows = (tmp_path / "cv" / "cv.csv").read_text().splitlines()
    assert rows[0].startswith("fold,num_train") and [r.split(",")[0] for r in rows[1:]] == [
        "1", "2", "mean", "std"]
    assert (tmp_path / "cv" / "config.yaml").is_file()
    assert not (tmp_path / "cv" / "metrics.json").exists()
    assert "mean ± std" in result.table()


@pytest.mark.slow
def test_cross_validate_refits_tabular_preprocessing_per_fold(tmp_path, monkeypatch):
    import kflow.data.preprocessing as preprocessing

    fitted = []
    fit = preprocessing.preprocess_columns

    def spy(inputs, train, **kwargs):
        fitted.append(np.nanmean(train.x["hours_studied"]))
        out = fit(inputs, train, **kwargs)
        return out

    monkeypatch.setattr(preprocessing, "preprocess_columns", spy)
    result = kflow.cross_validate(str(EXAMPLE_YAML), folds=3, epochs=2, save=False, verbose=0)
    assert result.info["num_pool"] == 337 and result.info["num_test_not_used"] == 60
    assert len(fitted) == 3 and len(set(np.round(fitted, 6))) == 3  # a different fit per fold
    assert all(f["num_held_out"] in (112, 113) for f in result.folds)
