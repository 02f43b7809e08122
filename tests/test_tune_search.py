"""`kflow.tune` in-process: outputs, failed trials, resume, CV objective, retrain, bad input."""

import csv
import json

import pytest
import yaml

import kflow
from kflow.errors import ConfigError
from kflow.recipe.overrides import resolve_recipe

# A tiny, fast search: one hidden layer of a few units, 2 epochs per trial.
SMALL = dict(set_args=["hidden_layers=1", "batch_size=64"], max_epochs=2, verbose=0)
SEARCH = ["units=4:16", "learning_rate=1e-3:1e-1:log", "optimizer=adam,sgd",
          "momentum=0.0:0.9"]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def random_search(tmp_path_factory):
    tune_dir = tmp_path_factory.mktemp("tune") / "random"
    result = kflow.tune("breast-cancer-mlp", tuner="random", max_trials=3, tune_dir=tune_dir,
                        search_args=SEARCH, search_only=True, **SMALL)
    return result


def test_search_writes_table_report_and_best_yaml(random_search):
    result = random_search
    d = result.tune_dir
    for name in ("trials.csv", "report.html", "best.yaml", "tune_config.json",
                 "keras_tuner/oracle.json"):
        assert (d / name).is_file(), name
    rows = _rows(d / "trials.csv")
    assert len(rows) == 3 == len(result.trials)
    assert list(rows[0])[:9] == ["trial_id", "status", "score", "epochs", "epochs_run",
                                 "best_epoch", "seconds", "worker", "reason"]
    assert set(rows[0]) >= {"units", "learning_rate", "optimizer", "momentum"}
    for row in rows:
        assert row["status"] == "completed" and 0 <= float(row["score"]) <= 1
        assert row["epochs"] == "2" and float(row["seconds"]) > 0
        assert 4 <= int(row["units"]) <= 16
        # momentum is conditional: only trials with sgd have a value.
        assert (row["momentum"] != "") == (row["optimizer"] == "sgd")
        # Every trial keeps its complete run directory.
        trial_dir = d / "trials" / row["trial_id"]
        for name in ("config.yaml", "metrics.json", "model.keras", "history.csv", "trial.json"):
            assert (trial_dir / name).is_file(), name
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert metrics["val"]["accuracy"] == pytest.approx(float(row["score"]), abs=1e-6)
        config = yaml.safe_load((trial_dir / "config.yaml").read_text())
        assert config["model"]["units"] == int(row["units"])
        assert config["training"]["early_stopping"] is True
        assert config["training"]["grad_log_every"] == 0  # gradient logging off in trials
    best = max(result.trials, key=lambda r: r.score)
    assert result.best.trial_id == best.trial_id
    report = (d / "report.html").read_text()
    assert "Score of each trial" in report and "data:image/png;base64," in report
    assert f"<tr class='best'><td>{best.trial_id}</td>" in report


def test_best_yaml_is_a_ready_recipe(random_search):
    result = random_search
    text = result.best_yaml.read_text()
    assert text.startswith("# The best configuration of `kflow tune breast-cancer-mlp")
    recipe, engine = resolve_recipe(str(result.best_yaml))
    assert recipe.name == "breast-cancer-mlp" and engine["seed"] == 0
    assert recipe.hparams["units"] == result.best.values["units"]
    assert recipe.hparams["hidden_layers"] == 1 and recipe.hparams["epochs"] == 2
    trial_config = yaml.safe_load(
        (result.tune_dir / "trials" / result.best.trial_id / "config.yaml").read_text())
    assert yaml.safe_load(text) == trial_config


def test_rerunning_the_same_search_repeats_nothing(random_search):
    d = random_search.tune_dir
    stamps = {p: p.stat().st_mtime_ns for p in d.glob("trials/*/metrics.json")}
    again = kflow.tune("breast-cancer-mlp", tuner="random", max_trials=3, tune_dir=d,
                       search_args=SEARCH, search_only=True, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in d.glob("trials/*/metrics.json")} == stamps
    assert [r.trial_id for r in again.trials] == [r.trial_id for r in random_search.trials]
    assert again.best.score == random_search.best.score
    # A larger budget continues the same search: one new trial, new values.
    more = kflow.tune("breast-cancer-mlp", tuner="random", max_trials=4, tune_dir=d,
                      search_args=SEARCH, search_only=True, **SMALL)
    assert len(more.trials) == 4 and len(list(d.glob("trials/*/metrics.json"))) == 4
    seen = {tuple(sorted(r.values.items())) for r in more.trials}
    assert len(seen) == 4
    # Other settings in the same directory: refused.
    with pytest.raises(ConfigError, match=r"holds a search with other settings \(changed: "
                       r"objective\)"):
        kflow.tune("breast-cancer-mlp", tuner="random", max_trials=4, tune_dir=d,
                   search_args=SEARCH, search_only=True, objective="val_loss", **SMALL)


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    # Grid order: the fixed value (a learning rate of 1e12) first; it diverges.
    result = kflow.tune(
        "breast-cancer-mlp", tuner="grid", tune_dir=tmp_path / "t", search_only=True,
        search_args=["learning_rate=1e12,0.01"],
        set_args=[*SMALL["set_args"], "optimizer=sgd", "learning_rate=1e12", "units=4"],
        max_epochs=1, verbose=0,
    )
    first, second = result.trials
    assert first.status == "FAILED" and first.score is None
    assert "nan" in first.reason.lower() and first.values == {"learning_rate": 1e12}
    assert second.status == "COMPLETED" and result.best is second
    rows = _rows(result.trials_csv)
    assert rows[0]["status"] == "failed" and "nan" in rows[0]["reason"].lower()
    outcome = json.loads((result.tune_dir / "trials" / first.trial_id / "trial.json").read_text())
    assert outcome["status"] == "FAILED" and outcome["reason"] == first.reason
    assert "failed" in result.report.read_text()
    assert yaml.safe_load(result.best_yaml.read_text())["optimizer"]["learning_rate"] == 0.01


def test_cv_objective_is_the_mean_of_the_folds_and_retrain(tmp_path):
    result = kflow.tune("breast-cancer-mlp", tuner="random", max_trials=1, cv=2,
                        tune_dir=tmp_path / "cv", search_only=True,
                        search_args=["units=4:8"], retrain=True,
                        **{**SMALL, "max_epochs": 1})
    assert result.objective.cv == 2 and "2-fold cross-validation" in result.objective.describe()
    for row in result.trials:
        cv = json.loads((result.tune_dir / "trials" / row.trial_id / "cv.json").read_text())
        folds = [f["accuracy"] for f in cv["per_fold"]]
        assert len(folds) == 2 and row.score == pytest.approx(sum(folds) / 2)
    assert "(mean of 2 folds)" in result.best_yaml.read_text()
    retrained = result.retrained
    assert retrained is not None and retrained.run_dir == result.tune_dir / "best_retrained"
    info = json.loads((retrained.run_dir / "run.json").read_text())
    assert info["num_val"] == 0  # train + validation
    config = yaml.safe_load((retrained.run_dir / "config.yaml").read_text())
    assert config["data"]["val_fraction"] == 0.0 and config["training"]["epochs"] >= 1
    assert config["model"]["units"] == result.best.values["units"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(search_args=["dropot=0:0.5"]),
         r"^Unknown hyperparameter 'dropot' in --search for recipe digits-mlp \(did you mean "
         r"'dropout'\?\)"),
        (dict(search_args=["dropout=0.5:0.1"]), r"is inverted: low 0\.5 > high 0\.1"),
        (dict(search_args=["units=64:64"]), r"is empty: low == high == 64"),
        (dict(tuner="grid"), r"^The grid of digits-mlp has [\d,]+ combinations \(regularizer 2 "
                             r"x optimizer 3 x .*\), more than --max-trials 10\. Narrow it"),
        (dict(tuner="grid", max_trials=3, search_only=True,
              search_args=["units=32,64", "optimizer=adam,sgd"]),
         r"^The grid of digits-mlp has 4 combinations \(units 2 x optimizer 2\), more than "
         r"--max-trials 3\. .* raise --max-trials to 4\.$"),
        (dict(objective="val_acc"),
         r"^The objective 'val_acc' is not a metric digits-mlp logs \(did you mean "
         r"'val_accuracy'\?\)\. Logged metrics: loss, accuracy, val_loss, val_accuracy\.$"),
        (dict(tuner="hyperbnd"), r"^Unknown tuner 'hyperbnd' \(did you mean 'hyperband'\?\)"),
        (dict(tuner="hyperband", search_args=["epochs=1:5"]), r"^Hyperband sets each trial's "
                                                              r"epochs itself"),
        (dict(cv=1), r"^cv must be an int >= 2\. Got 1 instead\.$"),
        (dict(search_only=True), r"^Nothing to search for recipe digits-mlp"),
    ],
)
def test_bad_input_fails_before_any_trial(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        kflow.tune("digits-mlp", tune_dir=tmp_path / "t", verbose=0, **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "t").exists()


def test_yaml_search_block(tmp_path):
    config = tmp_path / "space.yaml"
    config.write_text("recipe: digits-mlp\nunits: 32\nsearch:\n  dropout: 0.0:0.3\n"
                      "  optimizer: [adam, sgd]\n  model.units: [16, 32]\n")
    with pytest.raises(ConfigError, match=r"^The grid of digits-mlp has [\d,]+ combinations "
                       r"\(regularizer 2 x .*units 2.*\)"):
        kflow.tune(str(config), tuner="grid", verbose=0, tune_dir=tmp_path / "t")
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: digits-mlp\nsearch:\n  dropuot: 0.0:0.3\n")
    with pytest.raises(ConfigError, match=r"^Unknown hyperparameter 'dropuot' in the search: "
                       r"block of '.*bad.yaml' for recipe digits-mlp \(did you mean 'dropout'"):
        kflow.tune(str(bad), verbose=0, tune_dir=tmp_path / "t")


def test_bayesian_search_runs(tmp_path):
    result = kflow.tune("breast-cancer-mlp", tuner="bayesian", max_trials=3,
                        tune_dir=tmp_path / "b", search_only=True,
                        search_args=["units=4:16", "learning_rate=1e-3:1e-1:log"],
                        **{**SMALL, "max_epochs": 1})
    assert [r.status for r in result.trials] == ["COMPLETED"] * 3
    assert len({tuple(sorted(r.values.items())) for r in result.trials}) == 3


def test_too_many_failures_in_a_row_stop_the_search_with_a_report(tmp_path):
    with pytest.raises(kflow.RunError, match=r"^2 trials in a row failed, so the search stopped "
                       r"\(last reason: .*nan.*\)\. See .*trials\.csv\.$"):
        kflow.tune("breast-cancer-mlp", tuner="grid", tune_dir=tmp_path / "f", search_only=True,
                   search_args=["learning_rate=1e12,1e13,1e14"], max_consecutive_failed_trials=2,
                   set_args=[*SMALL["set_args"], "optimizer=sgd", "units=4"], max_epochs=1,
                   verbose=0)
    rows = _rows(tmp_path / "f" / "trials.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert (tmp_path / "f" / "report.html").is_file()
    assert not (tmp_path / "f" / "best.yaml").exists()


def test_tune_options_by_name_or_object_and_unknown_names_listed(tmp_path):
    from kflow.tuning import TuneOptions

    with pytest.raises(ConfigError, match=r"^factor must be an int >= 2\. Got 1 instead\.$"):
        kflow.tune("digits-mlp", tune_dir=tmp_path / "t", verbose=0, tuner="hyperband",
                   factor=1)
    with pytest.raises(ConfigError, match=r"^factor must be an int >= 2"):
        kflow.tune("digits-mlp", tune_dir=tmp_path / "t", verbose=0, tuner="hyperband",
                   options=TuneOptions(factor=1))
    with pytest.raises(TypeError, match=r"unknown option\(s\) fctor\. Valid options: factor, "
                                        r"hyperband_iterations, max_consecutive_failed_trials, "
                                        r"tunes_root, command\.$"):
        kflow.tune("digits-mlp", tune_dir=tmp_path / "t", verbose=0, fctor=2)
    assert not (tmp_path / "t").exists()
