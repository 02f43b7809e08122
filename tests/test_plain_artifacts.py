"""A run's `model.keras` and `checkpoints/best.keras` open with plain Keras, without kflow.

Each shipped recipe trains one small epoch; a subprocess in which `import
kflow` fails (a `sys.meta_path` finder refuses it, and neither the cwd nor
`sys.path` holds the repository) loads both files with
`keras.saving.load_model` in safe mode and predicts on saved inputs; the
predictions equal the live model's (max abs diff <= 1e-6).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kflow
from kflow.data import rows_to_inputs
from kflow.training.plain_model import to_plain_model
from tests.conftest import REPO

EXAMPLE_YAML = REPO / "recipes" / "example_tabular" / "example.yaml"

#: recipe -> --set arguments keeping one epoch small.
RECIPES = {
    "digits-mlp": ["grad_log_every=2"],
    "digits-cnn": ["augmentation=rotation,zoom,contrast,translation", "filters=4", "stages=1",
                   "dense_units=8", "grad_log_every=2"],
    "digits-resnet": ["filters=4", "stages=1", "blocks_per_stage=1"],
    "breast-cancer-mlp": [],
    "lecture-mlp": ["initializer=uniform_fan_in", "samples=400", "units=16"],
    "lecture-step-size": [],
    "tabular": [],
}

# Raw rows as a client sends them: missing numbers, an unseen and a missing category.
RAW_ROWS = [
    {"hours_studied": None, "sleep_hours": 7.5, "previous score": 81, "school": "Atlantis",
     "tutoring": "yes", "absences": 1},
    {"hours_studied": 2.0, "sleep_hours": None, "previous score": None, "school": None,
     "tutoring": "no", "absences": 9},
    {"hours_studied": 11.0, "sleep_hours": 8.0, "previous score": 90, "school": "Hilltop",
     "tutoring": "no", "absences": None},
]

_NO_KFLOW = textwrap.dedent("""
    import importlib.abc, json, os, sys
    class _NoKflow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "kflow" or name.startswith("kflow."):
                raise ImportError("kflow is not installed here")
    sys.meta_path.insert(0, _NoKflow())
    try:
        import kflow  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("kflow is importable")
    import numpy as np
    import keras
    import tensorflow as tf
    def feed(a):
        return tf.constant(a.astype(str).tolist()) if a.dtype.kind == "U" else a
    info = {}
    for folder in sys.argv[1:]:
        with np.load(os.path.join(folder, "inputs.npz")) as f:
            arrays = {k: f[k] for k in f.files}
        x = arrays["x"] if list(arrays) == ["x"] else {k: feed(v) for k, v in arrays.items()}
        out = {}
        for name in ("model.keras", "checkpoints/best.keras"):
            model = keras.saving.load_model(os.path.join(folder, "run", name), safe_mode=True)
            out[name] = model.predict(x, verbose=0)
            info[folder + ":" + name] = [type(model).__name__, sorted(
                {type(op).__module__.split(".")[0] for op in model.operations})]
        np.savez(os.path.join(folder, "predictions.npz"), **out)
    print("INFO" + json.dumps(info))
""")


def _inputs(run) -> dict[str, np.ndarray]:
    """Inputs to predict on (float features, or raw tabular rows), as plain arrays."""
    model = run.model
    if isinstance(model.input, dict):
        return rows_to_inputs(RAW_ROWS, model)
    rng = np.random.default_rng(0)
    shape = (5, *model.input.shape[1:])
    return {"x": (rng.normal(size=shape) * 4.0).astype("float32")}


def _live(model, arrays):
    import tensorflow as tf

    if list(arrays) == ["x"]:
        return model.predict(arrays["x"], verbose=0)
    return model.predict({k: tf.constant(v.tolist()) if v.dtype == object else v
                          for k, v in arrays.items()}, verbose=0)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """Trains every recipe, then loads all their files in one kflow-less subprocess."""
    folders, expected = {}, {}
    for recipe, set_args in RECIPES.items():
        folder = tmp_path_factory.mktemp(recipe)
        target = str(EXAMPLE_YAML) if recipe == "tabular" else recipe
        run = kflow.train(target, epochs=1, run_dir=folder / "run", verbose=0,
                          set_args=set_args)
        arrays = _inputs(run)
        expected[recipe] = _live(run.model, arrays)
        np.savez(folder / "inputs.npz",
                 **{k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()})
        folders[recipe] = folder
    proc = subprocess.run(
        [sys.executable, "-c", _NO_KFLOW, *map(str, folders.values())],
        cwd=tmp_path_factory.getbasetemp(), capture_output=True, text=True, timeout=600,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(next(ln for ln in proc.stdout.splitlines()
                           if ln.startswith("INFO"))[len("INFO"):])
    return folders, expected, info


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_run_models_open_and_predict_without_kflow(recipe, checked):
    folders, expected, info = checked
    assert np.isfinite(expected[recipe]).all()
    with np.load(folders[recipe] / "predictions.npz") as got:
        for name in ("model.keras", "checkpoints/best.keras"):
            diff = float(np.max(np.abs(got[name] - expected[recipe])))
            assert diff <= 1e-6, f"{recipe} {name}: max abs diff {diff}"
            # A standard functional model of Keras' own layers and operations only.
            assert info[f"{folders[recipe]}:{name}"] == ["Functional", ["keras"]]


def test_plain_model_drops_training_wrappers_and_keeps_the_live_model_intact():
    from kflow.blocks.keras_objects import UniformFanIn
    from kflow.data.augmentation import augment
    from kflow.data.impute import Impute
    from kflow.insight.insight_model import InsightModel

    image = keras.Input((8, 8, 1), name="image")
    x = augment(image, "flip,rotation", value_range=(0.0, 16.0), seed=0)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, kernel_initializer=UniformFanIn(seed=1), name="hidden")(x)
    table = keras.Input((2,), name="table")
    t = Impute([1.5, -2.0], name="fill")(table)
    out = keras.layers.Dense(1, name="head")(keras.layers.Concatenate()([x, t]))
    model = InsightModel({"image": image, "table": table}, out, grad_log_every=1)
    model.compile("adam", "mse")
    data = {"image": np.random.default_rng(0).uniform(0, 16, (6, 8, 8, 1)).astype("float32"),
            "table": np.array([[np.nan, 1.0], [2.0, np.nan]] * 3, "float32")}
    model.fit(data, np.zeros((6, 1)), epochs=1, verbose=0)
    nodes_before = [len(layer._inbound_nodes) for layer in model.layers]

    plain = to_plain_model(model)

    assert type(plain).__name__ == "Functional" and plain.name == model.name
    kinds = {type(op).__name__ for op in plain.operations}
    assert not kinds & {"TrainingAugmentation", "Impute", "InsightModel"}
    assert {"Where", "Isnan"} <= kinds
    init = plain.get_layer("hidden").get_config()["kernel_initializer"]
    assert init["class_name"] == "VarianceScaling"
    assert {k: init["config"][k] for k in ("scale", "mode", "distribution", "seed")} == {
        "scale": 1 / 3, "mode": "fan_in", "distribution": "uniform", "seed": 1}
    np.testing.assert_allclose(plain.predict(data, verbose=0), model.predict(data, verbose=0),
                               atol=1e-6)
    assert plain.compiled and plain.optimizer is model.optimizer
    # The live model's layers got no extra graph nodes and do not share variables.
    assert [len(layer._inbound_nodes) for layer in model.layers] == nodes_before
    assert not {id(v) for v in plain.weights} & {id(v) for v in model.weights}


def test_imputation_ops_fill_like_the_impute_layer(tmp_path):
    from kflow.data.impute import Impute, impute, imputed_fill_values

    num = keras.Input((2,), name="num")
    cat = keras.Input((1,), name="cat", dtype="string")
    ids = keras.Input((1,), name="ids", dtype="int64")
    model = keras.Model([num, cat, ids], [impute(num, [1.5, 2.5]), impute(cat, "paris"),
                                         impute(ids, 7)])
    assert imputed_fill_values(model) == {"num": [1.5, 2.5], "cat": "paris", "ids": 7}
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    import tensorflow as tf

    x = [tf.constant([[np.nan, 1.0], [3.0, np.nan]], "float32"), tf.constant([[""], ["rome"]]),
         tf.constant([[-1], [4]], "int64")]
    got = again(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got[0]), [[1.5, 1.0], [3.0, 2.5]])
    assert keras.ops.convert_to_numpy(got[1]).ravel().tolist() == [b"paris", b"rome"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got[2]), [[7], [4]])
    layer = Impute([1.5, 2.5])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x[0])),
                                  keras.ops.convert_to_numpy(got[0]))
