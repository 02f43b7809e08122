"""Recipe files: run only when the user names them; config.yaml finds them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kflow.errors import ConfigError
from kflow.tuning.tuner import oracle_bind_address

RECIPE = textwrap.dedent('''
    import pathlib
    import kflow
    from kflow import hp

    pathlib.Path(__file__).with_name("imported.marker").write_text("ran")


    class IrisMLP(kflow.Recipe):
        name = "iris-mlp-file"
        description = "A one-hidden-layer MLP on iris."
        units = hp.Int(16, low=1, doc="Hidden units.")

        def load_data(self):
            return kflow.data.load_sklearn("iris")

        def build_backbone(self, x):
            import keras
            return keras.layers.Dense(self.units, activation="relu", name="hidden")(x)
''')

EVIL = 'import pathlib\npathlib.Path(__file__).with_name("evil.marker").write_text("ran")\n'


def _kflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KFLOW_RECIPES_PATH": ""}
    return subprocess.run([sys.executable, "-m", "kflow", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: os.umask(0o022))


def test_recipes_folder_in_the_current_directory_is_not_imported(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "evil.py").write_text(EVIL)
    listing = _kflow("recipes", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "digits-mlp" in listing.stdout and "tabular" in listing.stdout
    shown = _kflow("recipes", "show", "breast-cancer-mlp", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert not (tmp_path / "recipes" / "evil.marker").exists()


@pytest.mark.slow
def test_file_recipe_config_reproduces_the_run_and_exports(tmp_path):
    """train my_recipe.py -> kflow train RUN/config.yaml gives the same metrics -> export."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "my_recipe.py").write_text(RECIPE)
    first = _kflow("train", "my_recipe.py", "--run-dir", str(tmp_path / "a"), "--set",
                   "epochs=4", "--quiet", cwd=src)
    assert first.returncode == 0, first.stderr
    config = (tmp_path / "a" / "config.yaml").read_text()
    assert f"recipe: {src / 'my_recipe.py'}:IrisMLP" in config
    (src / "imported.marker").unlink()

    # From another folder, the config finds the file again: same metrics.
    again = _kflow("train", str(tmp_path / "a" / "config.yaml"), "--run-dir",
                   str(tmp_path / "b"), "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["test"] == b["test"] and a["val"] == b["val"]
    (src / "imported.marker").unlink()

    # Export never imports the recipe (it checks on the run's samples.npz).
    out = _kflow("export", str(tmp_path / "a"), "--tflite", "float32", "--base",
                 str(tmp_path / "exports"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (src / "imported.marker").exists()
    report = json.loads((tmp_path / "a" / "export" / "export.json").read_text())
    files = [p for p in [*(tmp_path / "a").rglob("*"), *(tmp_path / "exports").rglob("*")]
             if p.is_file()]
    assert len(files) > 10
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in files
            if p.stat().st_mode & 0o777 != 0o644} == {}
    assert report["tflite"]["variants"]["float32"]["accuracy"] == pytest.approx(
        a["test"]["accuracy"], abs=1e-6)

    # A config that came with a run directory runs no code without consent.
    from kflow.training.trainer import Trainer

    with pytest.raises(ConfigError, match="--trust-recipe-file"):
        Trainer.from_run(tmp_path / "a")
    assert not (src / "imported.marker").exists()

    # The file moved: one clear line.
    (src / "my_recipe.py").rename(src / "moved.py")
    moved = _kflow("train", str(tmp_path / "a" / "config.yaml"), "--run-dir",
                   str(tmp_path / "c"), cwd=tmp_path)
    assert moved.returncode == 2
    assert moved.stderr.strip().splitlines() == [
        f"kflow: error: The recipe file {src / 'my_recipe.py'} named in "
        f"'{tmp_path / 'a' / 'config.yaml'}' does not exist (moved or deleted?). Put it back, "
        "or edit 'recipe:' in that file to its new path."]


def test_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    from kflow.cli.main import main

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    assert main(["export", str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kflow: error: '{tmp_path / 'notes'}' is not a kflow run directory (it has "
                   "no config.yaml, run.json or status.json). Pass a folder that `kflow train` "
                   "created, e.g. runs/NAME-HASH."]


def test_damaged_model_file_is_named_as_such(tmp_path):
    from kflow.errors import RunError
    from kflow.run import RunDir
    from kflow.run.model_file import load_model_file

    rd = RunDir(tmp_path)
    rd.model.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunError, match=r"model.keras is damaged \(not a valid .keras archive\)"):
        load_model_file(rd.model)


def test_tuner_oracle_binds_to_loopback_unless_asked(monkeypatch):
    monkeypatch.delenv("KFLOW_ORACLE_BIND", raising=False)
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "10.1.2.3")
    assert oracle_bind_address() == "127.0.0.1"
    monkeypatch.setenv("KFLOW_ORACLE_BIND", "0.0.0.0")
    assert oracle_bind_address() == "0.0.0.0"


def test_run_files_follow_the_umask(tmp_path):
    from kflow.run import atomic_save, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_save(tmp_path / "b.bin", lambda p: Path(p).write_bytes(b"x"))
        os.umask(0o027)
        atomic_write_text(tmp_path / "c.json", "{}")
    finally:
        os.umask(old)
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert (mode("a.json"), mode("b.bin"), mode("c.json")) == (0o644, 0o644, 0o640)
