"""TFLite export: the four variants in LiteRT, the accuracy gate, the preprocessing sidecar."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from kflow.export import (
    AccuracyGateError,
    TFLiteConversionError,
    TFLiteRunner,
    apply_sidecar,
    export_run,
    parse_variants,
)
from kflow.export.sidecar import numeric_model, plan_sidecar, sidecar_spec
from tests.export_fixtures import (
    copy_run,
    digits_cnn_run,
    digits_int8_io_export,
    digits_tflite_export,
    tabular_run,
    tabular_tflite_export,
    trained_digits_cnn_run,
)

ALL = ["float32", "float16", "dynamic", "int8"]


@pytest.fixture(scope="module")
def digits_tflite():
    return digits_tflite_export()


@pytest.fixture(scope="module")
def tabular_tflite():
    return tabular_tflite_export()


def test_parse_variants():
    assert parse_variants("all") == ALL
    assert parse_variants("int8, float32,int8") == ["float32", "int8"]
    assert parse_variants(None) == [] and parse_variants("none") == []
    with pytest.raises(Exception, match=r"Unknown TFLite variant 'flaot16' \(did you mean "
                                        r"'float16'\?\)"):
        parse_variants("flaot16")


def test_every_digits_variant_runs_in_litert_within_its_gate(digits_tflite):
    tfl = digits_tflite.report["tflite"]
    assert list(tfl["variants"]) == ALL and tfl["reference"] == "float32"
    for name, info in tfl["variants"].items():
        path = digits_tflite.export_dir / info["file"]
        assert path.stat().st_size == info["size_bytes"]
        assert info["passed"] is True, (name, info)
        assert info["drop_points"] <= 1.0 and info["mean_latency_ms"] > 0
        assert 0.5 < info["accuracy"] <= 1.0
    assert tfl["variants"]["float32"]["max_abs_diff_vs_keras"] < 1e-4
    sizes = {n: i["size_bytes"] for n, i in tfl["variants"].items()}
    assert sizes["int8"] <= 0.30 * sizes["float32"] and sizes["float16"] < 0.6 * sizes["float32"]


def test_interpreter_is_litert_and_inputs_are_named(digits_tflite):
    from ai_edge_litert.interpreter import Interpreter

    runner = TFLiteRunner(digits_tflite.tflite_files["int8"])
    assert isinstance(runner.interpreter, Interpreter)
    assert list(runner.inputs) == ["features"]
    assert set(runner.outputs) == {"probabilities", "class_id"}  # as the SavedModel
    assert runner.inputs["features"]["dtype"] == np.float32  # int8 inside, float I/O


def test_metadata_and_export_json(digits_tflite):
    export_dir = digits_tflite.export_dir
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["task"] == "multiclass" and meta["class_names"][3] == "3"
    assert meta["inputs"] == [{"name": "features", "tflite_name": "features",
                               "dtype": "float32", "shape": [None, 8, 8, 1]}]
    assert meta["variants"]["int8"] == "model_int8.tflite" and meta["preprocessing"] is None
    report = json.loads((export_dir / "export.json").read_text())
    assert report["saved_model"]["max_abs_diff"] <= 1e-5
    assert set(report["tflite"]["variants"]) == set(ALL)
    html = (export_dir / "export.html").read_text()
    assert "<table>" in html and "int8" in html


def test_int8_io_quantizes_inputs_and_outputs():
    result = digits_int8_io_export()
    runner = TFLiteRunner(result.tflite_files["int8"])
    assert runner.inputs["features"]["dtype"] == np.int8
    assert runner.outputs["probabilities"]["dtype"] == np.int8
    info = result.report["tflite"]["variants"]["int8"]
    assert info["passed"] is True and result.report["tflite"]["reference"] == "keras"


def test_accuracy_gate_fails_with_one_line_and_writes_nothing(tmp_path, monkeypatch):
    import kflow.export.tflite as tfl

    run_dir = copy_run(digits_cnn_run(), "gate")
    real, calls = tfl.score, []

    def worse_int8(task, y, head):  # keras, then int8: int8 loses 5 points
        calls.append(1)
        value = real(task, y, head)
        return value - 0.05 if len(calls) == 2 else value

    monkeypatch.setattr(tfl, "score", worse_int8)
    with pytest.raises(AccuracyGateError) as info:
        export_run(run_dir, base=tmp_path / "base", tflite="int8", latency_samples=2)
    message = str(info.value)
    assert "\n" not in message
    assert re.match(r"TFLite int8 accuracy 0\.\d{4} is \d\.\d\d points below Keras; the gate "
                    r"allows 1 \(--max-accuracy-drop\)\. ", message)
    assert message.endswith("Nothing was exported.")
    assert not (tmp_path / "base" / "digits-cnn").exists()
    assert not (run_dir / "export").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".export-")]


def test_tabular_preprocessing_the_converter_cannot_take_is_reported():
    run_dir = copy_run(tabular_run(), "tabular-model")
    with pytest.raises(TFLiteConversionError) as info:
        export_run(run_dir, serving=False, tflite="float32")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("The TFLite converter rejected the float32 model: unsupported "
                              "TensorFlow ops tf.")
    assert "school_impute (keras.ops.where)" in message
    assert "re-run with --tflite-preprocessing sidecar" in message
    assert not (run_dir / "export").exists()


def test_every_tabular_variant_runs_within_its_gate_with_a_sidecar(tabular_tflite):
    tfl = tabular_tflite.report["tflite"]
    assert tfl["preprocessing"] == "sidecar" and list(tfl["variants"]) == ALL
    for name, info in tfl["variants"].items():
        assert info["passed"] is True, (name, info)
    assert tfl["variants"]["float32"]["max_abs_diff_vs_keras"] < 1e-5
    spec = json.loads((tabular_tflite.export_dir / "preprocessing.json").read_text())
    ops = [s["op"] for s in spec["steps"]]
    assert {"impute", "normalize", "lookup", "concat"} <= set(ops)
    assert sorted(spec["inputs"]) == sorted(
        json.loads((tabular_tflite.run_dir / "run.json").read_text())["feature_names"])
    assert list(spec["outputs"]) == ["preprocessed"]


def test_sidecar_equals_the_keras_preprocessing_on_raw_rows():
    """Impute, Normalization, StringLookup/IntegerLookup, Discretization, CategoryEncoding."""
    import keras
    import tensorflow as tf

    from kflow.data.impute import Impute

    city = keras.Input(shape=(1,), dtype="string", name="city")
    level = keras.Input(shape=(1,), dtype="int64", name="level")
    age = keras.Input(shape=(1,), dtype="float32", name="age")
    income = keras.Input(shape=(1,), dtype="float32", name="income")
    c = keras.layers.StringLookup(vocabulary=["lyon", "paris", "nice"], output_mode="one_hot",
                                  name="city_lookup")(Impute("paris", name="city_impute")(city))
    lv = keras.layers.IntegerLookup(vocabulary=[1, 2, 3], name="level_lookup")(level)
    lv = keras.layers.CategoryEncoding(num_tokens=5, output_mode="one_hot", name="level_1h")(lv)
    nums = keras.layers.Concatenate(name="nums")([age, income])
    nums = Impute([30.0, 1000.0], name="num_impute")(nums)
    nums = keras.layers.Normalization(mean=[40.0, 2000.0], variance=[100.0, 4e6],
                                      name="scale")(nums)
    bucket = keras.layers.Discretization(bin_boundaries=[18.0, 65.0], output_mode="one_hot",
                                         name="age_bucket")(age)
    x = keras.layers.Concatenate(name="preprocessed")([c, lv, nums, bucket])
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model({"city": city, "level": level, "age": age, "income": income}, out)

    plan = plan_sidecar(model)
    assert list(plan.frontier) == ["preprocessed"]
    spec = json.loads(json.dumps(sidecar_spec(model, plan)))  # survives JSON
    rows = {"city": np.array([["lyon"], [""], ["berlin"], ["nice"]], dtype=object),
            "level": np.array([[1], [3], [9], [-1]], dtype="int64"),
            "age": np.array([[10.0], [25.0], [70.0], [40.0]], dtype="float32"),
            "income": np.array([[np.nan], [1500.0], [3000.0], [0.0]], dtype="float32")}
    got = apply_sidecar(spec, rows)["preprocessed"]
    pre = keras.Model(model.input, x)
    want = pre({k: tf.constant(v) for k, v in rows.items()}).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    part = numeric_model(model, plan)
    np.testing.assert_allclose(part({"preprocessed": got}).numpy(),
                               model({k: tf.constant(v) for k, v in rows.items()}).numpy(),
                               atol=1e-6)


def test_sidecar_refuses_string_ops_it_cannot_express():
    import keras

    from kflow.export.sidecar import preprocessing_layer_names

    text = keras.Input(shape=(1,), dtype="string", name="text")
    x = keras.layers.Hashing(num_bins=8, output_mode="one_hot", name="hash")(text)
    model = keras.Model(text, keras.layers.Dense(1, name="head")(x))
    with pytest.raises(TFLiteConversionError, match="string tensor 'text' feeds layer 'hash' "
                       r"\(Hashing\), which has no sidecar equivalent"):
        plan_sidecar(model)
    assert preprocessing_layer_names(model) == []


@pytest.mark.slow
def test_int8_digits_cnn_is_small_and_within_one_point():
    """Acceptance: int8 <= 30% of float32's size, accuracy within 1 point (trained model)."""
    run_dir = copy_run(trained_digits_cnn_run(), "trained")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.97, "the model must be properly trained"
    result = export_run(run_dir, serving=False, tflite="float32,int8", latency_samples=20)
    v = result.report["tflite"]["variants"]
    assert v["int8"]["size_bytes"] <= 0.30 * v["float32"]["size_bytes"]
    assert abs(v["int8"]["accuracy"] - v["float32"]["accuracy"]) <= 0.01
    assert v["float32"]["accuracy"] > 0.97 and v["int8"]["passed"] and v["float32"]["passed"]


def test_a_variant_the_recipe_does_not_offer_is_skipped_by_all_and_refused_by_name(tmp_path):
    """lecture-step-size declines int8 (`Recipe.tflite_not_offered`), with its reason."""
    import kflow
    from kflow.cli.main import main
    from kflow.errors import ConfigError

    run = kflow.train("lecture-step-size", run_dir=tmp_path / "run", epochs=3, verbose=0)
    info = json.loads((run.run_dir / "run.json").read_text())
    assert "12 % of the MAE" in info["tflite_not_offered"]["int8"]
    with pytest.raises(ConfigError, match=r"TFLite int8 is not offered for lecture-step-size: "
                                          r"a linear model .* Offered: float32, float16, "
                                          r"dynamic\. Nothing was exported\."):
        export_run(run.run_dir, base=tmp_path / "base", tflite="float32,int8")
    assert not (tmp_path / "base").exists() and not (run.run_dir / "export").exists()
    assert main(["export", str(run.run_dir), "--tflite", "int8", "--base",
                 str(tmp_path / "base"), "--quiet"]) == 2
    result = export_run(run.run_dir, base=tmp_path / "base", tflite="all", warmup_rows=0)
    tfl = result.report["tflite"]
    assert sorted(tfl["variants"]) == ["dynamic", "float16", "float32"]
    assert set(tfl["not_offered"]) == {"int8"}
    assert sorted(result.tflite_files) == ["dynamic", "float16", "float32"]
