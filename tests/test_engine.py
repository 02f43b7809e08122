"""The training engine: run directory, reproducibility, regimes and resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml

import kflow
from kflow.errors import RunError
from tests.conftest import REPO


def _history_epochs(path):
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "mlp"
    return kflow.train("digits-mlp", epochs=3, run_dir=run_dir, verbose=0, seed=1)


def test_run_directory_is_complete(mlp_run):
    d = mlp_run.run_dir
    for name in ("config.yaml", "history.csv", "metrics.json", "model.keras", "run.json",
                 "checkpoints/best.keras", "status.json"):
        assert (d / name).is_file(), name
    assert (d / "tensorboard" / "train").is_dir()
    assert not (d / "backup").exists(), "backup is removed once the run finished"
    metrics = json.loads((d / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0 and metrics[split]["loss"] > 0
    assert metrics["epochs_run"] == 3
    assert _history_epochs(d / "history.csv") == [1, 2, 3]  # epochs count from 1
    assert json.loads((d / "status.json").read_text())["state"] == "finished"
    info = json.loads((d / "run.json").read_text())
    assert info["task"] == "multiclass" and len(info["class_names"]) == 10
    assert info["num_train"] + info["num_val"] + info["num_test"] == 1797


def test_saved_model_matches_live_model(mlp_run):
    x = np.random.default_rng(0).uniform(0, 16, size=(5, 64)).astype("float32")
    reloaded = keras.models.load_model(mlp_run.run_dir / "model.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0),
                               mlp_run.model.predict(x, verbose=0), atol=1e-6)


def test_config_yaml_reproduces_the_run(mlp_run, tmp_path):
    cfg = yaml.safe_load((mlp_run.run_dir / "config.yaml").read_text())
    assert cfg["recipe"] == "digits-mlp" and cfg["seed"] == 1
    assert cfg["training"]["epochs"] == 3 and cfg["optimizer"]["name"] == "adam"
    again = kflow.train(str(mlp_run.run_dir / "config.yaml"), run_dir=tmp_path / "again",
                        verbose=0)
    for split in ("train", "val", "test"):
        assert again.metrics[split]["loss"] == pytest.approx(
            mlp_run.metrics[split]["loss"], rel=1e-5)


def test_finished_run_dir_is_not_overwritten(mlp_run):
    with pytest.raises(RunError, match="already holds a finished run; choose another "
                                       "--run-dir or pass --overwrite"):
        kflow.train("digits-mlp", epochs=3, run_dir=mlp_run.run_dir, verbose=0, seed=1)


def test_default_run_dirs_are_per_config_and_never_overwritten(tmp_path):
    a = kflow.train("breast-cancer-mlp", epochs=1, runs_root=tmp_path, verbose=0)
    b = kflow.train("breast-cancer-mlp", epochs=1, runs_root=tmp_path, verbose=0)
    c = kflow.train("breast-cancer-mlp", epochs=2, runs_root=tmp_path, verbose=0)
    assert a.run_dir.name.startswith("breast-cancer-mlp-")
    assert b.run_dir.name == a.run_dir.name + "-2"
    assert c.run_dir.name.split("-")[-1] != a.run_dir.name.split("-")[-1]


@pytest.mark.parametrize("batch_size, steps", [("full", 1), (1, 397), (64, 7)])
def test_gradient_descent_regimes(tmp_path, batch_size, steps):
    """Full batch = 1 update/epoch, SGD = 1 update per sample, mini-batch in between."""
    run = kflow.train("breast-cancer-mlp", epochs=1, run_dir=tmp_path / "r", verbose=0,
                      set_args=[f"batch_size={batch_size}"])
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["num_train"] == 397
    assert info["steps_per_epoch"] == steps
    assert int(run.model.optimizer.iterations.numpy()) == steps


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_continues_from_the_backup(tmp_path):
    args = dict(epochs=5, run_dir=tmp_path / "r", verbose=0,
                set_args=["early_stopping=false"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        kflow.train("digits-mlp", callbacks=[_Crash(2)], **args)
    rd = tmp_path / "r"
    assert json.loads((rd / "status.json").read_text())["state"] == "failed"
    assert not (rd / "metrics.json").exists()
    meta = json.loads((rd / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] in (2, 3)
    run = kflow.train("digits-mlp", **args)
    assert _history_epochs(rd / "history.csv") == [1, 2, 3, 4, 5]
    assert run.metrics["epochs_run"] == 5
    # The resumed run did only the remaining updates.
    steps = json.loads((rd / "run.json").read_text())["steps_per_epoch"]
    assert int(run.model.optimizer.iterations.numpy()) == 5 * steps


def test_resume_refuses_a_changed_config(tmp_path):
    args = dict(run_dir=tmp_path / "r", verbose=0, set_args=["early_stopping=false"])
    with pytest.raises(RuntimeError):
        kflow.train("digits-mlp", epochs=4, callbacks=[_Crash(1)], **args)
    with pytest.raises(RunError, match="holds an unfinished run with a different config"):
        kflow.train("digits-mlp", epochs=4, **{**args, "set_args": ["dropout=0.4"]})


@pytest.mark.slow
def test_killed_cli_run_resumes_with_the_same_command(tmp_path):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kflow", "train", "digits-mlp", "--run-dir", str(run_dir),
           "--epochs", "40", "--set", "early_stopping=false", "--set", "batch_size=16"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    meta = run_dir / "backup" / "training_metadata.json"
    deadline = time.time() + 180
    while time.time() < deadline:
        if meta.is_file() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists(), "killed before the end"
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming digits-mlp" in done.stdout
    assert _history_epochs(run_dir / "history.csv") == list(range(1, 41))
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 40
    assert not (run_dir / "backup").exists()
