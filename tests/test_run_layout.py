"""The run layer is the one owner of the run directory's file names."""

from __future__ import annotations

import ast
from pathlib import Path

from kflow.run import layout

KFLOW = Path(__file__).resolve().parents[1] / "kflow"
RUN_FILES = {value for name, value in vars(layout).items()
             if name.isupper() and isinstance(value, str) and "." in value}


def _string_constants(tree: ast.AST):
    """String constants of a module that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node


def test_run_layer_lists_the_run_files():
    assert {"config.yaml", "run.json", "history.csv", "metrics.json", "model.keras",
            "status.json", "report.html", "findings.json", "samples.npz"} <= RUN_FILES


def test_no_module_outside_the_run_layer_names_a_run_file():
    offenders = []
    for path in sorted(KFLOW.rglob("*.py")):
        if path.parent.name == "run" and path.parent.parent == KFLOW:
            continue
        for node in _string_constants(ast.parse(path.read_text())):
            if node.value in RUN_FILES or any(node.value.endswith("/" + f) for f in RUN_FILES):
                offenders.append(f"{path.relative_to(KFLOW.parent)}:{node.lineno}: {node.value!r}")
    assert offenders == [], "\n".join(offenders)
