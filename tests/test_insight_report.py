"""report.html, `kflow compare`, the confusion matrix and the engine's end-of-run files."""

import base64
import json
import re
import time

import numpy as np
import pytest

from kflow.insight.compare import compare_runs
from kflow.insight.confusion import confusion_matrix, predicted_classes
from kflow.insight.doctor import read_findings
from kflow.insight.report import write_report
from tests.conftest import run_cli
from tests.test_insight_doctor import CASES, make_run


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


@pytest.fixture
def synthetic_run(tmp_path):
    kwargs, _ = CASES["vanishing"]
    run = make_run(tmp_path / "vanishing", **kwargs,
                   dead={"hidden_0_relu": [0.0, 0.1, 0.2, 0.2, 0.3]})
    (run / "confusion_matrix.json").write_text(json.dumps(
        {"split": "test", "labels": ["a", "b"], "matrix": [[5, 1], [2, 7]],
         "accuracy": 0.8, "num_samples": 15}))
    return run


def test_report_is_self_contained_with_every_section(synthetic_run):
    start = time.perf_counter()
    path = write_report(synthetic_run)
    elapsed = time.perf_counter() - start
    html = path.read_text()
    assert path.name == "report.html"
    for section in ("Doctor's findings", "Final metrics", "Learning curves",
                    "Gradient norms per layer", "Learning rate", "Confusion matrix",
                    "Resolved config"):
        assert section in html, section
    assert "Vanishing gradients" in html and "Use ReLU instead of sigmoid" in html
    assert "learning_rate: 0.001" in html  # the config, as YAML
    images = _pngs(html)
    assert len(images) == 4  # curves, gradient norms, dead units, confusion (no LR logged)
    assert all(img.startswith(b"\x89PNG") for img in images)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert elapsed < 20  # ~1 s on an idle machine; generous for shared CI
    # Without findings.json the report diagnoses; with it, it shows those findings.
    assert read_findings(synthetic_run) == []


def test_report_cli_regenerates_report_and_findings(synthetic_run):
    out = run_cli("report", str(synthetic_run))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"report: {synthetic_run / 'report.html'}"
    assert read_findings(synthetic_run)[0].id == "vanishing_gradients"


def test_compare_puts_runs_side_by_side(tmp_path):
    kwargs, _ = CASES["healthy"]
    a = make_run(tmp_path / "a", **kwargs)
    b = make_run(tmp_path / "b", **{**kwargs, "loss": [2.0, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9]},
                 config={"learning_rate": 0.01})
    for run, acc in ((a, 0.91), (b, 0.85)):
        m = json.loads((run / "metrics.json").read_text())
        m["test"] = {"loss": 0.3, "accuracy": acc}
        (run / "metrics.json").write_text(json.dumps(m))
    cmp = compare_runs([a, b], output=tmp_path / "cmp.html")
    assert [r["run"] for r in cmp.rows] == ["a", "b"]
    assert "optimizer.learning_rate" in cmp.columns  # the hyperparameter that differs
    assert "model.activation" not in cmp.columns  # ... and not the ones that agree
    assert [r["test accuracy"] for r in cmp.rows] == [0.91, 0.85]
    table = cmp.table()
    assert table.splitlines()[0].startswith("run") and "0.91" in table and "0.01" in table
    html = cmp.html_path.read_text()
    assert len(_pngs(html)) == 1 and "differing hyperparameters" in html

    out = run_cli("compare", str(a), str(b), "-o", str(tmp_path / "cli.html"))
    assert out.returncode == 0, out.stderr
    assert "optimizer.learning_rate" in out.stdout and (tmp_path / "cli.html").is_file()


def test_compare_links_the_reports_it_finds(tmp_path):
    kwargs, _ = CASES["healthy"]
    a, b = make_run(tmp_path / "a", **kwargs), make_run(tmp_path / "b", **kwargs)
    write_report(a)
    html = compare_runs([a, b], output=tmp_path / "cmp.html").html_path.read_text()
    assert f"<li><a href='{(a / 'report.html').resolve().as_uri()}'>a</a></li>" in html
    assert (b / "report.html").resolve().as_uri() not in html


def test_report_names_the_run_files(synthetic_run):
    html = write_report(synthetic_run).read_text()
    assert ("Files: history.csv, grad_norms.csv, findings.json, metrics.json, config.yaml, "
            "tensorboard/.") in html


@pytest.mark.parametrize("history, expected", [
    ({"epoch": [1.0, 2.0, 3.0], "loss": [3.0, 2.0, 1.0]}, [1, 2, 3]),
    ({"epoch": [0.0, 1.0, 2.0], "loss": [3.0, 2.0, 1.0]}, [1, 2, 3]),  # an older run
    ({"epoch": [5.0, 6.0], "loss": [3.0, 2.0]}, [5, 6]),  # rows of a resumed run
    ({"loss": [3.0, 2.0, 1.0]}, [1, 2, 3]),
])
def test_epoch_numbers_count_from_1(history, expected):
    from kflow.insight.plots import epoch_numbers

    assert epoch_numbers(history).tolist() == expected
    assert epoch_numbers(history, 2).tolist() == expected[:2]


class _StubClassifier:
    def __init__(self, probs):
        self.probs = probs

    def predict(self, ds, verbose=0):
        return self.probs


def test_confusion_matrix_counts_true_by_predicted():
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    y = np.array([0, 1, 2, 2])
    cm = confusion_matrix(_StubClassifier(probs), np.zeros((4, 2), "float32"), y, "multiclass",
                          ["a", "b", "c"])
    assert cm["matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert cm["labels"] == ["a", "b", "c"] and cm["accuracy"] == 0.75
    assert cm["num_samples"] == 4 and cm["split"] == "test"
    assert predicted_classes(np.array([[0.2], [0.8]]), "binary").tolist() == [0, 1]
    assert confusion_matrix(None, None, np.zeros(3), "regression") is None


def test_a_run_leaves_report_findings_and_confusion_matrix(tmp_path):
    import kflow

    run = kflow.train("digits-mlp", epochs=2, run_dir=tmp_path / "r", verbose=0,
                      set_args=["grad_log_every=5"])
    d = run.run_dir
    for name in ("report.html", "findings.json", "confusion_matrix.json", "grad_norms.csv"):
        assert (d / name).is_file(), name
    cm = json.loads((d / "confusion_matrix.json").read_text())
    assert cm["num_samples"] == 270  # the test split
    assert cm["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"], abs=1e-6)
    html = (d / "report.html").read_text()
    assert len(_pngs(html)) == 5  # curves, gradient norms, learning rate, dead units, confusion
    for key in ("learning_rate", "grad_norm/total", "grad_norm/hidden_0_dense",
                "dead_relu/hidden_0_relu"):
        assert key in run.history and len(run.history[key]) == 2, key
    assert read_findings(d)


def test_nan_loss_stops_with_a_message_and_keeps_good_weights(tmp_path):
    import kflow

    run = kflow.train("digits-mlp", epochs=4, run_dir=tmp_path / "r", verbose=0,
                      set_args=["optimizer=sgd", "learning_rate=1e6", "batch_norm=none",
                                "dropout=0.0", "grad_log_every=1"])
    m = run.metrics
    assert m["nan_stop"]["epoch"] == 1 and m["nan_stop"]["restored_epoch"] == 0
    assert m["stop_reason"].startswith("Epoch 1, step ")
    assert "the training loss is nan" in m["stop_reason"]
    assert "restored the initial weights" in m["stop_reason"]
    assert m["epochs_run"] == 1
    status = json.loads((run.run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["nan_stop"]["epoch"] == 1
    assert all(np.isfinite(w).all() for w in run.model.get_weights())
    assert np.isfinite(m["test"]["loss"])
    finding = read_findings(run.run_dir)[0]
    assert finding.id == "exploding_gradients" and "NaN" in finding.title
    assert "became nan at epoch 1" in finding.evidence
