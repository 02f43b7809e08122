"""Baselines of streamed (and huge) tables: fitted on a seeded sample, stated (#15)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kflow
import kflow.insight.baselines as baselines
from kflow.data.dataset import Dataset
from kflow.data.streaming import CsvStream
from kflow.insight.baselines import fit_baselines


def _csv(path, n: int, seed: int = 0):
    """A separable table: numbers with gaps, a category, a yes/no label in text."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    city = rng.choice(["Lyon", "Nice", "Metz"], size=n)
    label = np.where(a + 0.5 * b + (city == "Lyon") > 0.3, "yes", "no")
    a[rng.random(n) < 0.05] = np.nan
    pd.DataFrame({"a": a, "b": b, "city": city, "label": label}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("hashed", [False, True])
def test_a_streamed_split_is_fitted_on_its_sample_and_scored_on_a_test_sample(
        tmp_path, monkeypatch, hashed):
    import kflow.data.streaming as streaming

    if hashed:  # the split of files above SKLEARN_SPLIT_ROWS: nothing stored per row
        monkeypatch.setattr(streaming, "SKLEARN_SPLIT_ROWS", 100)
    monkeypatch.setattr(baselines, "SAMPLE_ROWS", 400)
    stream = CsvStream(_csv(tmp_path / "t.csv", 3000), "label", chunk_rows=256,
                       sample_rows=300)
    splits = stream.stream_splits(0.2, 0.2, seed=0)
    assert (stream.labels is None) == hashed
    found = fit_baselines(splits.train, splits.test, seed=0)
    assert set(found) == {"linear", "boosted_trees"}
    for entry in found.values():
        # fitted on the stream's own training sample, scored on 400 of the 600 test rows
        # (more than the split's own 300-row sample: read from the file in one pass)
        assert entry["train_rows"] == 300 and entry["sampled_from"] == len(splits.train)
        assert entry["test_rows"] == 400 and entry["test_sampled_from"] == len(splits.test)
        assert entry["test"]["accuracy"] > 0.8 and entry["test"]["auc"] > 0.9
    assert found["linear"]["test"]["accuracy"] > 0.9  # separable by a line
    again = fit_baselines(splits.train, splits.test, seed=0)  # seeded: the same numbers
    assert again["linear"]["test"] == found["linear"]["test"]
    assert baselines.sample_note(found["linear"]) == (
        f"fitted on a sample of 300 of {len(splits.train):,} training rows, "
        f"scored on a sample of 400 of {len(splits.test):,} test rows")


def test_a_streamed_test_split_is_scored_on_the_same_rows_as_in_memory(tmp_path):
    """Rows read back for scoring are converted and labelled as the network's batches."""
    from kflow.data.splits import train_val_test_split
    from kflow.data.tabular import load_table

    path = _csv(tmp_path / "t.csv", 1500)
    stream = CsvStream(path, "label", chunk_rows=100, sample_rows=200)
    streamed = stream.stream_splits(0.2, 0.2, seed=0)
    assert len(streamed.test.sample) < len(streamed.test)  # so the test rows are read
    found = fit_baselines(streamed.train, streamed.test, seed=0)["linear"]
    assert "test_sampled_from" not in found and found["test_rows"] == len(streamed.test)
    # in memory: the same split row for row; fitted on the stream's sample rows
    mem = train_val_test_split(load_table(path, "label"), 0.2, 0.2, seed=0)
    by_hand = fit_baselines(streamed.train.sample, mem.test, seed=0)["linear"]
    assert by_hand["train_rows"] == 200 and by_hand["test_rows"] == len(mem.test)
    assert found["test"] == pytest.approx(by_hand["test"])


def test_huge_in_memory_tables_are_sampled_small_ones_are_not(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 3)).astype("float32")
    y = (x[:, 0] - x[:, 1] > 0).astype("int64")
    train = Dataset(x[:600], y[:600], task="binary", class_names=["a", "b"])
    test = Dataset(x[600:], y[600:], task="binary", class_names=["a", "b"])
    whole = fit_baselines(train, test)
    assert whole["linear"]["train_rows"] == 600 and whole["linear"]["test_rows"] == 300
    assert "sampled_from" not in whole["linear"] and "test_sampled_from" not in whole["linear"]
    monkeypatch.setattr(baselines, "LINEAR_MAX_ROWS", 500)
    monkeypatch.setattr(baselines, "SAMPLE_ROWS", 250)
    found = fit_baselines(train, test)["linear"]
    assert (found["train_rows"], found["sampled_from"]) == (250, 600)
    assert (found["test_rows"], found["test_sampled_from"]) == (250, 300)
    assert found["test"]["accuracy"] > 0.9


def test_a_streamed_run_reports_sampled_baselines_an_in_memory_run_all_rows(tmp_path):
    path = _csv(tmp_path / "t.csv", 2000)
    common = [f"path={path}", "target=label", "grad_log_every=0", "epochs=1",
              "early_stopping=false"]
    run = kflow.train("tabular", set_args=common + ["streaming=true", "sample_rows=200"],
                      run_dir=tmp_path / "run", verbose=0)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    linear = saved["baselines"]["linear"]
    n_train = run.info["num_train"]
    assert linear["train_rows"] == 200 and linear["sampled_from"] == n_train > 1000
    assert "test_sampled_from" not in linear and linear["test_rows"] >= 300
    assert linear["test"]["accuracy"] > 0.85
    assert saved["baselines"] == run.metrics["baselines"]
    report = (tmp_path / "run" / "report.html").read_text()
    assert f"fitted on a sample of 200 of {n_train:,} training rows" in report

    from kflow.training.trainer import Trainer

    splits = Trainer("tabular", set_args=common, seed=0, verbose=0).splits()  # in memory
    found = fit_baselines(splits.train, splits.test, seed=0)
    assert found["linear"]["train_rows"] == len(splits.train) == n_train
    assert "sampled_from" not in found["linear"]
    assert found["linear"]["test_rows"] == len(splits.test) == linear["test_rows"]


def test_tfrecord_input_gets_the_csv_streams_baselines(tmp_path, monkeypatch):
    import pandas as pd

    from kflow.data.tfrecord import TFRecordStream
    from tests.test_data_tfrecord import write_tfrecords

    monkeypatch.setattr(baselines, "SAMPLE_ROWS", 130)
    path = _csv(tmp_path / "t.csv", 800)
    write_tfrecords(pd.read_csv(path), [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"])
    found = []
    for stream in (CsvStream(path, "label", chunk_rows=128, sample_rows=100),
                   TFRecordStream(tmp_path / "*.tfrecord", "label", features=["a", "b", "city"],
                                  chunk_rows=128, sample_rows=100)):
        splits = stream.stream_splits(0.2, 0.2, seed=0)
        found.append(fit_baselines(splits.train, splits.test, seed=0)["linear"])
    csv, records = found
    assert (records["train_rows"], records["sampled_from"]) == (100, len(splits.train))
    assert (records["test_rows"], records["test_sampled_from"]) == (130, len(splits.test))
    assert records["test"] == pytest.approx(csv["test"]) and csv["test"]["accuracy"] > 0.85
