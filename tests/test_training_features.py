"""Class weights, label smoothing, plateau / one-cycle, EMA, accumulation, profiling (#15)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kflow
from kflow.data.dataset import Dataset
from kflow.errors import ConfigError
from kflow.optim.optimizers import build_optimizer
from kflow.optim.schedules import build_schedule
from kflow.training.features import (
    PlateauScheduler,
    class_weights,
    parse_profile_steps,
    sample_weights,
)
from kflow.training.trainer import Trainer

FAST = {"grad_log_every": 0, "early_stopping": False, "steps_per_execution": 1,
        "val_fraction": 0.2, "test_fraction": 0.2}


def _imbalanced(n: int = 200, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (rng.random(n) < 0.15).astype("int64")  # ~15 % positives
    x[y == 1] += 1.0
    return Dataset(x, y, task="binary", class_names=["no", "yes"])


def _three_classes(n: int = 150, seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = (rng.normal(size=(n, 4)) + y[:, None]).astype("float32")
    return Dataset(x, y, task="multiclass")


class Linear(kflow.Recipe):
    """A logistic / softmax regression on a synthetic table (no hidden layer, no dropout)."""

    data: Dataset | None = None

    def load_data(self):
        return self.data if self.data is not None else _imbalanced()

    def build_backbone(self, x):
        return x


def _recipe(data: Dataset | None = None, **hp) -> kflow.Recipe:
    cls = Linear if data is None else type("LinearOn", (Linear,), {"data": data})
    return cls(**{**FAST, **hp})


def _trainer(data: Dataset | None = None, **hp) -> Trainer:
    return Trainer(_recipe(data, **hp), seed=0, verbose=0)


def _first_epoch_loss(trainer: Trainer) -> tuple[float, np.ndarray, object]:
    splits = trainer.splits()
    model = trainer.build_model(splits.train)
    probs = np.asarray(model.predict(splits.train.x, verbose=0), dtype=np.float64)
    outcome = trainer.fit(model, splits.train, None, verbose=0)
    return outcome.history["loss"][0], probs, splits.train


# -- class weights -------------------------------------------------------------------------
def test_balanced_class_weights_match_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 9 + [1] * 3 + [2] * 3)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(class_weights(y, "balanced"), expected, rtol=1e-6)
    # by name or id; others keep weight 1
    np.testing.assert_allclose(class_weights(y, {"b": 4.0, "0": 0.5}, ["a", "b", "c"]),
                               [0.5, 4.0, 1.0])
    with pytest.raises(ConfigError, match="'d', which is not a class"):
        class_weights(y, {"d": 2.0}, ["a", "b", "c"])


def test_class_weight_hyperparameter_parses_and_rejects():
    spec = kflow.Recipe.hparam_specs()["class_weight"]
    assert spec.validate(spec.parse("balanced")) == "balanced"
    assert spec.validate(spec.parse("0:1,1:5")) == {"0": 1.0, "1": 5.0}
    with pytest.raises(ConfigError, match="class_weight"):
        spec.validate(spec.parse("heavy"))
    with pytest.raises(ConfigError, match=">= 0"):
        spec.validate({"0": -1})


def test_balanced_weights_change_the_loss_as_computed_by_hand():
    # One full batch: the first epoch's loss is the weighted loss at the initial weights.
    loss_w, probs, train = _first_epoch_loss(_trainer(class_weight="balanced",
                                                      batch_size="full", epochs=1))
    y = train.y.astype(np.float64)
    p = np.clip(probs[:, 0], 1e-7, 1 - 1e-7)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    counts = np.bincount(train.y, minlength=2)
    w = (len(y) / (2 * counts))[train.y]
    assert counts[1] < counts[0] / 3  # imbalanced
    assert loss_w == pytest.approx(float(np.mean(w * bce)), rel=1e-4)
    loss_plain, _, _ = _first_epoch_loss(_trainer(batch_size="full", epochs=1))
    assert loss_plain == pytest.approx(float(np.mean(bce)), rel=1e-4)
    assert abs(loss_w - loss_plain) > 0.01


def test_weight_column_of_a_table(tmp_path):
    import pandas as pd

    from kflow.data.tabular import load_table

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "w": [1, 2, 0.5, 1],
                          "label": ["x", "y", "x", "y"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_table(tmp_path / "t.csv", "label", weight_column="w")
    assert sorted(data.x) == ["a"]
    np.testing.assert_allclose(data.sample_weight, [1, 2, 0.5, 1])
    np.testing.assert_allclose(data.subset(np.array([3, 1])).sample_weight, [1, 2])
    # times the class weights: balanced gives 1 for two equal classes
    np.testing.assert_allclose(sample_weights(data, "balanced"), [1, 2, 0.5, 1])
    frame.loc[2, "w"] = -1
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(kflow.errors.DataError, match="rows \\[?2"):
        load_table(tmp_path / "t.csv", "label", weight_column="w")


# -- label smoothing -----------------------------------------------------------------------
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_label_smoothing_loss_as_computed_by_hand(task):
    s = 0.2
    data = _imbalanced() if task == "binary" else _three_classes()
    loss, probs, train = _first_epoch_loss(_trainer(data, label_smoothing=s,
                                                    batch_size="full", epochs=1))
    if task == "binary":
        t = train.y * (1 - s) + s / 2
        p = np.clip(probs[:, 0], 1e-7, 1 - 1e-7)
        expected = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    else:
        t = np.eye(3)[train.y] * (1 - s) + s / 3
        expected = np.mean(-(t * np.log(np.clip(probs, 1e-7, 1))).sum(axis=1))
    assert loss == pytest.approx(float(expected), rel=1e-4)


def test_label_smoothing_rejected_for_regression():
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(50, 2)).astype("float32"), rng.normal(size=50),
                   task="regression")
    trainer = _trainer(data, label_smoothing=0.1)
    with pytest.raises(ConfigError, match="label_smoothing applies to classification"):
        trainer.build_model(trainer.splits().train)


# -- schedules -----------------------------------------------------------------------------
def test_one_cycle_rates():
    lr = build_schedule("one_cycle", 0.1, steps_per_epoch=10, epochs=4)  # 40 steps
    rates = [float(lr(step)) for step in (0, 10, 39, 40)]
    assert rates[0] == pytest.approx(0.1 / 25)
    assert rates[1] == pytest.approx(0.1)  # the peak after 25 % of the steps
    assert rates[3] == pytest.approx(0.1 / 25 / 1e4, rel=1e-3)
    assert rates[0] < rates[1] and rates[2] < rates[1]


def test_plateau_lowers_the_rate_after_patience_epochs():
    assert build_schedule("plateau", 0.1, steps_per_epoch=5, epochs=3) == 0.1
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=build_optimizer("sgd", 0.1), loss="mse")
    cb = PlateauScheduler("val_loss", "min", factor=0.5, patience=2)
    cb.set_model(model)
    cb.on_train_begin()
    rates = []
    for epoch, val in enumerate([1.0, 0.9, 0.95, 0.91, 0.92, 0.93]):
        cb.on_epoch_end(epoch, {"val_loss": val})
        rates.append(round(float(model.optimizer.learning_rate.numpy()), 6))
    # best 0.9 at epoch 2; epochs 3 and 4 do not improve -> halved after epoch 4;
    # epochs 5 and 6 do not improve either -> halved again after epoch 6.
    assert rates == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert cb.reductions == [(4, pytest.approx(0.05)), (6, pytest.approx(0.025))]
    state = cb.get_resume_state()
    other = PlateauScheduler("val_loss", "min", factor=0.5, patience=2)
    other.set_resume_state(state)
    assert other.get_resume_state() == state


def test_plateau_in_a_run_logs_the_lowered_rate(tmp_path):
    run = Trainer(_recipe(None, **{"lr_schedule": "plateau", "plateau_patience": 1,
                                  "decay_rate": 0.5, "learning_rate": 5.0, "epochs": 6,
                                  "optimizer": "sgd"}), seed=0, verbose=0).run(
        run_dir=tmp_path / "run")
    key = "lr" if "lr" in run.history else "learning_rate"
    lrs = run.history[key]
    assert lrs[0] == pytest.approx(5.0)
    assert min(lrs) < 5.0  # a huge rate stalls val_loss, and the rate is halved
    assert all(b in (a, pytest.approx(a / 2)) for a, b in zip(lrs, lrs[1:], strict=False))


# -- EMA -----------------------------------------------------------------------------------
def _linear_model(seed: int = 0) -> keras.Model:
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed))(
        inputs)
    return keras.Model(inputs, outputs)


def test_ema_weights_equal_the_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype("float32")[:, None]
    m = 0.8
    model = _linear_model()
    model.compile(optimizer=build_optimizer("sgd", 0.05, ema=True, ema_momentum=m),
                  loss="mse", steps_per_execution=1)
    raw = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs=None: raw.append(
            [np.array(w) for w in model.get_weights()]))
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[record])
    average = raw[0]
    for weights in raw[1:]:
        average = [m * a + (1 - m) * w for a, w in zip(average, weights, strict=True)]
    assert len(raw) == 8
    for got, want in zip(model.get_weights(), average, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.get_weights()[0], raw[-1][0])


def test_ema_run_saves_the_averaged_weights(tmp_path):
    """Through the trainer (EMA swap callback, checkpoints): model.keras holds the EMA."""
    m = 0.7
    trainer = Trainer(_recipe(None, **{"ema": True, "ema_momentum": m, "epochs": 2,
                                      "batch_size": 32}), seed=0, verbose=0)
    raw = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([np.array(w) for w in self.model.trainable_weights])

    run = trainer.run(run_dir=tmp_path / "run", callbacks=[Record()])
    average = raw[0]
    for weights in raw[1:]:
        average = [m * a + (1 - m) * w for a, w in zip(average, weights, strict=True)]
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    kernel = [w for w in saved.weights if w.path.endswith("kernel")][0]
    want = [a for a in average if a.ndim == 2][0]
    np.testing.assert_allclose(np.array(kernel), want, rtol=1e-5, atol=1e-6)
    last_raw = [a for a in raw[-1] if a.ndim == 2][0]
    assert not np.allclose(np.array(kernel), last_raw, atol=1e-4)  # the average, not the last
    np.testing.assert_allclose(np.array(run.model.trainable_weights[0]), want, rtol=1e-5,
                               atol=1e-6)  # what the run evaluated on test


# -- gradient accumulation -----------------------------------------------------------------
def test_accumulating_n_steps_equals_one_step_of_n_times_the_batch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    small = _linear_model(3)
    small.compile(optimizer=build_optimizer("sgd", 0.1, grad_accumulation=4), loss="mse",
                  steps_per_execution=1)
    big = _linear_model(3)
    big.compile(optimizer=build_optimizer("sgd", 0.1), loss="mse")
    start = [np.array(w) for w in big.get_weights()]
    small.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)  # 4 steps, 1 update
    big.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)    # 1 step of 4x batch
    for a, b, s in zip(small.get_weights(), big.get_weights(), start, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert not np.allclose(a, s)
    with pytest.raises(ConfigError, match="grad_accumulation"):
        build_optimizer("sgd", 0.1, grad_accumulation=0)


# -- profiling -----------------------------------------------------------------------------
def test_profile_steps_parse():
    assert parse_profile_steps("3:5") == (3, 5)
    assert parse_profile_steps("4") == (4, 4)
    assert parse_profile_steps(None) is None
    for bad in ("5:3", "0:2", "a:b"):
        with pytest.raises(ConfigError, match="--profile-steps"):
            parse_profile_steps(bad)


def test_profile_steps_write_a_tensorboard_profile(tmp_path):
    Trainer(_recipe(None, **{"epochs": 2, "batch_size": 16}), seed=0, verbose=0,
            profile_steps="2:4").run(run_dir=tmp_path / "run")
    profiles = list((tmp_path / "run" / "tensorboard" / "plugins" / "profile").rglob("*.pb"))
    assert profiles and all(p.stat().st_size > 0 for p in profiles)
