"""The search space: declarations -> KerasTuner, --search specs, conditions, bad input."""


import pytest

from kflow.errors import ConfigError
from kflow.recipe.overrides import resolve_recipe
from kflow.tuning import SearchSpace, hyperband_schedule, parse_search_args
from kflow.tuning.objective import logged_metrics, resolve_objective


def _space(recipe="digits-mlp", set_args=(), **kwargs):
    base, _ = resolve_recipe(recipe, set_args=set_args)
    pinned = {a.partition("=")[0] for a in set_args}
    return SearchSpace.build(base, pinned=pinned, **kwargs)


def test_default_space_comes_from_the_declarations():
    space = _space()
    dims = space.dims
    assert dims["dropout"].kind == "float" and (dims["dropout"].low, dims["dropout"].high) == (
        0.0, 0.5)
    assert dims["learning_rate"].log and dims["learning_rate"].low == 1e-4
    assert dims["units"].kind == "int" and dims["units"].log
    assert dims["optimizer"].values == ("adam", "sgd", "rmsprop")
    assert dims["skip_connections"].values == (False, True)
    assert dims["batch_norm"].values == ("before", "after", "none")  # search=True: all values
    # Declared without a search range: not searched.
    assert "momentum" not in dims and "epochs" not in dims and "patience" not in dims
    # regularizer_strength only matters with a regularizer.
    assert dims["regularizer_strength"].condition == ("regularizer", ("l2",))
    # Defaults start the search at the recipe's values.
    assert dims["units"].default == 128 and dims["optimizer"].default == "adam"


def test_set_pins_a_value_out_of_the_space_unless_searched_explicitly():
    space = _space(set_args=["units=64", "dropout=0.3"], search_args=["dropout=0.1:0.4"])
    assert "units" not in space.dims
    assert space.dims["dropout"].default == 0.3 and space.dims["dropout"].origin == "--search"


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("dropout=0.1:0.3", dict(kind="float", low=0.1, high=0.3, log=False, step=None)),
        ("learning_rate=1e-4:1e-2:log", dict(kind="float", low=1e-4, high=1e-2, log=True)),
        ("units=32:256:32", dict(kind="int", low=32, high=256, step=32)),
        ("learning_rate=1e-4:1e-1:log:10", dict(log=True, step=10.0)),
        ("optimizer=adam,sgd,rmsprop", dict(kind="choice", values=("adam", "sgd", "rmsprop"))),
        ("units=32,64", dict(kind="choice", values=(32, 64))),
        ("skip_connections=true,false", dict(kind="choice", values=(True, False))),
        ("regularizer=elastic_net,none", dict(values=("l1_l2", "none"))),  # alias normalized
        ("dropout=0,0.25", dict(values=(0.0, 0.25))),
    ],
)
def test_search_specs(spec, expected):
    name = spec.partition("=")[0]
    dim = _space(search_args=[spec], only=True).dims[name]
    for key, value in expected.items():
        assert getattr(dim, key) == value, key


def test_yaml_style_specs_and_only():
    space = _space(only=True, search={
        "dropout": "0.0:0.5", "optimizer.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "model.units": [32, 64], "activation": {"values": ["relu", "gelu"]},
    })
    assert list(space.dims) == ["dropout", "learning_rate", "units", "activation"]
    assert space.dims["learning_rate"].log and space.dims["units"].values == (32, 64)


@pytest.mark.parametrize(
    "args, message",
    [
        (["dropot=0:0.5"], r"^Unknown hyperparameter 'dropot' in --search for recipe digits-mlp "
                           r"\(did you mean 'dropout'\?\)\. Run `kflow recipes show digits-mlp`"),
        (["dropout=0.5:0.1"], r"^The search range of 'dropout' for digits-mlp is inverted: "
                              r"low 0\.5 > high 0\.1 \(--search dropout=0\.5:0\.1\)\. Write it "
                              r"LOW:HIGH"),
        (["dropout=0.2:0.2"], r"^The search range of 'dropout' for digits-mlp is empty: low == "
                              r"high == 0\.2 .* use --set dropout=0\.2\.$"),
        (["dropout="], r"^The search range of 'dropout' for digits-mlp is empty"),
        (["dropout=0:1.0"], r"^The search range of 'dropout' for digits-mlp must be a float in "
                            r"\[0\.0, 1\.0\) \(its declaration\)\. Got 1\.0 in --search"),
        (["learning_rate=0:1e-2:log"], r"must be a float > 0\.0 \(its declaration\)\. Got 0 "),
        (["units=8.5:64"], r"must be an int >= 1 \(its declaration\)\. Got 8\.5"),
        (["optimizer=adam,sgdd"], r"must be one of: adagrad, adam, .*Got 'sgdd' \(did you "
                                  r"mean 'sgd'\?\) in --search optimizer=adam,sgdd"),
        (["optimizer=0:1"], r"'optimizer' of recipe digits-mlp is a choice; search it over values"),
        (["units=32:256:0"], r"The step of 'units' .* must be in \(0, high - low\]"),
        (["learning_rate=1e-4:1e-1:log:1"], r"is a factor and must be > 1"),
        (["dropout"], r"^--search expects NAME=LOW:HIGH\[:log\] or NAME=A,B,C"),
    ],
)
def test_bad_search_specs_are_one_line_errors(args, message):
    with pytest.raises(ConfigError, match=message) as info:
        _space(search_args=args)
    assert "\n" not in str(info.value)


def test_conditional_momentum_and_nesterov():
    space = _space(only=True, search_args=["optimizer=adam,sgd", "momentum=0.0:0.9",
                                           "nesterov=true,false"])
    assert list(space.dims) == ["optimizer", "momentum", "nesterov"]
    assert space.dims["momentum"].condition == ("optimizer", ("sgd",))
    assert space.dims["nesterov"].condition == ("optimizer", ("sgd",))
    hp = space.to_keras_tuner()
    by_name = {h.name: h for h in hp.space}
    assert by_name["momentum"].conditions[0].values == ["sgd"]
    # A trial with adam: momentum/nesterov do not apply and get their defaults.
    adam = space.overrides({"optimizer": "adam", "momentum": 0.5, "nesterov": True})
    assert adam["momentum"] == 0.0 and adam["nesterov"] is False
    sgd = space.overrides({"optimizer": "sgd", "momentum": 0.5, "nesterov": True,
                           "tuner/epochs": 3})
    assert sgd == {"optimizer": "sgd", "momentum": 0.5, "nesterov": True}
    # Every sampled configuration is a valid recipe.
    cls = type(space.recipe)
    for values in ({"optimizer": "adam"}, {"optimizer": "sgd", "momentum": 0.9}):
        cls(**{**space.recipe.hparams, **space.overrides(values)})


def test_a_fixed_momentum_is_reset_when_a_trial_picks_adam():
    space = _space(set_args=["optimizer=sgd", "momentum=0.9"], only=True,
                   search_args=["optimizer=adam,sgd"])
    assert space.overrides({"optimizer": "adam"})["momentum"] == 0.0
    assert "momentum" not in space.overrides({"optimizer": "sgd"})  # keeps the fixed 0.9


def test_a_condition_that_can_never_apply_is_an_error_or_dropped():
    with pytest.raises(ConfigError, match=r"^Cannot search 'momentum' for recipe digits-mlp: it "
                       r"only applies when optimizer is rmsprop or sgd, and the optimizer is "
                       r"adam\."):
        _space(set_args=["optimizer=adam"], search_args=["momentum=0:0.9"])
    # Declared (not asked for): silently left out.
    space = _space(set_args=["regularizer=none"])
    assert "regularizer_strength" not in space.dims
    space = _space(set_args=["regularizer=l2"])
    assert space.dims["regularizer_strength"].condition is None


def test_grid_size_counts_conditional_dims_per_parent_value():
    space = _space(only=True, search_args=["optimizer=adam,sgd,rmsprop", "momentum=0:0.9:0.3",
                                           "nesterov=true,false", "units=32,64"])
    # adam: 1; sgd: 4 momenta x 2 nesterov; rmsprop: 4 momenta -> 13, times 2 units.
    assert space.grid_size() == 26
    assert "momentum 4 (when optimizer=sgd/rmsprop)" in space.grid_breakdown()
    assert _space(only=True, search_args=["dropout=0.0:0.5"]).grid_size() == 10  # no step


def test_keras_tuner_space_types():
    import keras_tuner as kt

    space = _space(only=True, search_args=[
        "dropout=0.0:0.5:0.1", "learning_rate=1e-4:1e-2:log", "units=16:64:16",
        "optimizer=adam,sgd", "skip_connections=true,false", "activation=relu"])
    hp = {h.name: h for h in space.to_keras_tuner().space}
    assert isinstance(hp["dropout"], kt.engine.hyperparameters.Float) and hp["dropout"].step == 0.1
    assert hp["learning_rate"].sampling == "log"
    assert isinstance(hp["units"], kt.engine.hyperparameters.Int) and hp["units"].step == 16
    assert isinstance(hp["optimizer"], kt.engine.hyperparameters.Choice)
    assert isinstance(hp["skip_connections"], kt.engine.hyperparameters.Boolean)
    assert isinstance(hp["activation"], kt.engine.hyperparameters.Fixed)
    # Grid sizes agree with KerasTuner's own enumeration.
    for name in ("dropout", "units"):
        assert space.dims[name].grid_size() == len(list(hp[name].values))


def test_overrides_round_and_validate_values():
    space = _space(only=True, search_args=["learning_rate=1e-4:1e-1:log:10"])
    out = space.overrides({"learning_rate": 1e-4 * 10 ** 2})  # 0.010000000000000002
    assert out == {"learning_rate": 0.01}


def test_parse_search_args():
    assert parse_search_args(["a=1:2", " b = x,y "]) == {"a": "1:2", "b": "x,y"}


def test_objective_must_be_a_logged_metric():
    base, _ = resolve_recipe("breast-cancer-mlp")
    assert logged_metrics(base, "binary", has_val=True) == {
        "loss": "min", "accuracy": "max", "auc": "max",
        "val_loss": "min", "val_accuracy": "max", "val_auc": "max"}
    assert resolve_objective(None, base, "binary", has_val=True).name == "val_accuracy"
    obj = resolve_objective("val_loss", base, "binary", has_val=True)
    assert obj.direction == "min" and obj.split == "val" and obj.metric == "loss"
    assert resolve_objective("val_auc:min", base, "binary", has_val=True).direction == "min"
    with pytest.raises(ConfigError, match=r"^The objective 'val_acc' is not a metric "
                       r"breast-cancer-mlp logs \(did you mean 'val_accuracy'\?\)\. Logged "
                       r"metrics: loss, accuracy, auc, val_loss, val_accuracy, val_auc\.$"):
        resolve_objective("val_acc", base, "binary", has_val=True)
    with pytest.raises(ConfigError, match=r"no validation split \(val_fraction=0\)"):
        resolve_objective("val_accuracy", base, "binary", has_val=False)
    with pytest.raises(ConfigError, match=r"With --cv the objective is a held-out fold's "
                       r"metric: one of val_loss, val_accuracy, val_auc"):
        resolve_objective("accuracy", base, "binary", has_val=True, cv=3)


@pytest.mark.parametrize("max_epochs, factor", [(3, 3), (9, 3), (10, 2), (27, 3)])
def test_hyperband_schedule_matches_keras_tuner(max_epochs, factor):
    from keras_tuner.oracles import HyperbandOracle

    oracle = HyperbandOracle(objective="val_loss", max_epochs=max_epochs, factor=factor)
    expected = []
    for b in reversed(range(oracle._get_num_brackets())):
        for r in range(b + 1):
            expected.append((b, r, oracle._get_size(b, r), oracle._get_epochs(b, r)))
    assert hyperband_schedule(max_epochs, factor) == expected


@pytest.mark.parametrize("imports", [
    "import kflow",
    "import kflow.tuning.space, kflow",
    "import kflow.training.engine, kflow.tuning.search, kflow",
    "import kflow; kflow.tune; import kflow.tuning",
])
def test_each_public_name_is_one_thing_in_any_import_order(imports):
    """`kflow.tune` / `kflow.train` are functions, `kflow.tuning` / `kflow.training` packages,
    whatever was imported first; importing them loads neither TensorFlow nor KerasTuner."""
    import subprocess
    import sys

    code = (f"{imports}\nimport sys, types\n"
            "assert isinstance(kflow.tune, types.FunctionType), kflow.tune\n"
            "assert isinstance(kflow.train, types.FunctionType), kflow.train\n"
            "assert isinstance(kflow.tuning, types.ModuleType)\n"
            "assert isinstance(kflow.training, types.ModuleType)\n"
            "assert kflow.tuning.SearchSpace and kflow.tuning.TUNERS\n"
            "assert 'tensorflow' not in sys.modules and 'keras_tuner' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
