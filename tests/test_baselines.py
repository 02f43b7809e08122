"""Honest baselines: scikit-learn on the same split, in metrics.json, the report, the doctor."""

from __future__ import annotations

import numpy as np
import pytest

from kflow.data.dataset import Dataset
from kflow.insight.baselines import (
    WORSE_ACCURACY,
    baseline_finding,
    baselines_html,
    fit_baselines,
)


def _table(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n).astype("float32")
    a[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["Lyon", "Nice", ""], size=n)
    y = ((np.nan_to_num(a) + (city == "Lyon")) > 0.5).astype("int64")
    return Dataset({"a": a, "city": city}, y, task="binary", class_names=["no", "yes"])


def test_baselines_fit_on_the_training_split_and_score_the_test_split():
    train, test = _table(300, 0), _table(100, 1)
    found = fit_baselines(train, test, seed=0)
    assert set(found) == {"linear", "boosted_trees"}
    for scores in found.values():
        assert scores["train_rows"] == 300
        assert 0.8 <= scores["test"]["accuracy"] <= 1.0 and 0.8 <= scores["test"]["auc"] <= 1
    # the same numbers as scikit-learn by hand (mean-impute, scale, one-hot, logistic)
    from sklearn.linear_model import LogisticRegression

    mean = np.nanmean(train.x["a"].astype(np.float64))
    filled = np.where(np.isnan(train.x["a"]), mean, train.x["a"]).astype(np.float64)
    mu, sd = filled.mean(), filled.std()

    def x_of(d):
        a = (np.where(np.isnan(d.x["a"]), mean, d.x["a"]) - mu) / sd
        cats = np.stack([d.x["city"] == c for c in ["", "Lyon", "Nice"]], 1)
        return np.column_stack([a, cats])

    model = LogisticRegression(max_iter=2000).fit(x_of(train), train.y)
    by_hand = float((model.predict(x_of(test)) == test.y).mean())
    assert found["linear"]["test"]["accuracy"] == pytest.approx(by_hand)


def test_regression_and_images_and_streams():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype("float32")
    y = x @ np.array([1.0, 2.0, -1.0]) + 0.1 * rng.normal(size=200)
    train = Dataset(x[:150], y[:150], task="regression")
    test = Dataset(x[150:], y[150:], task="regression")
    found = fit_baselines(train, test)
    assert found["linear"]["test"]["r2"] > 0.95
    assert found["linear"]["test"]["mae"] < found["boosted_trees"]["test"]["mae"]
    images = Dataset(rng.normal(size=(20, 4, 4, 1)), np.arange(20) % 2)
    assert fit_baselines(images, images) == {}


def test_the_doctor_says_when_the_network_is_worse():
    metrics = {"test": {"accuracy": 0.90},
               "baselines": {"linear": {"test": {"accuracy": 0.95}},
                             "boosted_trees": {"test": {"accuracy": 0.93}}}}
    finding = baseline_finding(metrics, "binary")
    assert finding["id"] == "worse_than_baseline"
    assert "logistic regression" in finding["title"]
    assert "0.9000 vs 0.9500 (5.0 points)" in finding["evidence"]
    assert any("smaller network" in a for a in finding["advice"])
    metrics["test"]["accuracy"] = 0.95 - WORSE_ACCURACY / 2  # within half a point: fine
    assert baseline_finding(metrics, "binary") is None
    reg = {"test": {"mae": 1.10}, "baselines": {"linear": {"test": {"mae": 1.0}}}}
    assert baseline_finding(reg, "regression")["data"]["baseline"] == "linear"
    html = baselines_html(metrics)
    assert "network (kflow)" in html and "boosted_trees" in html and "0.9500" in html


def test_a_table_run_reports_its_baselines(tmp_path):
    import json

    import kflow

    run = kflow.train("breast-cancer-mlp", set_args=["epochs=1", "grad_log_every=0"],
                      run_dir=tmp_path / "run", verbose=0)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["baselines"]["linear"]["test"]["accuracy"] > 0.9
    assert saved["baselines"] == run.metrics["baselines"]
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Baselines (scikit-learn, same training split)" in report
    findings = json.loads((tmp_path / "run" / "findings.json").read_text())
    ids = [f["id"] for f in (findings if isinstance(findings, list) else findings["findings"])]
    net, best = run.metrics["test"]["accuracy"], max(
        b["test"]["accuracy"] for b in run.metrics["baselines"].values())
    assert ("worse_than_baseline" in ids) == (net < best - WORSE_ACCURACY)
