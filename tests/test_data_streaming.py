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
    assert "baselines" not in run.metrics  # a streamed table is taken as huge


def test_large_files_use_the_light_stratified_split(tmp_path, monkeypatch):
    import pandas as pd

    import kflow.data.streaming as streaming

    monkeypatch.setattr(streaming, "SKLEARN_SPLIT_ROWS", 100)
    rng = np.random.default_rng(0)
    n = 1000
    labels = np.array(["maybe"] * 100 + ["no"] * 300 + ["yes"] * 600)
    pd.DataFrame({"a": rng.normal(size=n), "label": labels}).to_csv(tmp_path / "t.csv",
                                                                      index=False)
    stream = CsvStream(tmp_path / "t.csv", "label", chunk_rows=100)
    parts = stream.stream_splits(0.2, 0.1, seed=0)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (700, 200, 100)
    assert parts.train.rows.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(stream.labels[parts.test.rows]), [10, 30, 60])
    every = np.concatenate([parts.train.rows, parts.val.rows, parts.test.rows])
    np.testing.assert_array_equal(np.sort(every), np.arange(n))
