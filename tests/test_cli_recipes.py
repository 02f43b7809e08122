"""`kflow recipes show` for every recipe, Bool search ranges, and `... | head`."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest

from kflow.cli.main import main
from kflow.recipe.hparams import Bool
from tests.conftest import REPO


def _kflow(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args])
    return code, out.getvalue()


def test_every_listed_recipe_can_be_shown():
    code, listing = _kflow("recipes")
    assert code == 0
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    assert len(names) >= 7
    for name in names:
        code, out = _kflow("recipes", "show", name)
        assert code == 0, name
        assert out.startswith(f"{name}: ") and out.rstrip().endswith("or in a YAML file.")


def test_show_writes_values_and_search_spaces_as_the_command_line_takes_them():
    code, out = _kflow("recipes", "show", "digits-mlp")
    assert code == 0
    lines = out.splitlines()
    i = lines.index("  skip_connections = false")
    assert lines[i + 1].endswith("Allowed: a bool (true or false).  search: false, true")
    assert "  activation = relu" in lines and "  clipnorm = none" in lines
    assert any(ln.endswith("search: 32..256 (log)") for ln in lines)  # units


def test_bool_search_true_means_both_values():
    assert Bool(False, search=True).search == [False, True]
    assert Bool(False, search=[True]).search == [True]
    assert Bool(False).search is None and Bool(False, search=False).search is None
    with pytest.raises(ValueError, match=r"search must be True or a list of bools, got 'yes'"):
        Bool(False, search="yes")


def test_a_bool_search_becomes_a_two_value_dimension():
    from kflow.recipe.overrides import resolve_recipe
    from kflow.tuning.space import SearchSpace

    recipe, _ = resolve_recipe("digits-mlp")  # declares skip_connections with search=True
    dim = SearchSpace.build(recipe).dims["skip_connections"]
    assert (dim.kind, tuple(dim.values), dim.origin) == ("choice", (False, True), "recipe")


def test_a_closed_stdout_ends_quietly():
    """`kflow recipes show X | head`: the reader is gone before kflow writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "kflow", "recipes", "show", "digits-mlp"],
                              cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 0
