"""Every recipe `kflow recipes` lists can be shown, trained for one epoch and exported.

The commands run in this process through `kflow.cli.main.main` (one TensorFlow
start for the whole file). A shipped recipe that breaks `recipes show`,
`train` or `export` fails here, named.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from kflow.cli.main import main


def _kflow(*args: str) -> tuple[int, str]:
    """Runs `kflow ARGS` in this process; returns the exit status and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args])
    return code, out.getvalue()


def _listed() -> list[str]:
    code, out = _kflow("recipes")
    assert code == 0
    return [line.split()[0] for line in out.splitlines() if line.strip()]


RECIPES = _listed()


def test_the_catalog_is_listed():
    assert {"breast-cancer-mlp", "digits-cnn", "digits-mlp", "digits-resnet", "lecture-mlp",
            "lecture-step-size", "tabular", "digits-rnn", "digits-vit", "text-classifier",
            "sequence-forecast"} <= set(RECIPES)


def _students_csv(path) -> str:
    """A small table with numbers, a category and a binary target (no missing values)."""
    rng = np.random.default_rng(0)
    n = 160
    hours = rng.uniform(0, 10, n).round(1)
    school = rng.choice(["north", "south", "east"], n)
    age = rng.integers(15, 19, n)
    passed = np.where(hours + (school == "north") * 2 + rng.normal(0, 1, n) > 5, "pass", "fail")
    lines = ["hours_studied,school,age,result"]
    lines += [f"{h},{s},{a},{r}" for h, s, a, r in zip(hours, school, age, passed, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _image_folder(root) -> str:
    """Two classes of 12 tiny PNGs (for the `images` recipe)."""
    import keras

    rng = np.random.default_rng(0)
    for c, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 255, size=(10, 10, 3)).astype("uint8")
            img[..., c] = 255
            keras.utils.save_img(root / name / f"{i}.png", img)
    return str(root)


def _extra_sets(name: str, tmp_path) -> list[str]:
    if name == "images":
        return ["--set", f"path={_image_folder(tmp_path / 'photos')}", "--set", "image_size=8",
                "--set", "filters=4"]
    if name == "tabular":
        return ["--set", f"path={_students_csv(tmp_path / 'students.csv')}",
                "--set", "target=result"]
    if name == "digits-transfer":  # its digits 0-4 run: one epoch, kept out of the cwd
        return ["--set", f"pretrain_dir={tmp_path / 'pretrain'}", "--set", "pretrain_epochs=1"]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_show_train_export(name, tmp_path):
    if name == "tfds":
        pytest.skip("needs a TFDS dataset on disk (nothing downloads in tests); "
                    "tests/test_streaming_recipes.py trains it on tfds.testing.mock_data")
    code, out = _kflow("recipes", "show", name)
    assert code == 0, f"kflow recipes show {name} failed"
    assert out.startswith(f"{name}: ") and " Allowed: " in out and "Override with --set" in out

    run = tmp_path / "run"
    code, out = _kflow("train", name, "--run-dir", str(run), "--set", "epochs=1", "--quiet",
                       *_extra_sets(name, tmp_path))
    assert code == 0, f"kflow train {name} failed"
    for file in ("config.yaml", "run.json", "status.json", "history.csv", "metrics.json",
                 "model.keras", "findings.json", "report.html"):
        assert (run / file).is_file(), f"{name}: {file} missing"
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and "test" in metrics
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and [ln.split(",")[0] for ln in history[1:]] == ["1"]

    base = tmp_path / "exports"
    # String lookups do not convert to TFLite: tabular ships them in preprocessing.json.
    # Text: TextVectorization's string ops neither (the sidecar tokenizes with NumPy).
    sidecar = (["--tflite-preprocessing", "sidecar"] if name in ("tabular", "text-classifier")
               else [])
    code, out = _kflow("export", str(run), "--base", str(base), "--name", "m",
                       "--tflite", "float32", "--warmup-rows", "1", "--quiet", *sidecar)
    assert code == 0, f"kflow export {name} failed"
    assert (base / "models.config").is_file()
    assert (base / "m" / "1" / "saved_model.pb").is_file()
    assert list((run / "export").glob("*float32*.tflite")), f"{name}: no float32 .tflite"
    assert (run / "export" / "export.json").is_file()
