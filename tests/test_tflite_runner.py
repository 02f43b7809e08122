"""The on-device runner (tflite/kflow_tflite_runner.py) in a process where TensorFlow is hidden.

Its predictions must equal those of kflow's own LiteRT evaluation.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kflow.export import TFLiteRunner, apply_sidecar
from kflow.export.layout import InputLayout
from tests.conftest import REPO
from tests.export_fixtures import (
    digits_int8_io_export,
    digits_tflite_export,
    load_test_split,
    tabular_tflite_export,
)

RUNNER = REPO / "tflite" / "kflow_tflite_runner.py"

BLOCKER = textwrap.dedent("""
    import sys

    class _NoTensorFlow:
        HIDDEN = ("tensorflow", "keras", "tf_keras", "kflow", "jax", "torch")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.HIDDEN:
                raise ImportError(f"{name} is not installed on this device (hidden by the test)")
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
""")


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """Runs a Python command as on a device: LiteRT and NumPy importable, TensorFlow not."""
    home = tmp_path_factory.mktemp("device")
    (home / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(home)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=home, env=env, capture_output=True,
                              text=True, timeout=120)

    return run


def _runner(device, *args: str) -> subprocess.CompletedProcess:
    return device(str(RUNNER), *args)


def test_tensorflow_is_really_hidden(device):
    done = device("-c", "import numpy, ai_edge_litert.interpreter; import tensorflow")
    assert done.returncode == 1
    assert "ImportError: tensorflow is not installed on this device" in done.stderr
    done = device("-c", "import sys, ai_edge_litert.interpreter, numpy; "
                        "print(sorted(m for m in sys.modules if m.startswith(('tensorflow', "
                        "'keras'))))")
    assert done.returncode == 0 and done.stdout.strip() == "[]"


def _kflow_head(path: Path, feed: dict, output: str) -> np.ndarray:
    return TFLiteRunner(path).predict(feed, output, batch_size=1)


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_digits_predictions_equal_kflow_interpreter(device, tmp_path, variant):
    result = digits_tflite_export()
    test = load_test_split(result.run_dir)
    x = np.asarray(test.x[:40], dtype="float32")
    np.save(tmp_path / "x.npy", x)
    done = _runner(device, str(result.tflite_files[variant]), "--input", str(tmp_path / "x.npy"),
                   "--format", "json")
    assert done.returncode == 0, done.stderr
    preds = json.loads(done.stdout)["predictions"]
    head = _kflow_head(result.tflite_files[variant], {"features": x}, "probabilities")
    assert np.array_equal(np.asarray([p["probabilities"] for p in preds], "float32"), head)
    assert [p["class_id"] for p in preds] == head.argmax(-1).tolist()
    assert [p["class_name"] for p in preds] == [str(i) for i in head.argmax(-1)]
    # flattened rows (N, 64) and a CSV of 64 values per row give the same answer
    np.save(tmp_path / "flat.npy", x.reshape(len(x), -1))
    flat = _runner(device, str(result.tflite_files[variant]), "-i", str(tmp_path / "flat.npy"),
                   "--format", "json")
    assert json.loads(flat.stdout)["predictions"] == preds


def test_int8_io_model_on_the_device(device, tmp_path):
    result = digits_int8_io_export()
    x = np.asarray(load_test_split(result.run_dir).x[:20], dtype="float32")
    np.save(tmp_path / "x.npy", x)
    done = _runner(device, str(result.tflite_files["int8"]), "-i", str(tmp_path / "x.npy"),
                   "--format", "json")
    assert done.returncode == 0, done.stderr
    got = np.asarray([p["probabilities"] for p in json.loads(done.stdout)["predictions"]],
                     "float32")
    assert np.array_equal(got, _kflow_head(result.tflite_files["int8"], {"features": x},
                                           "probabilities"))


def _write_rows(path: Path, columns: dict, n: int) -> None:
    keys = list(columns)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for i in range(n):
            w.writerow([repr(float(columns[k][i])) if np.asarray(columns[k]).dtype.kind == "f"
                        else columns[k][i] for k in keys])


def test_tabular_sidecar_predictions_equal_kflow_interpreter(device, tmp_path):
    result = tabular_tflite_export()
    test = load_test_split(result.run_dir)
    n = len(test.y)
    _write_rows(tmp_path / "rows.csv", test.x, n)
    rows = [{k: (None if isinstance(v[i], float) and np.isnan(v[i]) else
                 v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in test.x.items()}
            for i in range(n)]
    (tmp_path / "rows.json").write_text(json.dumps({"instances": rows}))
    assert any(r["sleep_hours"] is None for r in rows) or any(r["school"] == "" for r in rows)

    import kflow

    model = kflow.load_run(result.run_dir).model
    spec = json.loads((result.export_dir / "preprocessing.json").read_text())
    feed = apply_sidecar(spec, InputLayout.from_model(model).model_arrays(test.x))
    for variant in ("float32", "int8"):
        path = result.tflite_files[variant]
        want = _kflow_head(path, feed, "probabilities")[:, 1]
        for source in ("rows.csv", "rows.json"):
            done = _runner(device, str(path), "-i", str(tmp_path / source), "--format", "json")
            assert done.returncode == 0, done.stderr
            preds = json.loads(done.stdout)["predictions"]
            got = np.asarray([p["probabilities"][1] for p in preds], "float32")
            assert np.array_equal(got, want), (variant, source)
            assert [p["class_name"] for p in preds] == [
                "pass" if p > 0.5 else "fail" for p in want]


def test_table_output_and_benchmark(device, tmp_path):
    result = digits_tflite_export()
    x = np.asarray(load_test_split(result.run_dir).x[:3], dtype="float32")
    np.save(tmp_path / "x.npy", x)
    path = result.tflite_files["int8"]
    table = _runner(device, str(path), "-i", str(tmp_path / "x.npy"), "--top", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("0\t") and lines[0].count("(") == 2
    bench = _runner(device, str(path), "--benchmark", "--runs", "30", "--format", "json")
    assert bench.returncode == 0, bench.stderr
    stats = json.loads(bench.stdout)
    assert stats["size_bytes"] == path.stat().st_size and stats["runs"] == 30
    assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    text = _runner(device, str(path), "--benchmark", "--runs", "10", "-i", str(tmp_path / "x.npy"))
    assert "p50" in text.stdout and "p99" in text.stdout and "KiB" in text.stdout


def test_runner_errors_are_one_line(device, tmp_path):
    result = tabular_tflite_export()
    (tmp_path / "bad.csv").write_text("hours_studied,school\n1.0,Hilltop\n")
    done = _runner(device, str(result.tflite_files["float32"]), "-i", str(tmp_path / "bad.csv"))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    match = re.match(r"kflow_tflite_runner: error: the rows have no '(\w+)' value; the model "
                     r"takes: ", last)
    assert match and match.group(1) in (
        "sleep_hours", "previous_score", "tutoring", "absences"), last
    missing = _runner(device, str(tmp_path / "none.tflite"))
    assert missing.returncode == 2 and "model file" in missing.stderr


def test_closed_stdout_ends_quietly():
    """`kflow_tflite_runner.py ... | head`: the reader is gone before the runner writes."""
    import os
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, str(RUNNER), "--help"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (0, "")
