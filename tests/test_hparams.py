"""Hyperparameter declarations: parsing and validation messages."""

import pytest

from kflow.blocks.initializers import INITIALIZERS
from kflow.errors import ConfigError
from kflow.recipe.hparams import Bool, Choice, Float, Int, SearchRange, Str


def _named(spec, name):
    spec.__set_name__(object, name)
    return spec


@pytest.mark.parametrize(
    "spec, value, expected",
    [
        (Float(0.1, low=0.0, high=1.0, high_inclusive=False), 0.5, 0.5),
        (Float(0.1, low=0.0, high=1.0, high_inclusive=False), 0, 0.0),
        (Float(0.1, low=0.0), "1e-3", 1e-3),
        (Int(3, low=1), 4.0, 4),
        (Int(3, low=1), "7", 7),
        (Bool(False), "yes", True),
        (Bool(True), "off", False),
        (Choice("a", ["a", "b"]), "b", "b"),
        (Choice("he_normal", registry=INITIALIZERS), "xavier_normal", "glorot_normal"),
        (Str("x"), "col", "col"),
        (Float(None, nullable=True), None, None),
    ],
)
def test_valid_values_are_normalized(spec, value, expected):
    assert _named(spec, "p").validate(value, owner="R") == expected


@pytest.mark.parametrize(
    "spec, value, message",
    [
        (Float(0.1, low=0.0, high=1.0, high_inclusive=False), 1.5,
         r"The 'p' parameter of R must be a float in \[0.0, 1.0\). Got 1.5 instead."),
        (Float(0.1, low=0.0), "abc", r"must be a float >= 0.0. Got 'abc' instead."),
        (Float(0.1), float("nan"), r"must be a float. Got nan instead."),
        (Int(3, low=1), 0, r"must be an int >= 1. Got 0 instead."),
        (Int(3, low=1), 2.5, r"Got 2.5 instead."),
        (Int(3), True, r"Got True instead."),
        (Bool(False), "maybe", r"must be a bool \(true or false\). Got 'maybe' instead."),
        (Choice("a", ["adam", "sgd"]), "adma",
         r"must be one of: adam, sgd. Got 'adma' instead \(did you mean 'adam'\?\)."),
        (Choice("he_normal", registry=INITIALIZERS), "he-normall",
         r"Got 'he-normall' instead \(did you mean 'he_normal'\?\)."),
        (Float(0.1), None, r"Got None instead."),
        (Str("x"), 3, r"must be a string. Got 3 instead."),
    ],
)
def test_invalid_values_name_field_value_and_allowed(spec, value, message):
    with pytest.raises(ConfigError, match=message):
        _named(spec, "p").validate(value, owner="R")


def test_search_ranges_are_parsed():
    assert Float(0.1, search=(1e-4, 1e-1, "log")).search == SearchRange(1e-4, 1e-1, log=True)
    assert Int(2, search=(1, 9, 2)).search == SearchRange(1, 9, step=2)
    assert Choice("a", ["a", "b"], search=True).search == ["a", "b"]
    assert Float(0.1).search is None


def test_cli_text_is_parsed_by_type():
    assert _named(Float(0.1), "p").parse("3e-4") == 3e-4
    assert _named(Float(0.1, nullable=True), "p").parse("none") is None
    assert _named(Choice("a", ["a", "1"]), "p").parse(" a ") == "a"
