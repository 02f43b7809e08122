"""BestModelCheckpoint: paced writes, fed fake logs and a fake clock."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kflow.training.callbacks import checkpoint as checkpoint_module  # noqa: E402
from kflow.training.callbacks.checkpoint import BestModelCheckpoint  # noqa: E402


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(checkpoint_module.time, "perf_counter", clock)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))
    model.compile(optimizer="sgd", loss="mse")
    saved = []

    def fake_save(self, path, *args, **kwargs):  # a write that takes 1 s of the clock
        assert self is not model  # the plain copy is what is saved
        clock.now += 1.0
        saved.append(float(self.get_layer("d").kernel.numpy()[0, 0]))
        with open(path, "w") as f:
            f.write("model")

    monkeypatch.setattr(keras.Model, "save", fake_save)
    ckpt = BestModelCheckpoint(tmp_path / "best.keras", monitor="val_loss", max_overhead=0.5)
    ckpt.set_model(model)
    return clock, model, ckpt, saved


def run_epoch(clock, model, ckpt, epoch, val_loss, seconds=0.1):
    model.get_layer("d").kernel.assign(np.full((2, 1), float(epoch), "float32"))
    ckpt.on_epoch_begin(epoch)
    clock.now += 50.0  # other callbacks' epoch-begin work, or a benchmark's gate: not training
    ckpt.on_train_batch_begin(0)
    clock.now += seconds / 2
    ckpt.on_train_batch_begin(32)
    clock.now += seconds / 2
    ckpt.on_epoch_end(epoch, {"val_loss": val_loss})


def test_writes_are_paced_by_training_time_not_by_pauses(setup):
    clock, model, ckpt, saved = setup
    run_epoch(clock, model, ckpt, 0, 1.0)
    assert saved == [0.0]  # the first improvement is written at once
    clock.now += 100.0  # idle between epochs (another process ran): not training time
    run_epoch(clock, model, ckpt, 1, 0.9)
    assert saved == [0.0]  # kept in memory: the write cost 1 s, so wait 1 s of training
    run_epoch(clock, model, ckpt, 2, 0.95, seconds=0.5)  # no improvement, not due yet
    assert saved == [0.0]
    run_epoch(clock, model, ckpt, 3, 0.97, seconds=0.5)  # due: the remembered best (epoch 1)
    assert saved == [0.0, 1.0]
    assert ckpt.best == 0.9 and ckpt.best_epoch == 1
    # The current weights were put back after writing the remembered ones.
    assert model.get_layer("d").kernel.numpy()[0, 0] == 3.0


def test_pending_best_is_written_at_train_end(setup):
    clock, model, ckpt, saved = setup
    run_epoch(clock, model, ckpt, 0, 1.0)
    run_epoch(clock, model, ckpt, 1, 0.5)
    run_epoch(clock, model, ckpt, 2, 0.7)
    assert saved == [0.0]
    ckpt.on_train_end()
    assert saved == [0.0, 1.0]
    assert (ckpt.filepath).read_text() == "model"


def test_max_overhead_one_writes_every_improvement(tmp_path, setup):
    clock, model, ckpt, saved = setup
    ckpt.max_overhead = 1.0
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.8]):
        run_epoch(clock, model, ckpt, epoch, loss)
    assert saved == [0.0, 1.0, 3.0]


def test_non_finite_or_missing_monitor_is_ignored(setup):
    clock, model, ckpt, saved = setup
    run_epoch(clock, model, ckpt, 0, float("nan"))
    ckpt.on_epoch_begin(1)
    ckpt.on_epoch_end(1, {"loss": 0.3})
    assert saved == [] and ckpt.best_epoch is None


def test_the_checkpoint_is_a_plain_keras_model(tmp_path):
    from kflow.insight.insight_model import InsightModel

    inputs = keras.Input((2,))
    model = InsightModel(inputs, keras.layers.Dense(1, name="d")(inputs), grad_log_every=1)
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    ckpt = BestModelCheckpoint(tmp_path / "best.keras", monitor="loss", max_overhead=1.0)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    loaded = keras.saving.load_model(tmp_path / "best.keras", safe_mode=True,
                                     custom_objects={})
    assert type(loaded).__name__ == "Functional" and loaded.compiled
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    # The optimizer state was saved with it (Adam's moments of the last epoch).
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
