"""Transfer learning: a pretrained backbone (a kflow run or Keras Applications), frozen, then
fine-tuned (`kflow.recipe.transfer`, `Trainer.fit`'s phases, the `digits-transfer` recipe).

Everything trains on scikit-learn's 8x8 digits with small networks and few epochs; nothing
downloads (the Applications backbone is built with `weights=None` and a weights file this
test writes itself).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

import kflow
from kflow.errors import ConfigError
from kflow.training.trainer import Trainer

#: Small networks: the backbone run and the transfer runs train in a few seconds.
SMALL = ["filters=4", "stages=1", "dense_units=16", "grad_log_every=2"]
FREEZE, EPOCHS, SCALE, LR = 2, 4, 0.25, 0.004


def _history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A finished digits-pretrain run (digits 0-4): the backbone the transfer runs start from."""
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    kflow.train("digits-pretrain", epochs=2, set_args=SMALL, run_dir=run_dir, verbose=0)
    return run_dir


def _transfer_args(source: Path, run_dir: Path, **extra: str) -> dict:
    settings = {"backbone": str(source), "freeze_epochs": FREEZE, "fine_tune_lr_scale": SCALE,
                "learning_rate": LR, "early_stopping": False, "grad_log_every": 2, **extra}
    return dict(epochs=EPOCHS, run_dir=run_dir, verbose=0,
                set_args=[f"{k}={v}" for k, v in settings.items()])


class _BackboneSnapshots(keras.callbacks.Callback):
    """The backbone's weights (trainable and BatchNorm statistics) at each epoch end."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        net = self.model.get_layer("backbone")
        self.epochs.append({w.path: np.array(w) for w in net.weights})


@pytest.fixture(scope="module")
def transfer(source_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("transfer") / "run"
    snapshots = _BackboneSnapshots()
    run = kflow.train("digits-transfer", callbacks=[snapshots],
                      **_transfer_args(source_run, run_dir))
    return run, snapshots


def _source_weights(source_run: Path) -> dict[str, np.ndarray]:
    model = keras.saving.load_model(source_run / "model.keras")
    return {w.path: np.array(w) for w in model.weights}


def test_the_backbone_starts_from_the_runs_weights_and_stays_frozen(source_run, transfer):
    run, snaps = transfer
    source = _source_weights(source_run)
    first = snaps.epochs[0]
    # Every backbone weight is the source run's (the head's `probabilities` is new).
    assert first and set(first) <= set(source)
    for path in first:
        np.testing.assert_array_equal(first[path], source[path], err_msg=path)
    # Frozen phase: nothing in the backbone moves, BatchNorm statistics included.
    for epoch in snaps.epochs[:FREEZE]:
        for path, value in epoch.items():
            np.testing.assert_array_equal(value, source[path], err_msg=path)
    # Fine-tuning: trainable kernels move; BatchNorm stays in inference mode (training=False).
    last = snaps.epochs[-1]
    moved = [p for p in last if not np.array_equal(last[p], source[p])]
    assert any(p.endswith("kernel") for p in moved), moved
    stats = [p for p in last if p.endswith(("moving_mean", "moving_variance"))]
    assert stats
    for path in stats:
        np.testing.assert_array_equal(last[path], source[path], err_msg=path)


def test_history_shows_the_phase_boundary_and_the_scaled_learning_rate(transfer):
    run, _ = transfer
    rows = _history(run.run_dir)
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, EPOCHS + 1)]
    assert [float(r["phase"]) for r in rows] == [1.0] * FREEZE + [2.0] * (EPOCHS - FREEZE)
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[:FREEZE] == pytest.approx([LR] * FREEZE)
    assert rates[FREEZE:] == pytest.approx([LR * SCALE] * (EPOCHS - FREEZE))
    metrics = run.metrics
    assert metrics["fine_tune"]["first_fine_tune_epoch"] == FREEZE + 1
    assert metrics["transfer"]["kind"] == "run"
    # The optimizer step count goes on across the phases (schedules and grad logs continue).
    steps = json.loads((run.run_dir / "run.json").read_text())["steps_per_epoch"]
    assert int(run.model.optimizer.iterations.numpy()) == EPOCHS * steps
    events = b"".join(f.read_bytes() for f in (run.run_dir / "tensorboard").rglob("events*"))
    assert b"epoch_phase" in events  # TensorBoard: a `phase` scalar steps at the boundary
    report = (run.run_dir / "report.html").read_text()
    assert (f"backbone frozen in epochs 1-{FREEZE} (phase 1); fine-tuning starts at epoch "
            f"{FREEZE + 1} (phase 2") in report
    assert not (run.run_dir / "backup").exists()


def test_the_reports_curves_mark_where_fine_tuning_starts(transfer, monkeypatch):
    """The report's learning-curve and learning-rate plots draw the phase boundary."""
    import matplotlib.axes

    from kflow.insight import plots
    from kflow.run import read_history

    history = read_history(transfer[0].run_dir / "history.csv")
    assert plots.phase_boundary(history) == FREEZE + 1
    lines: list[str] = []
    draw = matplotlib.axes.Axes.axvline

    def axvline(ax, *args, **kwargs):
        lines.append(kwargs.get("label", ""))
        return draw(ax, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", axvline)
    assert plots.plot_learning_curves(history) and plots.plot_learning_rate(history)
    marks = [line for line in lines if line == f"fine-tuning (epoch {FREEZE + 1})"]
    assert len(marks) == len(plots.history_metrics(history)) + 1  # each curve, and the rate


def test_the_saved_transfer_model_is_plain_keras(transfer):
    run, _ = transfer
    config = (run.run_dir / "model.keras")
    loaded = keras.saving.load_model(config, safe_mode=True)
    assert '"kflow' not in json.dumps(loaded.get_config(), default=str)
    x = np.random.default_rng(0).uniform(0, 16, size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), run.model.predict(x, verbose=0),
                               atol=1e-6)


class _CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("crash_epoch", [FREEZE - 1, FREEZE])  # last frozen, first fine-tuned
def test_a_run_killed_in_either_phase_resumes_exactly(source_run, transfer, tmp_path,
                                                      crash_epoch):
    reference, _ = transfer
    args = _transfer_args(source_run, tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        kflow.train("digits-transfer", callbacks=[_CrashAt(crash_epoch)], **args)
    assert len(_history(tmp_path / "run")) == crash_epoch + 1
    resumed = kflow.train("digits-transfer", **args)
    got, want = _history(resumed.run_dir), _history(reference.run_dir)
    assert [list(r) for r in got] == [list(r) for r in want]
    for g, w in zip(got, want, strict=True):
        for column in g:
            if column.startswith("dead_relu/"):  # logged on a wall-clock schedule
                continue
            assert g[column] == w[column], (g["epoch"], column)
    assert resumed.metrics["test"] == reference.metrics["test"]


def test_fine_tune_layers_unfreezes_only_the_top_of_the_backbone(source_run):
    trainer = Trainer("digits-transfer", verbose=0, set_args=[
        f"backbone={source_run}", "freeze_epochs=1", "fine_tune_layers=2"])
    model = trainer.build_model(trainer.splits().train)
    net = model.get_layer("backbone")
    trainer.recipe.set_phase(model, 1)
    assert not net.trainable and [w.path for w in model.trainable_weights] == [
        w.path for w in model.get_layer("probabilities").trainable_weights]
    trainer.recipe.set_phase(model, 2)
    weighted = [layer for layer in net.layers if layer.weights]
    top = len(weighted) - 2
    assert [layer.trainable for layer in weighted] == [
        i >= top and not isinstance(layer, keras.layers.BatchNormalization)
        for i, layer in enumerate(weighted)]
    assert any(layer.trainable for layer in weighted)


def test_keras_applications_backbone_by_name_with_a_local_weights_file(tmp_path):
    # What a user with a downloaded file does, without the download: our own weights file.
    app = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                              input_shape=(32, 32, 3))
    weights_file = tmp_path / "mobilenet_v3_small_notop.weights.h5"
    first = app.weights[0]
    first.assign(np.array(first) + 1.0)  # not what any random initialization draws
    app.save_weights(weights_file)
    trainer = Trainer("digits-cnn", verbose=0, set_args=[
        "backbone=MobileNetV3Small", f"backbone_weights={weights_file}", "freeze_epochs=1"])
    splits = trainer.splits()
    model = trainer.build_model(splits.train)
    net = model.get_layer("backbone")
    for mine, theirs in zip(net.weights, app.weights, strict=True):
        np.testing.assert_array_equal(np.array(mine), np.array(theirs))
    # Raw 8x8x1 digits in; resized to 32x32 and made 3 channels inside the model.
    assert tuple(model.input.shape[1:]) == (8, 8, 1)
    assert {layer.name for layer in model.layers} >= {"backbone_resize", "backbone_rgb"}
    probs = model.predict(splits.test.x[:3], verbose=0)
    assert probs.shape == (3, 10)
    from kflow.training.plain_model import to_plain_model

    to_plain_model(model)  # what a run saves: raises if a kflow class were left in it


def test_bad_backbone_settings_are_config_errors_that_say_what_is_valid(tmp_path):
    with pytest.raises(ConfigError) as err:
        Trainer("digits-cnn", set_args=["backbone=MobileNetV3Smal"])
    message = str(err.value)
    assert "MobileNetV3Small" in message and "ResNet50" in message and "run directory" in message
    with pytest.raises(ConfigError, match="needs a pretrained `backbone`"):
        Trainer("digits-cnn", set_args=["freeze_epochs=3"])
    with pytest.raises(ConfigError, match="not available for digits-cnn"):
        Trainer("digits-cnn", set_args=["backbone=pretrain"])
    trainer = Trainer("digits-cnn", verbose=0, set_args=[f"backbone={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="does not exist: give a trained kflow run directory "
                                          ".* or a KerasHub preset folder"):
        trainer.build_model(trainer.splits().train)
    (tmp_path / "empty").mkdir()
    trainer = Trainer("digits-cnn", verbose=0, set_args=[f"backbone={tmp_path / 'empty'}"])
    with pytest.raises(ConfigError, match="not a trained kflow run"):
        trainer.build_model(trainer.splits().train)


def test_digits_transfer_against_the_same_network_from_scratch(tmp_path):
    """The recipe's defaults on one seed against `backbone=none` (3 seeds: benchmarks/).

    Issue #13 asked for 10 points above scratch; measured with these defaults (both
    networks trained to early stopping on the same 50 validation images), the fine-tuned
    network is ahead by a median 1.5 points over seeds 0-2 (README, "Transfer
    learning"), which one seed cannot show reliably. What one seed does show: it is not
    worse, and it reaches its best validation loss in fewer epochs, frozen ones included.
    """
    quick = [f"pretrain_dir={tmp_path / 'pretrain'}", "grad_log_every=0"]
    tuned = kflow.train("digits-transfer", set_args=quick, run_dir=tmp_path / "tuned",
                        verbose=0)
    scratch = kflow.train("digits-transfer", set_args=[*quick, "backbone=none"],
                          run_dir=tmp_path / "scratch", verbose=0)
    assert tuned.info["num_train"] == scratch.info["num_train"] == 50
    assert tuned.info["num_test"] == scratch.info["num_test"] > 700  # every other 5-9 image
    assert list((tmp_path / "pretrain").iterdir()), "the 0-4 run is a kflow run of its own"
    gain = tuned.metrics["test"]["accuracy"] - scratch.metrics["test"]["accuracy"]
    # Measured on a 2-core CPU, seed 0: 0.977 vs 0.957 (+2.0 points), best epochs 33 vs 59.
    assert gain >= -0.01, (tuned.metrics["test"], scratch.metrics["test"])
    assert tuned.metrics["best_epoch"] < scratch.metrics["best_epoch"]
    # The report shows both phases of the transfer run; the scratch run has no phases.
    assert "backbone frozen in epochs 1-10 (phase 1); fine-tuning starts at epoch 11" in (
        tuned.run_dir / "report.html").read_text()
    assert "Transfer learning:" not in (scratch.run_dir / "report.html").read_text()
