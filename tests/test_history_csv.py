"""`HistoryCSV` and `truncate_history`: history.csv with epochs counted from 1."""

import csv

import keras
import numpy as np
import pytest

from kflow.run import read_history
from kflow.training.callbacks.history_csv import HistoryCSV, truncate_history


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _feed(cb, epochs, start=0, logs=None):
    cb.on_train_begin()
    for epoch in range(start, start + epochs):
        cb.on_epoch_end(epoch, dict(logs or {"loss": 1.0 / (epoch + 1),
                                             "val_loss": 2.0 / (epoch + 1)}))
    cb.on_train_end()


def test_epochs_count_from_1_with_csvloggers_columns(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse", metrics=["mae"])
    x, y = np.ones((16, 3), "float32"), np.zeros((16, 1), "float32")
    ours, theirs = tmp_path / "history.csv", tmp_path / "keras.csv"
    model.fit(x, y, epochs=3, verbose=0, validation_split=0.25,
              callbacks=[HistoryCSV(ours), keras.callbacks.CSVLogger(str(theirs))])
    mine, keras_rows = _rows(ours), _rows(theirs)
    assert mine[0] == keras_rows[0] == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    assert [r[0] for r in mine[1:]] == ["1", "2", "3"]
    assert [r[0] for r in keras_rows[1:]] == ["0", "1", "2"]
    for a, b in zip(mine[1:], keras_rows[1:], strict=True):
        assert [float(v) for v in a[1:]] == pytest.approx([float(v) for v in b[1:]])
    assert read_history(ours)["epoch"] == [1.0, 2.0, 3.0]


def test_without_validation_logs_the_val_columns_are_there_as_in_csvlogger(tmp_path):
    path = tmp_path / "h.csv"
    _feed(HistoryCSV(path), 2, logs={"loss": 0.5})
    assert _rows(path) == [["epoch", "loss", "val_loss"], ["1", "0.5", "NA"], ["2", "0.5", "NA"]]


def test_append_continues_a_file_and_new_keys_widen_it(tmp_path):
    path = tmp_path / "h.csv"
    _feed(HistoryCSV(path), 2)
    _feed(HistoryCSV(path, append=True), 2, start=2,
          logs={"loss": 0.1, "val_loss": 0.2, "grad_norm/total": 3.0})
    rows = _rows(path)
    assert rows[0] == ["epoch", "loss", "val_loss", "grad_norm/total"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert rows[1][3] == "NA" and rows[4] == ["4", "0.1", "0.2", "3.0"]


def test_without_append_the_file_starts_over(tmp_path):
    path = tmp_path / "h.csv"
    _feed(HistoryCSV(path), 3)
    _feed(HistoryCSV(path, append=False), 1)
    assert [r[0] for r in _rows(path)] == ["epoch", "1"]


def test_each_row_is_on_disk_when_the_epoch_ends(tmp_path):
    path = tmp_path / "h.csv"
    cb = HistoryCSV(path)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.5})
    assert path.read_text() == "epoch,loss,val_loss\n1,1.0,1.5\n"  # no on_train_end yet


def test_array_values_are_written_as_csvlogger_writes_them(tmp_path):
    path = tmp_path / "h.csv"
    _feed(HistoryCSV(path), 1, logs={"f1": np.array([0.5, 0.25]), "loss": np.float32(0.5),
                                     "val_loss": np.array(0.75)})
    assert _rows(path)[1] == ["1", "[0.5, 0.25]", "0.5", "0.75"]


def test_truncate_history_keeps_the_epochs_a_resume_keeps(tmp_path):
    path = tmp_path / "h.csv"
    _feed(HistoryCSV(path), 5)
    with path.open("a") as f:
        f.write("6,0.1")  # a kill while writing: a partial last line
    assert truncate_history(path, keep_epochs=3) == 3
    assert [r[0] for r in _rows(path)] == ["epoch", "1", "2", "3"]
    assert truncate_history(path, keep_epochs=0) == 0
    assert _rows(path) == [["epoch", "loss", "val_loss"]]
    assert truncate_history(tmp_path / "missing.csv", 3) == 0
    assert not (tmp_path / "missing.csv").exists()


def test_resume_after_a_kill_mid_row_then_append(tmp_path):
    path = tmp_path / "h.csv"
    _feed(HistoryCSV(path), 2)
    with path.open("a") as f:
        f.write("3,0.33")  # killed while writing epoch 3
    truncate_history(path, keep_epochs=2)
    _feed(HistoryCSV(path, append=True), 2, start=2)
    assert [r[0] for r in _rows(path)] == ["epoch", "1", "2", "3", "4"]


def test_truncate_history_rejects_a_negative_count(tmp_path):
    with pytest.raises(ValueError, match=r"keep_epochs must be an int >= 0. Got -1 instead."):
        truncate_history(tmp_path / "h.csv", -1)
