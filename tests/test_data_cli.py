"""Command line: the example CSV recipe trains, `kflow cv` reports mean ± std, data errors."""

import json

import pytest

import kflow
from kflow.errors import DataError

EXAMPLE = "recipes/example_tabular/example.yaml"


@pytest.mark.slow
def test_example_csv_recipe_trains_from_the_command_line(cli, tmp_path):
    run_dir = tmp_path / "run"
    done = cli("train", EXAMPLE, "--epochs", "2", "--run-dir", str(run_dir), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "test accuracy:" in done.stdout
    info = json.loads((run_dir / "run.json").read_text())
    assert info["task"] == "binary" and info["class_names"] == ["fail", "pass"]
    assert info["num_train"] + info["num_val"] + info["num_test"] == 397
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


@pytest.mark.slow
def test_cv_command_prints_each_fold_and_mean_std(cli, tmp_path):
    done = cli("cv", "breast-cancer-mlp", "--folds", "5", "--epochs", "2",
               "--out-dir", str(tmp_path / "cv"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for fold in range(1, 6):
        assert f"fold {fold}/5: accuracy=" in out
    assert "5-fold CV of breast-cancer-mlp: accuracy " in out and " ± " in out
    table = out[out.index("fold  "):].splitlines()
    assert [row.split()[0] for row in table[1:6]] == ["1", "2", "3", "4", "5"]
    assert table[6].startswith("mean ± std")
    assert f"cv directory: {tmp_path / 'cv'}" in out
    assert (tmp_path / "cv" / "cv.json").is_file() and (tmp_path / "cv" / "cv.csv").is_file()


def test_a_failed_data_load_leaves_no_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(DataError, match=r"Data file '.*missing.csv' does not exist"):
        kflow.train("tabular", set_args=["path=missing.csv", "target=y"], run_dir=run_dir,
                    verbose=0)
    assert not run_dir.exists()
    with pytest.raises(DataError, match=r"Target column 'reslt' is not a column of "
                                        r"'students.csv' \(did you mean 'result'\?\)"):
        kflow.train(EXAMPLE, set_args=["target=reslt"], runs_root=tmp_path / "runs", verbose=0)
    assert not (tmp_path / "runs").exists()


def test_data_errors_are_one_line_on_the_command_line(capsys, tmp_path):
    from kflow.cli.main import main

    code = main(["train", EXAMPLE, "--set", "target=reslt", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "kflow: error: Target column 'reslt' is not a column of 'students.csv' (did you mean "
        "'result'?). Available columns: hours_studied, sleep_hours, previous score, school, "
        "tutoring, absences, result."]
    assert not (tmp_path / "r").exists()
