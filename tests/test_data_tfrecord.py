"""TFRecord files of tf.train.Example rows as streamed input of the tabular recipe (#15)."""

from __future__ import annotations

import numpy as np
import pytest

from kflow.data.tfrecord import TFRecordStream, is_tfrecord_path
from kflow.errors import ConfigError, DataError
from kflow.training.trainer import Trainer
from tests.conftest import REPO

EXAMPLE = REPO / "recipes" / "example_tabular" / "example.yaml"
CSV = REPO / "recipes" / "example_tabular" / "students.csv"
SAME = ["batch_size=full", "epochs=3", "early_stopping=false", "grad_log_every=0",
        "dropout=0.0", "steps_per_execution=1"]


def write_tfrecords(frame, files):
    """The rows of `frame` as tf.train.Example records, spread over `files` (NaN: absent)."""
    import pandas as pd
    import tensorflow as tf

    writers = [tf.io.TFRecordWriter(str(f)) for f in files]
    per_file = -(-len(frame) // len(files))
    for i, (_, row) in enumerate(frame.iterrows()):
        feature = {}
        for column, value in row.items():
            if pd.isna(value):
                continue  # a missing value: the feature is left out
            if isinstance(value, str):
                feature[column] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[value.encode()]))
            elif pd.api.types.is_integer_dtype(frame[column]):
                feature[column] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            else:
                feature[column] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[i // per_file].write(example.SerializeToString())
    for w in writers:
        w.close()


def _fit(args):
    trainer = Trainer(str(EXAMPLE), set_args=SAME + args, seed=0, verbose=0)
    splits = trainer.splits()
    model = trainer.build_model(splits.train)
    outcome = trainer.fit(model, splits.train, splits.val, verbose=0)
    return trainer, splits, model, outcome


def test_tfrecords_of_the_example_train_the_same_model_as_the_csv(tmp_path):
    import pandas as pd

    frame = pd.read_csv(CSV)
    folder = tmp_path / "students"
    folder.mkdir()
    write_tfrecords(frame, [folder / f"part-{i}.tfrecord" for i in range(3)])
    assert is_tfrecord_path(folder) and is_tfrecord_path(folder / "part-*.tfrecord")
    columns = [c for c in frame.columns if c != "result"]  # the CSV's column order
    features = "features=" + ",".join(columns)
    _, csv_splits, csv_model, csv_out = _fit([])
    trainer, splits, model, out = _fit([f"path={folder}/part-*.tfrecord", features])
    assert splits.train.streaming and len(splits.train) == len(csv_splits.train)
    assert len(splits.test) == len(csv_splits.test)
    # float_list holds 32-bit floats: the model sees float32 inputs either way.
    for a, b in zip(model.get_weights(), csv_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.history["loss"], csv_out.history["loss"], rtol=1e-4)
    test = trainer.evaluate(model, {"test": splits.test})["test"]
    csv_test = trainer.evaluate(csv_model, {"test": csv_splits.test})["test"]
    assert test["accuracy"] == pytest.approx(csv_test["accuracy"])
    # A folder works too; without `features` the columns are sorted by name.
    stream = TFRecordStream(folder, "result", drop_missing_labels=True)
    assert stream.features == sorted(columns)
    assert stream.num_valid == frame["result"].notna().sum()


def test_bad_tfrecord_input_gives_clear_errors(tmp_path):
    import tensorflow as tf

    with pytest.raises(DataError, match="No TFRecord file"):
        TFRecordStream(tmp_path / "none-*.tfrecord", "y")
    (tmp_path / "text.tfrecord").write_text("a,b,y\n1,2,3\n" * 50)
    with pytest.raises(DataError, match="Could not read the TFRecord files"):
        TFRecordStream(tmp_path / "text.tfrecord", "y")
    with tf.io.TFRecordWriter(str(tmp_path / "junk.tfrecord")) as w:
        w.write(b"\xff\xfe not a protocol buffer")
    with pytest.raises(DataError, match="not a tf.train.Example"):
        TFRecordStream(tmp_path / "junk.tfrecord", "y")

    def record(**values):
        feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=v))
                   for k, v in values.items()}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    with tf.io.TFRecordWriter(str(tmp_path / "multi.tfrecord")) as w:
        w.write(record(a=[1.0, 2.0], y=[1.0]))
    with pytest.raises(DataError, match="one value per feature"):
        TFRecordStream(tmp_path / "multi.tfrecord", "y")
    with tf.io.TFRecordWriter(str(tmp_path / "ok.tfrecord")) as w:
        for i in range(20):
            w.write(record(a=[float(i)], y=[float(i % 2)]))
    with pytest.raises(ConfigError, match="Target column 'label'"):
        TFRecordStream(tmp_path / "ok.tfrecord", "label")
    stream = TFRecordStream(tmp_path / "ok.tfrecord", "y", chunk_rows=7)
    assert stream.class_names == ["0", "1"] and stream.num_rows == 20
