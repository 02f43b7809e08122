"""Trained runs shared by the export tests: each is trained once per test session.

Module-scoped fixtures would retrain in every test file; these cached
functions train into one temporary folder that is removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from tests.conftest import REPO

_ROOT = Path(tempfile.mkdtemp(prefix="kflow-export-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)

TABULAR_YAML = REPO / "recipes" / "example_tabular" / "example.yaml"


def _train(recipe: str, epochs: int, name: str) -> Path:
    import kflow

    return kflow.train(recipe, epochs=epochs, run_dir=_ROOT / name, verbose=0, seed=0).run_dir


@functools.cache
def digits_cnn_run() -> Path:
    """digits-cnn trained for 3 epochs (about 93% test accuracy; seconds)."""
    return _train("digits-cnn", 3, "digits-cnn-3")


@functools.cache
def trained_digits_cnn_run() -> Path:
    """digits-cnn trained properly (> 97% test accuracy; about a minute)."""
    return _train("digits-cnn", 15, "digits-cnn-15")


@functools.cache
def tabular_run() -> Path:
    """The tabular example (students.csv): named raw columns, NaN, string categories."""
    return _train(str(TABULAR_YAML), 20, "tabular-20")


def fresh_dir(name: str) -> Path:
    """A new empty folder under the session's temporary root."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_ROOT))
    return path


def copy_run(run_dir: Path, name: str) -> Path:
    """A copy of a run directory (without TensorBoard logs and checkpoints)."""
    target = fresh_dir(name) / "run"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(
        "tensorboard", "checkpoints", "export", ".export-*"))
    return target


@functools.cache
def digits_tflite_export():
    """All four TFLite variants of `digits_cnn_run()` (a copy), with a SavedModel version."""
    from kflow.export import export_run

    run_dir = copy_run(digits_cnn_run(), "digits-tflite")
    return export_run(run_dir, base=fresh_dir("base"), tflite="all", latency_samples=20)


@functools.cache
def tabular_tflite_export():
    """All four TFLite variants of `tabular_run()` with the preprocessing in a sidecar."""
    from kflow.export import export_run

    run_dir = copy_run(tabular_run(), "tabular-tflite")
    return export_run(run_dir, base=fresh_dir("base"), name="students", tflite="all",
                      tflite_preprocessing="sidecar", latency_samples=20)


@functools.cache
def digits_int8_io_export():
    """The int8 variant of `digits_cnn_run()` with int8 inputs and outputs."""
    from kflow.export import export_run

    run_dir = copy_run(digits_cnn_run(), "digits-int8io")
    return export_run(run_dir, serving=False, tflite="int8", int8_io=True, latency_samples=5)


def load_test_split(run_dir: Path):
    """The run's test split, re-made from its config.yaml."""
    from kflow.training.trainer import Trainer

    return Trainer.from_run(run_dir, verbose=0).splits().test
