"""Streaming a CSV in chunks gives the same model as loading it whole (#15)."""

from __future__ import annotations

import numpy as np
import pytest

import kflow
from kflow.data.streaming import CsvStream
from kflow.errors import ConfigError
from kflow.training.trainer import Trainer
from tests.conftest import REPO

EXAMPLE = REPO / "recipes" / "example_tabular" / "example.yaml"
SAME = ["batch_size=full", "epochs=3", "early_stopping=false", "grad_log_every=0",
        "dropout=0.0", "steps_per_execution=1"]


def _fit(streaming: bool, chunk_rows: int | None = None):
    extra = ["streaming=true"] if streaming else []
    trainer = Trainer(str(EXAMPLE), set_args=SAME + extra, seed=0, verbose=0)
    splits = trainer.splits()
    if chunk_rows:
        splits.train.stream.chunk_rows = chunk_rows
    model = trainer.build_model(splits.train)
    outcome = trainer.fit(model, splits.train, splits.val, verbose=0)
    return trainer, splits, model, outcome


def test_streaming_and_in_memory_give_the_same_model():
    _, mem_splits, mem_model, mem_out = _fit(False)
    trainer, splits, model, out = _fit(True, chunk_rows=37)  # many chunks
    assert len(splits.train) == len(mem_splits.train)
    assert len(splits.test) == len(mem_splits.test)
    assert splits.train.meta["preprocessing_fitted_on"].startswith("a uniform sample of "
                                                                   f"{len(splits.train)} of")
    for a, b in zip(model.get_weights(), mem_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.history["loss"], mem_out.history["loss"], rtol=1e-4)
    test = trainer.evaluate(model, {"test": splits.test})["test"]
    mem_test = trainer.evaluate(mem_model, {"test": mem_splits.test})["test"]
    assert test["accuracy"] == pytest.approx(mem_test["accuracy"])


def test_stream_reads_each_split_once_per_epoch_in_chunks(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 1000
    frame = pd.DataFrame({"a": rng.normal(size=n), "c": rng.choice(["x", "y", ""], size=n),
                          "label": rng.choice(["no", "yes"], size=n)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    stream = CsvStream(tmp_path / "t.csv", "label", chunk_rows=128, sample_rows=200)
    splits = stream.stream_splits(0.2, 0.2, seed=0)
    total = len(splits.train) + len(splits.val) + len(splits.test)
    assert total == n and len(splits.train.sample) == 200
    ds = splits.train.tf_dataset(64, training=True, seed=0, epoch=0)
    ys = np.concatenate([y.numpy() for _, y in ds])
    assert len(ys) == len(splits.train)
    assert sorted(ys.tolist()) == sorted(stream.labels[splits.train.rows].tolist())
    again = np.concatenate([y.numpy() for _, y in splits.train.tf_dataset(
        64, training=True, seed=0, epoch=0)])
    np.testing.assert_array_equal(ys, again)  # same epoch, same order (exact resume)
    with pytest.raises(ConfigError, match="missing: drop"):
        CsvStream(tmp_path / "t.csv", "label", missing="drop")


def test_streaming_run_from_the_cli_recipe(tmp_path):
    run = kflow.train(str(EXAMPLE), set_args=["streaming=true", "epochs=2",
                                               "grad_log_every=0"],
                      run_dir=tmp_path / "run", verbose=0)
    assert 0 <= run.metrics["test"]["accuracy"] <= 1
    linear = run.metrics["baselines"]["linear"]  # fitted on the stream's training sample:
    assert linear["train_rows"] == run.info["num_train"]  # here all of the small split
    assert "sampled_from" not in linear and 0 <= linear["test"]["accuracy"] <= 1


def test_large_files_use_the_hashed_stratified_split(tmp_path, monkeypatch):
    """Above SKLEARN_SPLIT_ROWS: per-class counts as in memory, nothing stored per row."""
    import pandas as pd

    import kflow.data.streaming as streaming

    monkeypatch.setattr(streaming, "SKLEARN_SPLIT_ROWS", 100)
    rng = np.random.default_rng(0)
    n = 1000
    labels = np.array(["maybe"] * 100 + ["no"] * 300 + ["yes"] * 600)
    pd.DataFrame({"a": rng.normal(size=n), "label": labels}).to_csv(tmp_path / "t.csv",
                                                                      index=False)
    stream = CsvStream(tmp_path / "t.csv", "label", chunk_rows=100, sample_rows=150)
    parts = stream.stream_splits(0.2, 0.1, seed=0)
    assert stream.labels is None and parts.train.rows is None  # no per-row state
    assert (len(parts.train), len(parts.val), len(parts.test)) == (700, 200, 100)
    assert len(parts.train.sample) == 150
    rows = [stream.part_rows(p) for p in range(3)]
    code = {"maybe": 0, "no": 1, "yes": 2}
    np.testing.assert_array_equal(np.bincount([code[v] for v in labels[rows[2]]]), [10, 30, 60])
    np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(n))
    again = CsvStream(tmp_path / "t.csv", "label", chunk_rows=64)
    again.stream_splits(0.2, 0.1, seed=0)
    np.testing.assert_array_equal(again.part_rows(2), rows[2])  # chunking does not matter
    other = CsvStream(tmp_path / "t.csv", "label", chunk_rows=100)
    other.stream_splits(0.2, 0.1, seed=1)
    assert not np.array_equal(other.part_rows(2), rows[2])  # the seed does
    ds = parts.train.tf_dataset(64, training=True, seed=0, epoch=0)
    ys = np.concatenate([y.numpy() for _, y in ds])
    np.testing.assert_array_equal(np.bincount(ys), [70, 210, 420])
    np.testing.assert_array_equal(ys, np.concatenate(
        [y.numpy() for _, y in parts.train.tf_dataset(64, training=True, seed=0, epoch=0)]))
    balanced = parts.train.tf_dataset(700, training=True, seed=0, epoch=0,
                                      class_weight="balanced")
    _, y, w = next(iter(balanced))
    np.testing.assert_allclose(w.numpy()[y.numpy() == 0], 700 / (3 * 70), rtol=1e-6)


def test_permutation_is_a_bijection():
    from kflow.data.streaming import _permute

    for n in (1, 2, 3, 17, 1000, 4097):
        np.testing.assert_array_equal(np.sort(_permute(np.arange(n), n, 7, 2)), np.arange(n))
