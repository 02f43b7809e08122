"""A run killed after training completes with the same command; "finished" is one marker."""

from __future__ import annotations

import json

import kflow
from kflow.run import RunDir, read_history


def test_same_command_completes_a_run_killed_while_writing_the_report(tmp_path):
    run_dir = tmp_path / "run"
    args = dict(set_args=["epochs=2", "hidden_layers=1", "units=16"], run_dir=run_dir,
                verbose=0)
    first = kflow.train("digits-mlp", **args)
    rd = RunDir(run_dir)
    assert rd.finished and rd.status()["state"] == "finished"
    history, metrics = read_history(rd.history), json.loads(rd.metrics.read_text())

    # As if killed while writing the report: the files after metrics.json are missing,
    # and the marker is not written yet.
    for path in (rd.report, rd.findings, rd.confusion):
        path.unlink()
    rd.write_status("running")
    assert not rd.finished and rd.resumable

    again = kflow.train("digits-mlp", **args)  # the same call: no retraining, no refusal
    assert rd.finished
    assert rd.report.is_file() and rd.findings.is_file() and rd.confusion.is_file()
    assert read_history(rd.history) == history
    assert json.loads(rd.metrics.read_text()) == metrics
    assert again.metrics["test"] == first.metrics["test"]


def test_backup_stays_until_the_finished_marker(tmp_path):
    """The trainer removes the resume state only after the marker (RunDir.mark_finished)."""
    rd = RunDir(tmp_path)
    (rd.backup).mkdir()
    (rd.backup / "training_metadata.json").write_text('{"epoch": 3}')
    rd.model.write_bytes(b"x")
    rd.write_json(rd.metrics, {})
    assert rd.trained and not rd.finished and rd.backup.is_dir()
    rd.mark_finished()
    assert rd.finished and not rd.backup.exists()
