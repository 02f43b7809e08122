"""SavedModel export and the TF Serving model base: round trips, versions, atomic publish."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import kflow
from kflow.errors import ConfigError, RunError
from kflow.export import (
    BaseNotWritableError,
    ExportError,
    InputLayout,
    ModelBase,
    RepresentativeDataError,
    VersionExistsError,
    export_run,
    read_models_config,
    read_warmup_requests,
)
from kflow.export.saved_model import check_saved_model, write_saved_model
from tests.export_fixtures import (
    copy_run,
    digits_cnn_run,
    digits_tflite_export,
    load_test_split,
    tabular_tflite_export,
)


def _numeric_versions(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.isdigit())


def _hidden(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".kflow-s"))


@pytest.fixture(scope="module")
def digits_export():
    result = digits_tflite_export()  # SavedModel version 1 + TFLite, shared with other tests
    return result, result.version_dir.parents[1]


# -- round trips ------------------------------------------------------------------------------
def test_digits_saved_model_round_trip(digits_export):
    result, _ = digits_export
    run = kflow.load_run(result.run_dir)
    test = load_test_split(result.run_dir)
    loaded = tf.saved_model.load(str(result.version_dir))
    sig = loaded.signatures["serving_default"]
    out = {k: v.numpy() for k, v in sig(features=tf.constant(test.x)).items()}
    expected = run.model.predict({"features": test.x}, verbose=0)
    assert np.abs(out["probabilities"] - expected).max() <= 1e-5
    np.testing.assert_array_equal(out["class_id"], expected.argmax(-1))
    names = np.asarray(run.info["class_names"])
    assert [n.decode() for n in out["class_name"]] == list(names[expected.argmax(-1)])
    assert result.report["saved_model"]["max_abs_diff"] <= 1e-5


def test_digits_signature_names_inputs_and_outputs(digits_export):
    result, _ = digits_export
    sig = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    inputs = sig.structured_input_signature[1]
    assert list(inputs) == ["features"] and inputs["features"].shape.as_list() == [None, 8, 8, 1]
    assert sorted(sig.structured_outputs) == ["class_id", "class_name", "probabilities"]
    assert result.report["signature"]["outputs"]["probabilities"]["shape"] == [None, 10]


def test_dict_input_tabular_round_trip():
    result = tabular_tflite_export()
    run_dir = result.run_dir
    run = kflow.load_run(run_dir)
    sig = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    inputs = sig.structured_input_signature[1]
    assert sorted(inputs) == sorted(run.info["feature_names"])  # the recipe's feature names
    assert inputs["school"].dtype == tf.string and inputs["hours_studied"].shape.as_list() == [None]
    test = load_test_split(run_dir)
    assert inputs["tutoring"].dtype == tf.string  # a yes/no column is sent as text
    from kflow.export.layout import boolean_text

    feed = {k: tf.constant(boolean_text(v) if k == "tutoring" else
                           np.asarray(v, dtype=object if k == "school" else "float32"))
            for k, v in test.x.items()}
    assert any(np.isnan(test.x["sleep_hours"])) or any(test.x["school"] == "")  # raw rows
    out = {k: v.numpy() for k, v in sig(**feed).items()}
    ds = tf.data.Dataset.from_tensor_slices(
        {k: np.asarray(v)[:, None] for k, v in test.x.items()}).batch(64)
    p = run.model.predict(ds, verbose=0)[:, 0]
    assert np.abs(out["probabilities"][:, 1] - p).max() <= 1e-5
    np.testing.assert_array_equal(out["class_id"], (p > 0.5).astype("int64"))
    assert set(n.decode() for n in out["class_name"]) <= {"fail", "pass"}
    assert sorted(out) == ["class_id", "class_name", "probabilities"]
    request = read_warmup_requests(result.version_dir)[0].predict_log.request
    assert sorted(request.inputs) == sorted(inputs)
    assert request.inputs["school"].dtype == tf.string.as_datatype_enum


def test_small_dict_model_with_string_lookup(tmp_path):
    """A dict-input model built here: StringLookup (unseen tokens), IntegerLookup, a float."""
    import keras

    city = keras.Input(shape=(1,), dtype="string", name="city")
    level = keras.Input(shape=(1,), dtype="int64", name="level")
    age = keras.Input(shape=(1,), dtype="float32", name="age")
    x = keras.layers.Concatenate()([
        keras.layers.StringLookup(vocabulary=["lyon", "paris", "nice"],
                                  output_mode="one_hot")(city),
        keras.layers.IntegerLookup(vocabulary=[1, 2, 3], output_mode="one_hot")(level),
        keras.layers.Normalization(mean=40.0, variance=100.0)(age),
    ])
    out = keras.layers.Dense(1)(keras.layers.Dense(4, activation="relu")(x))
    model = keras.Model({"city": city, "level": level, "age": age}, out)
    layout = InputLayout.from_model(model)
    assert [s.name for s in layout.signature_inputs] == ["city", "level", "age"]
    rows = {"city": np.array(["lyon", "paris", "berlin", ""], dtype=object),
            "level": np.array([1, 3, 7, 2]), "age": np.array([20.0, 61.5, 33.0, 45.0])}
    write_saved_model(model, layout, "regression", None, tmp_path / "sm")
    report = check_saved_model(tmp_path / "sm", model, layout, "regression", None, rows)
    assert report["max_abs_diff"] <= 1e-5 and report["rows"] == 4
    sig = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert list(sig.structured_outputs) == ["value"]


def test_vector_input_is_split_into_named_features():
    import keras

    inp = keras.Input(shape=(3,), name="features")
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    layout = InputLayout.from_model(model, ["mean radius", "2nd", "mean radius"])
    assert [s.name for s in layout.signature_inputs] == ["mean_radius", "f_2nd", "mean_radius_2"]
    x = np.arange(6, dtype="float32").reshape(2, 3)
    feed = layout.signature_feed(x)
    np.testing.assert_array_equal(feed["f_2nd"], [1.0, 4.0])
    stacked = layout.to_model_tf({k: tf.constant(v) for k, v in feed.items()})
    np.testing.assert_array_equal(stacked.numpy(), x)
    whole = InputLayout.from_model(model, ["a", "b", "c"], split_features=False)
    assert [s.name for s in whole.signature_inputs] == ["features"]


# -- the model base ----------------------------------------------------------------------------
def test_models_config_parses_with_the_real_proto(digits_export, tmp_path):
    result, base = digits_export
    cfg = read_models_config(base / "models.config")
    entries = {c.name: c for c in cfg.model_config_list.config}
    assert entries["digits-cnn"].base_path == "/models/digits-cnn"
    assert entries["digits-cnn"].model_platform == "tensorflow"


def test_models_config_covers_every_model_and_keeps_edits(tmp_path):
    from google.protobuf import text_format

    base = tmp_path / "base"
    export_run(digits_cnn_run(), base=base, name="digits", warmup_rows=0)
    cfg = read_models_config(base / "models.config")
    cfg.model_config_list.config[0].model_version_policy.latest.num_versions = 2
    (base / "models.config").write_text(text_format.MessageToString(cfg))
    (base / "empty").mkdir()  # not a model: no numeric version with a SavedModel
    export_run(digits_cnn_run(), base=base, name="digits-v2", serving_root="/srv/m",
               warmup_rows=0)
    entries = {c.name: c for c in read_models_config(base / "models.config")
               .model_config_list.config}
    assert sorted(entries) == ["digits", "digits-v2"]
    assert entries["digits"].model_version_policy.latest.num_versions == 2  # kept
    assert entries["digits-v2"].base_path == "/srv/m/digits-v2"


def test_warmup_records_parse_as_prediction_logs(digits_export):
    result, _ = digits_export
    logs = read_warmup_requests(result.version_dir)
    assert len(logs) == 5 and result.report["saved_model"]["warmup_requests"] == 5
    request = logs[0].predict_log.request
    assert request.model_spec.name == "digits-cnn"
    assert request.model_spec.signature_name == "serving_default"
    tensor = tf.make_ndarray(request.inputs["features"])
    test = load_test_split(result.run_dir)
    np.testing.assert_array_equal(tensor, test.x[:1])  # real rows, batch of one


def test_versions_are_numbered_and_refused_unless_overwrite(tmp_path):
    base, run_dir = tmp_path / "base", digits_cnn_run()
    first = export_run(run_dir, base=base, warmup_rows=0)
    stale = base / "digits-cnn" / ".kflow-staging-v2-99999999-deadbeef"  # a killed export
    stale.mkdir()
    second = export_run(run_dir, base=base, warmup_rows=0)
    assert (first.version, second.version) == (1, 2) and not stale.exists()
    with pytest.raises(VersionExistsError, match="Version 1 of model 'digits-cnn' already "
                       "exists .*pass --overwrite to replace it, or leave out --version to "
                       "publish version 3"):
        export_run(run_dir, base=base, version=1)
    marker = first.version_dir / "assets" / "marker"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text("old")
    again = export_run(run_dir, base=base, version=1, overwrite=True, warmup_rows=0)
    assert again.version == 1 and not marker.exists()
    assert _numeric_versions(base / "digits-cnn") == ["1", "2"]
    assert not [p for p in (base / "digits-cnn").iterdir() if p.name.startswith(".kflow-r")]
    seven = export_run(run_dir, base=base, version=7, warmup_rows=0)
    assert seven.version_dir.name == "7" and ModelBase(base).next_version("digits-cnn") == 8


def test_version_is_invisible_until_checked_and_renamed(tmp_path, monkeypatch):
    import kflow.export.saved_model as sm

    base, seen = tmp_path / "base", {}
    real = sm.check_saved_model

    def spy(path, *args, **kwargs):
        model_dir = base / "digits-cnn"
        seen["versions"] = _numeric_versions(model_dir)
        seen["staging"] = _hidden(model_dir)
        seen["path"] = Path(path).name
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sm, "check_saved_model", spy)
    result = export_run(digits_cnn_run(), base=base, warmup_rows=0)
    assert seen["versions"] == [] and seen["staging"] == [seen["path"]]
    assert seen["path"].startswith(".kflow-staging-v1-")
    assert _numeric_versions(base / "digits-cnn") == ["1"] and not _hidden(base / "digits-cnn")
    assert (result.version_dir / "saved_model.pb").is_file()


def test_failed_export_leaves_no_partial_version(tmp_path, monkeypatch):
    import kflow.export.warmup as warmup

    run_dir = copy_run(digits_cnn_run(), "failing")
    base = tmp_path / "base"
    export_run(run_dir, base=base, warmup_rows=0)
    config_before = (base / "models.config").read_text()
    export_before = (run_dir / "export" / "export.json").read_text()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(warmup, "write_warmup_requests", broken)
    with pytest.raises(OSError, match="No space left"):
        export_run(run_dir, base=base, tflite="float32")
    model_dir = base / "digits-cnn"
    assert _numeric_versions(model_dir) == ["1"] and not _hidden(model_dir)
    assert (base / "models.config").read_text() == config_before
    assert (run_dir / "export" / "export.json").read_text() == export_before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".export-")]


# -- bad input ---------------------------------------------------------------------------------
def test_missing_run_and_missing_model_are_one_line_errors(tmp_path):
    with pytest.raises(RunError, match=r"Run directory '.*nope' does not exist\."):
        export_run(tmp_path / "nope", base=tmp_path / "base")
    (tmp_path / "photos").mkdir()
    with pytest.raises(RunError, match="is not a kflow run directory"):
        export_run(tmp_path / "photos", base=tmp_path / "base")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "status.json").write_text('{"state": "running"}')
    with pytest.raises(RunError, match="has no model.keras: the run did not finish"):
        export_run(tmp_path / "unfinished", base=tmp_path / "base")


def test_unwritable_base_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BaseNotWritableError, match=r"Model base '.*file/models' is not "
                       r"writable \(.*\); choose another --base"):
        export_run(digits_cnn_run(), base=blocker / "models")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(BaseNotWritableError, match="Permission denied"):
            export_run(digits_cnn_run(), base=ro)


def test_int8_without_representative_data(tmp_path):
    run_dir = copy_run(digits_cnn_run(), "nodata")
    (run_dir / "samples.npz").unlink()  # an older run, whose recipe file is gone
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("recipe: digits-cnn", "recipe: gone.py"))
    with pytest.raises(RepresentativeDataError, match=r"int8 quantization needs representative "
                       r"data, and the run's training split could not be loaded \(.*\)\. Pass "
                       r"--representative-data FILE"):
        export_run(run_dir, base=tmp_path / "base", tflite="float32,int8")
    assert not (tmp_path / "base" / "digits-cnn").exists()
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 8, 8, 1), "float32"))
    with pytest.raises(RepresentativeDataError, match="the representative sample is empty"):
        export_run(run_dir, base=tmp_path / "base", tflite="int8", representative_data=empty)
    # With a calibration file the export goes through; parity uses made-up rows and the
    # accuracy gate is skipped (no test split), which the report says.
    rows = tmp_path / "rows.npy"
    np.save(rows, load_test_split(digits_cnn_run()).x[:50])
    result = export_run(run_dir, base=tmp_path / "base", tflite="int8", latency_samples=2,
                        representative_data=rows)
    assert result.version == 1
    assert result.report["saved_model"]["rows_source"].startswith("made-up rows")
    int8 = result.report["tflite"]["variants"]["int8"]
    assert int8["passed"] is None and "accuracy" not in int8
    assert "skipped: no test data" in result.report["tflite"]["gate"]


@pytest.mark.parametrize("kwargs, message", [
    ({"tflite": "float32,int4"}, "Unknown TFLite variant 'int4' .*Allowed: float32, float16, "
                                 "dynamic, int8"),
    ({"name": "my model"}, "Model name 'my model' is not usable in a model base"),
    ({"version": 0}, "--version must be a positive integer. Got 0 instead"),
    ({"serving": False}, "Nothing to export"),
    ({"tflite_preprocessing": "both", "tflite": "float32"}, "tflite_preprocessing must be one "
                                                            "of: model, sidecar"),
])
def test_bad_options(tmp_path, kwargs, message):
    with pytest.raises((ConfigError, ExportError), match=message):
        export_run(digits_cnn_run(), base=tmp_path / "base", **kwargs)


# -- the command line ---------------------------------------------------------------------------
def test_cli_export_and_its_errors(tmp_path, capsys):
    from kflow.cli.main import main

    run_dir = copy_run(digits_cnn_run(), "cli")
    base = tmp_path / "base"
    assert main(["export", str(run_dir), "--base", str(base), "--warmup-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert f"SavedModel: {base / 'digits-cnn' / '1'}" in out and "export.json" in out
    report = json.loads((run_dir / "export" / "export.json").read_text())
    assert report["version"] == 1 and report["saved_model"]["warmup_requests"] == 2
    assert main(["export", str(run_dir), "--base", str(base), "--version", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"kflow: error: Version 1 of model 'digits-cnn' already exists in '{base}'; pass "
        "--overwrite to replace it, or leave out --version to publish version 2."]
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"kflow: error: Run directory '{tmp_path / 'nope'}' does not exist."]
    assert main(["export", str(run_dir), "--tflite", "int4"]) == 2
    assert "Unknown TFLite variant 'int4'" in capsys.readouterr().err


def test_export_section_survives_a_rewritten_run_report(tmp_path):
    """The export section lives in export/report_section.html; every render includes it."""
    from kflow.insight.report import write_report

    run_dir = copy_run(digits_cnn_run(), "report")
    write_report(run_dir)
    result = export_run(run_dir, base=tmp_path / "base", warmup_rows=0)
    assert any("report.html" in note for note in result.notes)
    export_run(run_dir, base=tmp_path / "base", warmup_rows=0)
    page = (run_dir / "report.html").read_text()
    assert page.count("digits-cnn/2") >= 1 and "digits-cnn/1" not in page
    write_report(run_dir)  # `kflow report` re-renders: the section stays, once
    again = (run_dir / "report.html").read_text()
    section = (run_dir / "export" / "report_section.html").read_text()
    assert again.count(section) == 1 and again.index(section) < again.index("</body>")
    assert (run_dir / "export" / "export.html").is_file()


def test_regression_gate_uses_relative_mae():
    from kflow.export.exporter import _gate, _gate_failure

    variants = {"float32": {"mae": 10.0}, "float16": {"mae": 10.2}, "int8": {"mae": 11.0}}
    _gate("regression", variants, 10.0, 1.0, 5.0)
    assert [v["passed"] for v in variants.values()] == [True, True, False]
    failure = _gate_failure("regression", variants, 1.0, 5.0)
    assert str(failure).startswith("TFLite int8 MAE 11 is 10.0% above float32; the gate "
                                   "allows 5% (--max-error-increase).")


def test_export_options_by_name_or_object_and_unknown_names_listed(tmp_path):
    from kflow.export import ExportOptions

    with pytest.raises(TypeError, match=r"export_run\(\) got unknown option\(s\) bogus\. "
                                        r"Valid options: int8_io, max_accuracy_drop, "):
        export_run(tmp_path, bogus=1)
    assert ExportOptions.resolve(None, {"warmup_rows": 0}).warmup_rows == 0
    opts = ExportOptions(warmup_rows=2)
    assert ExportOptions.resolve(opts, {"int8_io": True}) == ExportOptions(warmup_rows=2,
                                                                          int8_io=True)
