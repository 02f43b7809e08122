"""`--track mlflow`: a run logged to a real local MLflow file store, read back (#15)."""

from __future__ import annotations

import pytest

mlflow = pytest.importorskip("mlflow")

import kflow  # noqa: E402
from kflow.tracking import tracking_parent  # noqa: E402

FAST = ["epochs=3", "grad_log_every=0", "hidden_layers=1", "units=8"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "kflow-test")
    return tmp_path


def _runs(client):
    exp = client.get_experiment_by_name("kflow-test")
    return client.search_runs([exp.experiment_id])


def test_run_logged_to_a_file_store_reads_back(store):
    run = kflow.train("breast-cancer-mlp", set_args=FAST, run_dir=store / "run", verbose=0,
                      track="mlflow")
    client = mlflow.MlflowClient()
    (logged,) = _runs(client)
    assert logged.data.params["recipe"] == "breast-cancer-mlp"
    assert logged.data.params["optimizer.learning_rate"] == str(
        run.config["optimizer"]["learning_rate"])
    assert logged.data.tags["kflow.run_dir"] == str((store / "run").resolve())
    losses = client.get_metric_history(logged.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert [m.value for m in losses] == pytest.approx(run.history["loss"])
    assert logged.data.metrics["test_accuracy"] == pytest.approx(
        run.metrics["test"]["accuracy"])
    assert logged.data.metrics["baseline_linear_accuracy"] == pytest.approx(
        run.metrics["baselines"]["linear"]["test"]["accuracy"])
    names = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"model", "report.html", "metrics.json", "config.yaml"} <= names
    assert [a.path for a in client.list_artifacts(logged.info.run_id, "model")] == [
        "model/model.keras"]


def test_runs_inside_a_tuning_are_nested(store):
    with tracking_parent("mlflow", "kflow tune test", {"max_trials": 2}):
        for seed in (0, 1):
            kflow.train("breast-cancer-mlp", set_args=FAST, seed=seed, verbose=0,
                        run_dir=store / f"trial{seed}")
    client = mlflow.MlflowClient()
    runs = _runs(client)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert parents[0].data.params["max_trials"] == "2"


def test_unknown_tracker_is_a_config_error():
    with pytest.raises(kflow.errors.ConfigError, match="track must be one of"):
        kflow.train("breast-cancer-mlp", track="wandb", save=False)
