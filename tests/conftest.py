"""Shared test set-up: quiet TensorFlow, small helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: str | Path | None = None, timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m kflow ARGS` and returns the completed process (text mode)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kflow", *args], cwd=cwd or REPO, capture_output=True,
        text=True, timeout=timeout, env=full_env,
    )


@pytest.fixture
def cli():
    return run_cli
