"""The command line: help, listing, and one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from tests.conftest import run_cli


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "train" in out.stdout and "recipes" in out.stdout
    assert "kflow train digits-cnn --set dropout=0.3" in out.stdout


def test_train_help_explains_options():
    out = run_cli("train", "--help")
    assert out.returncode == 0
    for flag in ("--set", "--epochs", "--run-dir", "--seed", "--strategy"):
        assert flag in out.stdout


def test_recipes_list_and_show():
    out = run_cli("recipes")
    assert out.returncode == 0
    assert "digits-cnn" in out.stdout and "breast-cancer-mlp" in out.stdout
    show = run_cli("recipes", "show", "digits-cnn")
    assert show.returncode == 0
    assert "dropout = 0.25" in show.stdout
    assert "Allowed: a float in [0.0, 1.0)" in show.stdout
    assert "[optimizer]" in show.stdout and "learning_rate = 0.001" in show.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "digits-cn"], "kflow: error: Unknown recipe 'digits-cn' (did you mean "
                                 "'digits-cnn'?)"),
        (["train", "digits-cnn", "--set", "dropuot=0.3"],
         "kflow: error: Unknown hyperparameter 'dropuot' for recipe digits-cnn (did you mean "
         "'dropout'?)"),
        (["train", "digits-cnn", "--set", "dropout=1.5"],
         "kflow: error: The 'dropout' parameter of digits-cnn must be a float in [0.0, 1.0). "
         "Got 1.5 instead."),
        (["train", "digits-cnn", "--set", "initializer=he-normall"],
         "Got 'he-normall' instead (did you mean 'he_normal'?)."),
        (["train", "digits-cnn", "--set", "optimizer=adamm"],
         "The 'optimizer' parameter of digits-cnn must be one of: adagrad, adam, adamw, nadam, "
         "rmsprop, sgd. Got 'adamm' instead (did you mean 'adam'?)."),
        (["train", "digits-cnn", "--set", "activation=sigmoud"],
         "Got 'sigmoud' instead (did you mean 'sigmoid'?)."),
        (["train", "missing.yaml"], "kflow: error: Config file 'missing.yaml' does not exist."),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [
    ["train", "digits-cn"], ["tune", "digits-cnn", "--set", "dropout=1.5"],
    ["cv", "digits-mlp", "--set", "unitz=8"], ["lr-find", "missing.yaml"],
])
def test_bad_recipe_input_is_reported_before_tensorflow_starts(args, tmp_path):
    # The same one-line errors, in a fraction of a second: TensorFlow is never imported.
    script = ("import sys; from kflow.cli.main import main; "
              f"code = main({args!r}); print(code, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert out.stderr.startswith("kflow: error: ") and len(out.stderr.splitlines()) == 1


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: digits-mlp\noptimizer: {name: adam\n")
    out = run_cli("train", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().startswith(f"kflow: error: Malformed YAML in '{bad}' at line")
    assert len(out.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    out = run_cli("--debug", "train", "digits-cnn", "--set", "dropout=1.5")
    assert out.returncode == 2
    assert "Traceback (most recent call last)" in out.stderr
    assert "kflow: error: The 'dropout' parameter" in out.stderr


def test_a_command_runs_with_the_process_collector_thresholds(monkeypatch, tmp_path):
    import gc

    from kflow.cli import compare
    from kflow.cli.main import main
    from kflow.gc_policy import PROCESS_GC_THRESHOLDS

    seen = []
    monkeypatch.setattr(compare, "run", lambda args: seen.append(gc.get_threshold()) or 0)
    before = gc.get_threshold()
    assert main(["compare", str(tmp_path)]) == 0
    assert seen == [PROCESS_GC_THRESHOLDS]
    assert gc.get_threshold() == before  # restored for whoever called main()
