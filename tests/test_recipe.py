"""Recipes: declarations, registry lookup, YAML and command-line overrides."""

import textwrap

import pytest
import yaml

import kflow
from kflow.errors import ConfigError, UnknownNameError
from kflow.recipe.overrides import resolve_recipe
from kflow.recipe.registry import get_recipe_class, list_recipes

SHARED_NAMES = ["initializer", "regularizer", "regularizer_strength", "dropout", "batch_norm",
                "activation", "optimizer", "learning_rate", "batch_size", "epochs"]


def test_shipped_recipes_are_registered_with_descriptions():
    recipes = list_recipes()
    for name in ("digits-mlp", "digits-cnn", "digits-resnet", "breast-cancer-mlp"):
        assert name in recipes
        assert recipes[name].description


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet",
                                  "breast-cancer-mlp"])
def test_every_recipe_uses_the_shared_hyperparameter_names(name):
    specs = get_recipe_class(name).hparam_specs()
    for key in SHARED_NAMES:
        assert key in specs, f"{name} lacks {key}"


def test_defaults_and_recipe_specific_defaults():
    r, _ = resolve_recipe("digits-cnn")
    assert r.dropout == 0.25 and r.epochs == 40          # recipe's `defaults`
    assert r.optimizer == "adam" and r.learning_rate == 1e-3  # base declarations
    assert r.batch_norm == "before"


def test_cli_overrides_flat_dotted_and_name_forms():
    r, _ = resolve_recipe("digits-cnn", set_args=[
        "dropout=0.3", "optimizer.learning_rate=3e-4", "optimizer=sgd",
        "optimizer.momentum=0.9", "initializer=xavier_uniform", "batch_size=full"])
    assert r.dropout == 0.3
    assert r.learning_rate == pytest.approx(3e-4)
    assert r.optimizer == "sgd" and r.momentum == 0.9
    assert r.initializer == "glorot_uniform"        # alias -> canonical
    assert r.batch_size == "full"


def test_optimizer_name_via_dotted_name_key():
    r, _ = resolve_recipe("digits-mlp", set_args=["optimizer.name=rmsprop"])
    assert r.optimizer == "rmsprop"


@pytest.mark.parametrize(
    "set_arg, message",
    [
        ("dropuot=0.3", r"Unknown hyperparameter 'dropuot' for recipe digits-cnn "
                        r"\(did you mean 'dropout'\?\). Run `kflow recipes show digits-cnn`"),
        ("dropout=1.5", r"The 'dropout' parameter of digits-cnn must be a float in "
                        r"\[0.0, 1.0\). Got 1.5 instead."),
        ("initializer=he-normall", r"The 'initializer' parameter of digits-cnn must be one "
                                   r"of: .*he_normal.*Got 'he-normall' instead \(did you mean "
                                   r"'he_normal'\?\)"),
        ("optimizer=adamm", r"The 'optimizer' parameter of digits-cnn must be one of: "
                            r"adagrad, adam, adamw, nadam, rmsprop, sgd. Got 'adamm'"),
        ("activation=relux", r"'activation' parameter of digits-cnn .*Got 'relux'"),
        ("epochs=ten", r"The 'epochs' parameter of digits-cnn must be an int >= 1. "
                       r"Got 'ten' instead."),
        ("nesterov=true", r"'nesterov' parameter of digits-cnn only applies to optimizer=sgd"),
        ("dropout", r"--set expects KEY=VALUE \(e.g. --set dropout=0.3\). Got 'dropout'"),
    ],
)
def test_bad_overrides_explain_themselves(set_arg, message):
    with pytest.raises(ConfigError, match=message):
        resolve_recipe("digits-cnn", set_args=[set_arg])


def test_unknown_recipe_suggests_closest():
    with pytest.raises(UnknownNameError, match=r"Unknown recipe 'digits-cn' \(did you mean "
                                               r"'digits-cnn'\?\). Available: "):
        get_recipe_class("digits-cn")


def test_recipe_by_file_path_and_class(tmp_path):
    path = tmp_path / "my_recipe.py"
    path.write_text(textwrap.dedent('''
        import kflow
        from kflow import hp

        class A(kflow.Recipe):
            width = hp.Int(4, low=1, doc="width")
            def load_data(self):
                return kflow.data.load_sklearn("iris")
            def build_backbone(self, x):
                return x

        class B(A):
            width = hp.Int(8, low=1, doc="width")
    '''))
    assert get_recipe_class(f"{path}:B")().width == 8
    with pytest.raises(ConfigError, match=r"defines 2 recipes \(A, B\); pick one with"):
        get_recipe_class(str(path))
    with pytest.raises(UnknownNameError, match="has no recipe class 'C'"):
        get_recipe_class(f"{path}:C")


def test_yaml_config_grouped_and_flat(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(textwrap.dedent("""
        recipe: digits-mlp
        seed: 7
        dropout: 0.05
        optimizer: {name: sgd, learning_rate: 0.05, momentum: 0.9, nesterov: true}
        training: {epochs: 3, batch_size: 64}
    """))
    r, engine = resolve_recipe(str(cfg), set_args=["epochs=4"])
    assert engine["seed"] == 7
    assert (r.optimizer, r.learning_rate, r.momentum, r.nesterov) == ("sgd", 0.05, 0.9, True)
    assert r.batch_size == 64 and r.dropout == 0.05
    assert r.epochs == 4  # --set wins over YAML


@pytest.mark.parametrize(
    "content, message",
    [
        ("recipe: digits-mlp\ndropout: [0.1\n", r"Malformed YAML in '.*bad.yaml' at line \d+"),
        ("- a\n- b\n", r"must hold a mapping \(key: value lines\). Got a list instead."),
        ("dropout: 0.1\n", r"has no 'recipe:' key; add e.g. 'recipe: digits-cnn'"),
        ("recipe: digits-mlp\nmodel: {dropot: 0.1}\n",
         r"Unknown hyperparameter 'model.dropot' .*did you mean 'dropout'"),
    ],
)
def test_bad_yaml_files(tmp_path, content, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        resolve_recipe(str(cfg))


def test_written_config_reproduces_the_recipe(tmp_path):
    from kflow.training.trainer import resolved_config

    r, _ = resolve_recipe("digits-resnet", set_args=["dropout=0.2", "optimizer=adamw",
                                                     "weight_decay=1e-4"])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(resolved_config(r, seed=3)))
    again, engine = resolve_recipe(str(cfg))
    assert again.hparams == r.hparams and engine["seed"] == 3


def test_python_api_instance_and_attribute_validation():
    cls = get_recipe_class("digits-mlp")
    r = cls(units=16)
    assert r.units == 16
    with pytest.raises(ConfigError, match="Unknown hyperparameter 'unit'"):
        cls(unit=16)
    with pytest.raises(ConfigError, match="must be an int >= 1"):
        r.units = 0


def test_import_kflow_is_lazy():
    import subprocess
    import sys

    code = "import sys, kflow; kflow.__version__; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"
    assert "Recipe" in kflow.__all__ and "train" in kflow.__all__
