"""Raw rows everywhere (issue 14): rows copied from students.csv as text, header
included, give the same answer through `kflow predict`, REST (`:predict` and
`:classify`), the SavedModel and the TFLite runner; one interface per model in
every artifact; TFLite metadata inside the file; int8 on breast-cancer-mlp.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.export_fixtures import copy_run, fresh_dir, tabular_run

STUDENTS = REPO / "recipes" / "example_tabular" / "students.csv"


def _rows_text() -> str:
    """The header and a few rows of students.csv as a user copies them, with an empty
    numeric cell, an empty category cell and yes/no values."""
    lines = STUDENTS.read_text().splitlines()
    body = [ln for ln in lines[1:] if ",," not in ln][:6]
    cells = [ln.split(",") for ln in body]
    cells[0][1] = ""  # sleep_hours missing
    cells[1][3] = ""  # school missing
    cells[2][4] = "Yes"  # any case
    return "\n".join([lines[0], *(",".join(c) for c in cells)]) + "\n"


@pytest.fixture(scope="module")
def students_export():
    from kflow.export import export_run

    run_dir = copy_run(tabular_run(), "raw-rows")
    base = fresh_dir("raw-rows-base")
    result = export_run(run_dir, base=base, name="students", tflite="float32",
                        tflite_preprocessing="sidecar", latency_samples=2)
    return result


def _runner():
    spec = importlib.util.spec_from_file_location(
        "kflow_tflite_runner", REPO / "tflite" / "kflow_tflite_runner.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kflow_tflite_runner"] = module
    spec.loader.exec_module(module)
    return module


def test_students_rows_same_answer_everywhere(students_export, tmp_path, capsys):
    import tensorflow as tf

    from kflow.cli.predict import typed_csv_rows
    from kflow.export.saved_model import serialize_examples
    from kflow.serve import ServerOptions, ServerThread
    from kflow.serve.client import Client

    text = _rows_text()
    rows_file = tmp_path / "rows.csv"
    rows_file.write_text(text)
    n = len(text.splitlines()) - 1

    # The SavedModel, called directly: the signature keys with text yes/no and NaN.
    loaded = tf.saved_model.load(str(students_export.version_dir))
    sig = loaded.signatures["serving_default"]
    dtypes = {k: "DT_STRING" if v.dtype == tf.string else "DT_FLOAT"
              for k, v in sig.structured_input_signature[1].items()}
    rows, ignored = typed_csv_rows(text, dtypes)
    assert ignored == ["result"]
    assert "previous_score" in rows[0] and np.isnan(rows[0]["sleep_hours"])
    feed = {k: tf.constant([r[k] for r in rows]) for k in dtypes}
    direct = sig(**feed)["probabilities"].numpy()
    assert direct.shape == (n, 2)

    # The classification signature on tf.Examples keyed by the file's column names.
    examples = typed_csv_rows(text, dtypes, examples=True)[0]
    assert "previous score" in examples[0] and "sleep_hours" not in examples[0]
    cols = {k: np.asarray([r.get(k, "" if dtypes.get(k) == "DT_STRING" else np.nan)
                           for r in rows], dtype=object if dtypes[k] == "DT_STRING" else
                          "float32") for k in dtypes}
    names = {"previous_score": "previous score"}
    scores = loaded.signatures["classification"](
        inputs=tf.constant(serialize_examples(cols, names)))["scores"].numpy()
    np.testing.assert_allclose(scores, direct, atol=1e-6)

    # The TFLite runner on the same text file (LiteRT + NumPy, preprocessing.json).
    runner = _runner()
    model = runner.Model(str(students_export.tflite_files["float32"]))
    raw = runner.read_inputs(str(rows_file), model.inputs)
    lite = np.asarray([r["probabilities"] for r in model.predictions(model.head(raw))])
    np.testing.assert_allclose(lite, direct, atol=1e-5)

    # REST through kflow serve: kflow predict (CSV), :predict and :classify.
    with ServerThread(students_export.version_dir.parents[1],
                      ServerOptions(port=0, poll_seconds=0)) as server:
        from kflow.cli.main import main

        capsys.readouterr()
        assert main(["predict", "students", str(rows_file), "--url", server.url]) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        np.testing.assert_allclose([p["probabilities"] for p in printed], direct, atol=1e-5)
        assert main(["predict", "students", str(rows_file), "--url", server.url,
                     "--api", "classify"]) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        got = [[score for _, score in row] for row in printed]
        np.testing.assert_allclose(got, direct, atol=1e-5)
        client = Client(server.url)
        answer = client.request("POST", "/v1/models/students:classify", {
            "signature_name": "classification", "examples": examples})
        np.testing.assert_allclose([[s for _, s in r] for r in answer["results"]], direct,
                                   atol=1e-5)
        assert answer["results"][0][0][0] == "fail"
        # A bad yes/no value is a 400 naming the input, not a crash.
        bad = dict(rows[0], tutoring="maybe")
        with pytest.raises(Exception, match="tutoring"):
            client.request("POST", "/v1/models/students:predict",
                           {"instances": [bad]})

        # serving/client.py --input rows.csv (and a clear error for broken JSON).
        spec = importlib.util.spec_from_file_location("serving_client",
                                                      REPO / "serving" / "client.py")
        serving_client = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(serving_client)
        capsys.readouterr()
        assert serving_client.main(["predict", "--url", server.url, "--model", "students",
                                    "--input", str(rows_file)]) == 0
        out = json.loads(capsys.readouterr().out)
        np.testing.assert_allclose([p["probabilities"] for p in out], direct, atol=1e-5)
        broken = tmp_path / "rows.json"
        broken.write_text('{"instances": [')
        assert serving_client.main(["predict", "--url", server.url, "--model", "students",
                                    "--input", str(broken)]) == 2
        assert "is not JSON" in capsys.readouterr().err


def test_students_metadata_is_inside_the_tflite_file(students_export):
    from tensorflow.lite.python import schema_py_generated as schema

    path = students_export.tflite_files["float32"]
    fb = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    names = [fb.Metadata(i).Name().decode() for i in range(fb.MetadataLength())]
    assert "kflow_metadata" in names
    meta = _runner().embedded_metadata(str(path))
    assert meta["class_names"] == ["fail", "pass"]
    assert meta["input_order"][:3] == ["hours_studied", "sleep_hours", "previous_score"]
    columns = {i["name"]: i.get("column") for i in meta["inputs"]}
    assert columns["previous_score"] == "previous score"
    assert "NaN" in meta["missing_values"] and meta["normalization"]
    # Tensors are named after the signature's keys.
    from kflow.export.tflite import TFLiteRunner

    runner = TFLiteRunner(path)
    assert {d["name"] for d in runner.outputs.values()} == {"probabilities", "class_id"}


def test_breast_cancer_one_interface_and_int8(tmp_path):
    """Named features in the SavedModel and TFLite, [N, 2] probabilities in both, and
    int8 within the gate (per-feature scaling before the features share a tensor)."""
    import kflow
    from kflow.export import export_run
    from kflow.export.tflite import TFLiteRunner

    run = kflow.train("breast-cancer-mlp", epochs=8, run_dir=tmp_path / "bc", verbose=0,
                      seed=0).run_dir
    result = export_run(run, base=tmp_path / "base", tflite="float32,int8",
                        latency_samples=2)
    variants = result.report["tflite"]["variants"]
    assert variants["int8"]["passed"], variants
    sig_inputs = set(result.report["signature"]["inputs"])
    lite = TFLiteRunner(result.tflite_files["int8"])
    assert set(lite.inputs) == sig_inputs and "mean_radius" in sig_inputs
    assert tuple(lite.outputs["probabilities"]["shape"]) == (1, 2)
    assert result.report["signature"]["outputs"]["probabilities"]["shape"] == [None, 2]


def test_pixel_features_are_one_tensor():
    from kflow.export.layout import _image_like

    assert _image_like([f"pixel_{i}_{j}" for i in range(8) for j in range(8)])
    assert not _image_like(["mean radius", "pixel_0_0"])


def test_csv_rows_typing_without_a_server():
    from kflow.cli.predict import signature_key, typed_csv_rows

    text = "previous score,school,tutoring,result\n,Hilltop,no,pass\n50,,YES,fail\n"
    rows, ignored = typed_csv_rows(text, {"previous_score": "DT_FLOAT",
                                          "school": "DT_STRING", "tutoring": "DT_STRING"})
    assert ignored == ["result"] and np.isnan(rows[0]["previous_score"])
    assert rows[1] == {"previous_score": 50.0, "school": "", "tutoring": "YES"}
    assert signature_key("2nd try") == "f_2nd_try"
    assert csv.reader(io.StringIO(text)) is not None
    assert Path(STUDENTS).is_file()
