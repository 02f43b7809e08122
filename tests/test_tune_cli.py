"""`kflow tune` on the command line: help, one-line errors, and the acceptance run."""

import csv
import json

import pytest
import yaml

from tests.conftest import run_cli


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tune_is_a_command_with_help():
    out = run_cli("tune", "--help")
    assert out.returncode == 0
    for flag in ("--tuner", "--max-trials", "--max-epochs", "--objective", "--set", "--search",
                 "--search-only", "--cv", "--tune-dir", "--retrain", "KERASTUNER_TUNER_ID"):
        assert flag in out.stdout, flag
    assert "tune" in run_cli("--help").stdout


def test_bad_input_is_one_line_with_status_2(tmp_path):
    # (The other messages are pinned in test_tune_space.py and test_tune_search.py.)
    out = run_cli("tune", "digits-mlp", "--tune-dir", str(tmp_path / "t"), "--tuner", "grid",
                  "--search-only", "--search", "units=32,64,128", "--search",
                  "optimizer=adam,sgd", "--max-trials", "4")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        "kflow: error: The grid of digits-mlp has 6 combinations (units 3 x optimizer 2), more "
        "than --max-trials 4."), out.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_acceptance_hyperband_then_train_best_yaml(tmp_path):
    tune_dir = tmp_path / "hb"
    out = run_cli("tune", "digits-mlp", "--tuner", "hyperband", "--max-epochs", "3",
                  "--tune-dir", str(tune_dir), "--set", "hidden_layers=1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "best val_accuracy:" in out.stdout
    rows = _rows(tune_dir / "trials.csv")
    # Hyperband with max_epochs 3, factor 3: 3 trials of 1 epoch, the best of them again for
    # 3 epochs, and 2 fresh trials of 3 epochs.
    assert len(rows) == 6 and sorted(int(r["epochs"]) for r in rows) == [1, 1, 1, 3, 3, 3]
    assert all(r["status"] == "completed" for r in rows)
    assert (tune_dir / "report.html").is_file()
    best = max(rows, key=lambda r: float(r["score"]))
    best_yaml = tune_dir / "best.yaml"
    assert yaml.safe_load(best_yaml.read_text())["training"]["epochs"] == int(best["epochs"])

    # `kflow train best.yaml` accepts it as is and reproduces the best trial's score.
    run_dir = tmp_path / "again"
    out = run_cli("train", str(best_yaml), "--run-dir", str(run_dir), "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    again = json.loads((run_dir / "metrics.json").read_text())["val"]["accuracy"]
    assert again == pytest.approx(float(best["score"]), abs=0.01)
