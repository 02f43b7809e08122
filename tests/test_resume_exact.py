"""Exact resume: a run stopped at any epoch and re-run ends exactly like one never stopped.

On CPU with op determinism (which kflow enables) "exactly" means identical
numbers: every history column of every epoch (each epoch once) and every
test metric. The shuffle order is a pure function of (seed, epoch) and the
backup holds the rest of the random state (Dropout's SeedGenerator, the
optimizer, early stopping), so nothing restarts on resume.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import kflow
from kflow.training.callbacks import backup_state

#: A small digits-mlp with dropout, so that Dropout's random state matters.
SETTINGS = ["dropout=0.2", "units=32", "early_stopping=false"]
EPOCHS = 8


def _history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


#: Columns logged on a wall-clock schedule (the dead-unit probe runs when its cost is a
#: small share of the epoch time), so two uninterrupted runs differ in *which* epochs
#: have a value. Where both runs probed, the values must be equal.
TIMED_COLUMNS = ("dead_relu/",)


def _assert_same_run(resumed: Path, reference: Path) -> None:
    got, want = _history(resumed), _history(reference)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]  # every epoch once
    assert [list(r) for r in got] == [list(r) for r in want]  # the same columns
    for g, w in zip(got, want, strict=True):
        for column in g:  # every value as written (no rounding between the two)
            if column.startswith(TIMED_COLUMNS) and "nan" in (g[column], w[column]):
                continue
            assert g[column] == w[column], (g["epoch"], column)
    for split in ("train", "val", "test"):
        assert _metrics(resumed)[split] == _metrics(reference)[split], split
    for key in ("epochs_run", "stopped_early", "stop_reason", "best_epoch"):
        assert _metrics(resumed)[key] == _metrics(reference)[key], key


class _CrashAt(keras.callbacks.Callback):
    """Raises at the end of epoch `epoch` (0-based), or at the end of training."""

    def __init__(self, epoch: int | None = None, at_train_end: bool = False):
        super().__init__()
        self.epoch, self.at_train_end = epoch, at_train_end

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")

    def on_train_end(self, logs=None):  # after the backup's last write, before evaluation
        if self.at_train_end:
            raise RuntimeError("simulated crash after training")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    kflow.train("digits-mlp", epochs=EPOCHS, set_args=SETTINGS, run_dir=run_dir, verbose=0)
    return run_dir


def test_backup_holds_the_dropout_random_state_that_model_weights_lacks(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        kflow.train("digits-mlp", epochs=EPOCHS, set_args=SETTINGS, run_dir=run_dir,
                    verbose=0, callbacks=[_CrashAt(2)])
    assert backup_state(run_dir / "backup") == (3, False)
    with np.load(run_dir / "backup" / "latest.state.npz") as f:
        paths = json.loads(str(f["meta"]))["paths"]
    assert any("seed_generator" in p for p in paths), paths


@pytest.mark.parametrize("crash_epoch", [0, 4])
def test_in_process_crash_and_resume_equals_the_uninterrupted_run(tmp_path, reference,
                                                                 crash_epoch):
    run_dir = tmp_path / "run"
    args = dict(epochs=EPOCHS, set_args=SETTINGS, run_dir=run_dir, verbose=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        kflow.train("digits-mlp", callbacks=[_CrashAt(crash_epoch)], **args)
    assert len(_history(run_dir)) == crash_epoch + 1
    run = kflow.train("digits-mlp", **args)
    _assert_same_run(run_dir, reference)
    assert float(run.history["loss"][crash_epoch + 1]) == float(
        _history(reference)[crash_epoch + 1]["loss"])
    assert not (run_dir / "backup").exists(), "removed once the run is finished"


def test_crash_after_training_keeps_the_backup_and_does_not_train_again(tmp_path, reference):
    run_dir = tmp_path / "run"
    args = dict(epochs=EPOCHS, set_args=SETTINGS, run_dir=run_dir, verbose=0)
    with pytest.raises(RuntimeError, match="after training"):
        kflow.train("digits-mlp", callbacks=[_CrashAt(at_train_end=True)], **args)
    assert backup_state(run_dir / "backup") == (EPOCHS, False), "kept after fit"
    assert not (run_dir / "metrics.json").exists()
    epochs_seen: list[int] = []
    spy = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: epochs_seen.append(epoch))
    run = kflow.train("digits-mlp", callbacks=[spy], **args)
    assert epochs_seen == [], "no epoch trained again"
    steps = json.loads((run_dir / "run.json").read_text())["steps_per_epoch"]
    assert int(run.model.optimizer.iterations.numpy()) == EPOCHS * steps
    _assert_same_run(run_dir, reference)


def test_crash_after_early_stopping_restores_its_decision(tmp_path):
    settings = ["dropout=0.2", "units=32", "early_stopping=true", "patience=1",
                "learning_rate=0.05"]
    args = dict(epochs=30, set_args=settings, verbose=0)
    kflow.train("digits-mlp", run_dir=tmp_path / "ref", **args)
    reference = _metrics(tmp_path / "ref")
    assert reference["stopped_early"] and reference["epochs_run"] < 30
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="after training"):
        kflow.train("digits-mlp", run_dir=run_dir, callbacks=[_CrashAt(at_train_end=True)],
                    **args)
    assert backup_state(run_dir / "backup") == (reference["epochs_run"], True)
    kflow.train("digits-mlp", run_dir=run_dir, **args)
    _assert_same_run(run_dir, tmp_path / "ref")
    assert "did not improve" in _metrics(run_dir)["stop_reason"]


# -- the acceptance: kill -9 at 5 random epochs of the CLI ------------------------------
CLI_EPOCHS = 14
CLI_SETTINGS = ["dropout=0.2", "units=32", "batch_size=8", "early_stopping=false"]


def _cli(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kflow", "train", "digits-mlp", "--run-dir", str(run_dir),
            "--epochs", str(CLI_EPOCHS)] + [a for kv in CLI_SETTINGS for a in ("--set", kv)]


def _env() -> dict[str, str]:
    root = str(Path(kflow.__file__).resolve().parents[1])  # the kflow under test
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path}


def _rows(run_dir: Path) -> int:
    try:
        return max(0, (run_dir / "history.csv").read_text().count("\n") - 1)
    except OSError:
        return 0


@pytest.mark.slow
def test_cli_killed_at_five_random_epochs_ends_like_the_uninterrupted_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    done = subprocess.run(_cli(reference), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    kill_after = sorted(random.Random(11).sample(range(1, CLI_EPOCHS - 1), 5))
    reached = []
    for rows in kill_after:
        proc = subprocess.Popen(_cli(killed), cwd=tmp_path, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while _rows(killed) < rows and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reached.append(_rows(killed))
        assert not (killed / "metrics.json").exists(), f"run ended before the kill at {rows}"
    assert reached == sorted(reached) and reached[0] >= kill_after[0]
    done = subprocess.run(_cli(killed), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming digits-mlp" in done.stdout
    _assert_same_run(killed, reference)
    print(f"killed after epochs {reached} (targets {kill_after}); histories identical")
