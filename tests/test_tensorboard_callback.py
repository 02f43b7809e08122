"""EpochTensorBoard writes the scalars Keras' TensorBoard callback writes, without TF ops."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from kflow.training.callbacks import EpochTensorBoard  # noqa: E402


def _scalars(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_epoch_scalars_match_the_history(tmp_path):
    rng = np.random.RandomState(0)
    x, y = rng.normal(size=(64, 3)).astype("float32"), rng.randint(0, 2, 64)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0,
                        callbacks=[EpochTensorBoard(tmp_path / "tb")]).history

    train, val = _scalars(tmp_path / "tb" / "train"), _scalars(tmp_path / "tb" / "validation")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(train)
    assert {"epoch_loss", "epoch_accuracy"} <= set(val)
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in val["epoch_loss"]], history["val_loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in train["epoch_learning_rate"]], [0.05] * 3)
    # After each validation, at the optimizer step (3 steps per epoch: 48 rows / 16).
    assert [s for s, _ in val["evaluation_loss_vs_iterations"]] == [3, 6, 9]


def test_non_numeric_logs_are_skipped(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    cb = EpochTensorBoard(tmp_path / "tb")
    cb.set_model(model)  # not compiled: no optimizer, no learning rate
    cb.on_epoch_end(0, {"loss": 0.5, "note": "text", "val_loss": 0.7})
    cb.on_train_end()
    assert _scalars(tmp_path / "tb" / "train") == {"epoch_loss": [(0, 0.5)]}
    assert _scalars(tmp_path / "tb" / "validation") == {"epoch_loss": [(0, pytest.approx(0.7))]}
