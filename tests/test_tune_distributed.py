"""Interrupting and resuming a search; a chief and two workers sharing one search."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

ARGS = ["tune", "breast-cancer-mlp", "--tuner", "random", "--max-epochs", "1",
        "--set", "units=4", "--set", "hidden_layers=1", "--set", "batch_size=64"]


def _start(args, env=None, log=None):
    return subprocess.Popen(
        [sys.executable, "-m", "kflow", *args], cwd=REPO, env={**os.environ, **(env or {})},
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True,
    )


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _wait(predicate, timeout, what, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if any(p.poll() not in (None, 0) for p in procs):
            raise AssertionError(f"a process failed while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _completed(tune_dir: Path) -> list[str]:
    done = []
    for f in tune_dir.glob("trials/*/trial.json"):
        try:
            if json.loads(f.read_text())["status"] == "COMPLETED":
                done.append(f.parent.name)
        except ValueError:
            pass
    return done


def _values(row, skip=("trial_id", "status", "score", "epochs", "epochs_run", "best_epoch",
                       "seconds", "worker", "reason")):
    return tuple((k, v) for k, v in row.items() if k not in skip)


@pytest.mark.slow
def test_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    tune_dir = tmp_path / "t"
    args = [*ARGS, "--max-trials", "3", "--tune-dir", str(tune_dir)]
    proc = _start(args)
    try:
        _wait(lambda: len(_completed(tune_dir)) >= 2, 240, "two finished trials", [proc])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finished = {t: (tune_dir / "trials" / t / "metrics.json").stat().st_mtime_ns
                for t in _completed(tune_dir)}
    assert not (tune_dir / "trials.csv").is_file() or len(_rows(tune_dir / "trials.csv")) < 3

    out = subprocess.run([sys.executable, "-m", "kflow", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "already done; continuing" in out.stdout
    rows = _rows(tune_dir / "trials.csv")
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    assert len({r["trial_id"] for r in rows}) == 3 and len({_values(r) for r in rows}) == 3
    for trial_id, stamp in finished.items():  # not trained again
        assert (tune_dir / "trials" / trial_id / "metrics.json").stat().st_mtime_ns == stamp
    assert (tune_dir / "best.yaml").is_file()


@pytest.mark.slow
def test_chief_and_two_workers_share_the_trials(tmp_path):
    tune_dir = tmp_path / "t"
    args = [*ARGS, "--max-trials", "4", "--tune-dir", str(tune_dir)]
    common = {"KERASTUNER_ORACLE_IP": "127.0.0.1"}
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("chief", "tuner0", "tuner1")}
    procs = {"chief": _start(args, {**common, "KERASTUNER_TUNER_ID": "chief",
                                    "KERASTUNER_ORACLE_PORT": "0"}, logs["chief"])}
    try:
        # Port 0: the chief binds a free port and writes it to chief.json.
        _wait(lambda: (tune_dir / "chief.json").is_file(), 120, "the chief", procs.values())
        port = json.loads((tune_dir / "chief.json").read_text())["port"]
        for worker in ("tuner0", "tuner1"):
            procs[worker] = _start(args, {**common, "KERASTUNER_TUNER_ID": worker,
                                          "KERASTUNER_ORACLE_PORT": str(port)}, logs[worker])
        for name, proc in procs.items():
            assert proc.wait(300) == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for f in logs.values():
            f.close()
    rows = _rows(tune_dir / "trials.csv")
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    assert len({r["trial_id"] for r in rows}) == 4  # each trial once
    assert len({_values(r) for r in rows}) == 4  # each configuration once
    assert {r["worker"] for r in rows} == {"tuner0", "tuner1"}  # both workers ran trials
    for r in rows:  # the trial ran where the table says, exactly once
        outcome = json.loads((tune_dir / "trials" / r["trial_id"] / "trial.json").read_text())
        assert outcome["worker"] == r["worker"]
    worker_logs = {w: (tmp_path / f"{w}.log").read_text() for w in ("tuner0", "tuner1")}
    ran = {w: log.count("kflow: trial ") for w, log in worker_logs.items()}
    assert sum(ran.values()) == 4 and min(ran.values()) >= 1
    assert (tune_dir / "report.html").is_file() and (tune_dir / "best.yaml").is_file()
