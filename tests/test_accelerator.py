"""Accelerator settings (#12): precision, jit_compile, determinism, TPU batches, benchmark."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import kflow
from kflow.training.accelerator import (
    fixed_batches,
    precision_policy,
    resolve_deterministic,
    tpu_steps_per_execution,
)
from kflow.training.trainer import Trainer
from tests.conftest import REPO

SHORT = ["grad_log_every=0", "early_stopping=false"]


def test_mixed_float16_model_computes_in_float16_with_a_float32_head_and_loss_scaling():
    trainer = Trainer("digits-mlp", set_args=["precision=mixed_float16", *SHORT], verbose=0)
    model = trainer.build_model(trainer.splits().train, insight=False)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense[0].compute_dtype == "float16" and dense[0].variable_dtype == "float32"
    assert dense[-1].name == "probabilities" and dense[-1].compute_dtype == "float32"
    assert model.outputs[0].dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # restored after building


def test_precision_policy_rejects_an_unknown_precision():
    with pytest.raises(kflow.errors.ConfigError, match=r"precision must be one of float32, "
                       r"mixed_float16, mixed_bfloat16. Got 'float8' instead."):
        with precision_policy("float8"):
            pass


def test_unknown_precision_from_set_is_a_config_error():
    with pytest.raises(kflow.errors.ConfigError, match=r"'precision' parameter"):
        Trainer("digits-mlp", set_args=["precision=half"])


def test_bfloat16_trains_digits_cnn_within_one_point_of_float32_and_exports_float32(tmp_path):
    accuracy = {}
    for precision in ("float32", "mixed_bfloat16"):
        run = kflow.train("digits-cnn", epochs=8, run_dir=tmp_path / precision, verbose=0,
                          set_args=[f"precision={precision}", "filters=16", "dense_units=64",
                                    "dropout=0.0", *SHORT])
        accuracy[precision] = run.metrics["test"]["accuracy"]
    assert accuracy["float32"] > 0.8, accuracy
    assert abs(accuracy["mixed_bfloat16"] - accuracy["float32"]) <= 0.01, accuracy
    config = yaml.safe_load((tmp_path / "mixed_bfloat16" / "config.yaml").read_text())
    assert config["training"]["precision"] == "mixed_bfloat16"

    saved = keras.saving.load_model(tmp_path / "mixed_bfloat16" / "model.keras")
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    result = kflow.export_run(tmp_path / "mixed_bfloat16", base=tmp_path / "exports",
                              tflite="float32", log=lambda _: None)
    loaded = tf.saved_model.load(str(result.version_dir))
    signature = loaded.signatures["serving_default"]
    floats = {k: s.dtype for k, s in signature.structured_outputs.items() if s.dtype.is_floating}
    assert floats and set(floats.values()) == {tf.float32}, floats
    interpreter = tf.lite.Interpreter(model_path=str(result.tflite_files["float32"]))
    outputs = {d["dtype"] for d in interpreter.get_output_details()}
    assert np.float32 in outputs and not outputs & {np.float16, tf.bfloat16.as_numpy_dtype}
    assert interpreter.get_input_details()[0]["dtype"] == np.float32


def test_jit_compile_setting_reaches_compile(monkeypatch):
    seen = []
    original = keras.Model.compile

    def compile_(self, *args, **kwargs):
        seen.append(kwargs.get("jit_compile"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", compile_)
    for value in ("false", "true", "auto"):
        trainer = Trainer("digits-mlp", set_args=[f"jit_compile={value}", *SHORT], verbose=0)
        trainer.build_model(trainer.splits().train, insight=False)
    assert seen == [False, True, "auto"]
    with pytest.raises(kflow.errors.ConfigError, match=r'a bool \(true or false\) or "auto"'):
        Trainer("digits-mlp", set_args=["jit_compile=maybe"])


def test_determinism_auto_is_recorded_as_the_value_used():
    assert resolve_deterministic("auto", gpus=0) is True
    assert resolve_deterministic("auto", gpus=2) is False
    assert resolve_deterministic(True, gpus=2) is True
    trainer = Trainer("digits-mlp")
    assert trainer.config()["training"]["deterministic"] is True  # this machine has no GPU
    off = Trainer("digits-mlp", set_args=["deterministic=false"])
    assert off.config()["training"]["deterministic"] is False


def test_cli_deterministic_and_precision_flags_are_recorded_in_config_yaml(tmp_path):
    from tests.conftest import run_cli

    run_cli("train", "digits-mlp", "--epochs", "1", "--deterministic", "--precision",
            "mixed_bfloat16", "--set", "grad_log_every=0", "--run-dir", str(tmp_path / "r"),
            "--quiet", cwd=tmp_path)
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert config["training"]["deterministic"] is True
    assert config["training"]["precision"] == "mixed_bfloat16"


class TPUStrategy:  # stands in for tf.distribute.TPUStrategy: the name is what kflow checks
    num_replicas_in_sync = 8

    def scope(self):
        return tf.distribute.get_strategy().scope()


def test_tpu_strategy_gets_fixed_shape_batches_and_a_whole_epoch_per_call():
    trainer = Trainer("digits-mlp", set_args=["batch_size=64", *SHORT], verbose=0)
    trainer._strategy = TPUStrategy()
    train = trainer.splits().train
    ds = trainer.dataset(train, training=True)
    x_spec, y_spec = ds.element_spec
    assert x_spec.shape[0] == 64 and y_spec.shape[0] == 64
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert sizes == [64] * (len(train) // 64)  # 1257 rows: the last 41 are dropped
    assert trainer._steps_per_execution(trainer.steps_per_epoch(train)) == 20
    assert tpu_steps_per_execution(20) == 20
    val = trainer.dataset(trainer.splits().val, training=False)
    assert val.element_spec[0].shape[0] is None  # evaluation keeps every row


def test_fixed_batches_on_a_three_part_dataset():
    ds = tf.data.Dataset.from_tensor_slices(
        (np.arange(10.0), np.arange(10), np.ones(10))).batch(4)
    out = list(fixed_batches(ds, 4))
    assert len(out) == 2 and all(len(part) == 4 for batch in out for part in batch)


def test_benchmark_skips_in_one_line_without_a_gpu():
    proc = subprocess.run([sys.executable, "benchmarks/bench_accelerators.py"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [
        "bench_accelerators: skipped: no GPU visible to TensorFlow"]
