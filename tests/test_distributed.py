"""Multi-worker training (#12): TF_CONFIG, the --workers launcher, SLURM, a lost worker.

Every test starts real worker processes on loopback; each costs a
TensorFlow start per worker, so the epochs are few. The workers run with
`OMP_NUM_THREADS=1` so that two of them share this machine's cores calmly.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kflow.run import RunDir
from kflow.training.callbacks import backup_state
from kflow.training.launch import free_ports, tf_config
from tests.conftest import REPO

TRAIN = ["train", "digits-mlp", "--runs-root", "runs", "--set", "grad_log_every=0"]
CHECKSUM = re.compile(r"worker (\d) of 2 finished; weights checksum ([0-9a-f]{16})")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "TF_CONFIG" and not k.startswith("SLURM")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TMPDIR=str(tmp_path / "tmp"),
               PYTHONPATH=str(REPO), **extra)
    return env


def _start(tmp_path: Path, args: list[str], env: dict[str, str], name: str):
    out = open(tmp_path / f"{name}.out", "w")  # noqa: SIM115 - closed by _finish
    err = open(tmp_path / f"{name}.err", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "kflow", *args], cwd=tmp_path, env=env,
                            stdout=out, stderr=err)
    proc.files = (out, err)  # type: ignore[attr-defined]
    return proc


def _finish(proc, timeout: float = 400) -> tuple[int, str, str]:
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        for f in proc.files:
            f.close()
    out, err = (Path(f.name).read_text() for f in proc.files)
    return rc, out, err


def _workers(tmp_path: Path, args: list[str], envs: list[dict[str, str]], tag: str):
    return [_start(tmp_path, args, env, f"{tag}{i}") for i, env in enumerate(envs)]


def _tf_config_envs(tmp_path: Path, **extra: str) -> list[dict[str, str]]:
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    return [_env(tmp_path, TF_CONFIG=tf_config(addresses, i), **extra) for i in range(2)]


def _only_run(tmp_path: Path, root: str = "runs") -> Path:
    runs = sorted((tmp_path / root).iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    for name in ("config.yaml", "history.csv", "metrics.json", "model.keras", "run.json"):
        assert (run / name).is_file(), name
    assert RunDir(run).finished
    assert not list((tmp_path / "tmp").glob("kflow-worker*")), "a worker left its temp dir"
    return run


def _epochs(run: Path) -> list[int]:
    rows = (run / "history.csv").read_text().splitlines()[1:]
    return [int(float(r.split(",")[0])) for r in rows]


def test_two_workers_with_the_cli_launcher_match_one_process(tmp_path):
    """`kflow train --workers 2`: TF_CONFIG on loopback, one run dir, same weights."""
    proc = _start(tmp_path, [*TRAIN, "--epochs", "3", "--workers", "2"], _env(tmp_path), "cli")
    rc, out, err = _finish(proc)
    assert rc == 0, err[-3000:]
    assert re.search(r"\[worker 0\] kflow: worker 0 of 2 \(chief, TF_CONFIG, 127\.0\.0\.1:\d+\)"
                     r": writes runs/digits-mlp-", out), out
    assert re.search(r"\[worker 1\] kflow: worker 1 of 2 \(worker, TF_CONFIG, 127\.0\.0\.1:\d+\)"
                     r": writes to a temporary folder, removed at the end", out), out
    sums = dict(CHECKSUM.findall(out))
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"], out
    run = _only_run(tmp_path)
    assert _epochs(run) == [1, 2, 3]
    info = json.loads((run / "run.json").read_text())
    assert info["strategy"] == "CollectiveAllReduceStrategy on 2 replicas"
    assert "deterministic: true" in (run / "config.yaml").read_text()
    multi = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]

    single = _start(tmp_path, [*TRAIN, "--epochs", "3", "--runs-root", "single",
                               "--strategy", "default"], _env(tmp_path), "single")
    rc, out, err = _finish(single)
    assert rc == 0, err[-3000:]
    one = json.loads(next((tmp_path / "single").glob("*/metrics.json")).read_text())
    assert abs(multi - one["test"]["accuracy"]) <= 0.01, (multi, one["test"])


def test_two_workers_in_a_simulated_slurm_step(tmp_path):
    """`srun kflow train ...`: the cluster comes from SLURM_* through SlurmClusterResolver."""
    port = free_ports(1)[0]  # task k listens on port + k
    slurm = dict(SLURM_STEP_NUM_TASKS="2", SLURM_NTASKS="2", SLURM_STEP_NODELIST="localhost",
                 SLURM_STEP_TASKS_PER_NODE="2", SLURM_JOB_NUM_NODES="1", SLURM_STEP_ID="0",
                 SLURM_JOB_ID="4242", KFLOW_SLURM_PORT=str(port))
    envs = [_env(tmp_path, SLURM_PROCID=str(i), SLURM_LOCALID=str(i), **slurm)
            for i in range(2)]
    procs = _workers(tmp_path, [*TRAIN, "--epochs", "2"], envs, "slurm")
    results = [_finish(p) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "worker 0 of 2 (chief, SLURM, localhost:" in results[0][1]
    assert "worker 1 of 2 (worker, SLURM, localhost:" in results[1][1]
    sums = [CHECKSUM.search(out).group(2) for _, out, _ in results]
    assert sums[0] == sums[1]
    assert "run directory: runs/digits-mlp-" in results[1][1]  # the chief's
    assert _epochs(_only_run(tmp_path)) == [1, 2]


@pytest.mark.slow
def test_kill_9_of_a_worker_then_the_same_command_resumes_each_epoch_once(tmp_path):
    epochs = 4
    rng = random.Random()
    kill_after, victim = rng.randint(1, 2), rng.randint(0, 1)
    args = [*TRAIN, "--epochs", str(epochs), "--strategy", "multi_worker",
            "--set", "early_stopping=false"]
    procs = _workers(tmp_path, args, _tf_config_envs(tmp_path, KFLOW_PEER_TIMEOUT="30"), "a")
    history = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("*/history.csv"))
        # Killed once the epoch is in history.csv and in the backup (written in the
        # background, so it may land a moment after the history line).
        if found and len(found[0].read_text().splitlines()) - 1 >= kill_after and (
                (backup_state(found[0].parent / "backup") or (0, False))[0] >= kill_after):
            history = found[0]
            break
        assert all(p.poll() is None for p in procs), "a worker ended before the kill"
        time.sleep(0.2)
    assert history is not None, "no epoch finished"
    procs[victim].send_signal(signal.SIGKILL)
    start = time.monotonic()
    rc, _, err = _finish(procs[1 - victim], timeout=120)
    waited = time.monotonic() - start
    _finish(procs[victim])
    assert rc == 3, (kill_after, victim, err[-2000:])
    # TensorFlow notices a dead peer by its missing heartbeats, a refused or a closed connection.
    assert re.search(rf"kflow: error: worker {1 - victim} of 2 lost its peers \(worker "
                     rf"{victim} (stopped sending heartbeats|refused the connection|closed the "
                     r"connection|is unreachable); "
                     r"TensorFlow: \w+Error(: [^\n]*)?\)\. Start the same command again on every "
                     r"worker "
                     "to resume", err), err[-2000:]
    assert waited < 60, waited

    procs = _workers(tmp_path, args, _tf_config_envs(tmp_path), "b")
    results = [_finish(p) for p in procs]
    for rc, _, err in results:
        assert rc == 0, (kill_after, victim, err[-3000:])
    assert "kflow: resuming digits-mlp" in results[0][1]
    run = _only_run(tmp_path)
    assert _epochs(run) == list(range(1, epochs + 1)), (kill_after, victim)
    sums = [CHECKSUM.search(out).group(2) for _, out, _ in results]
    assert sums[0] == sums[1]


def test_a_worker_whose_peers_never_come_exits_with_the_timeout_message(tmp_path):
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    env = _env(tmp_path, TF_CONFIG=tf_config(addresses, 0))
    proc = _start(tmp_path, [*TRAIN, "--epochs", "1", "--peer-timeout", "4"], env, "alone")
    rc, out, err = _finish(proc, timeout=120)
    assert rc in (3, -9), err[-2000:]  # -9: killed by its start-up guard (see _join_guard)
    assert "kflow: worker 0 of 2 (chief" not in out  # it never got to training
    assert re.search(r"kflow: error: worker 0 of 2 lost its peers \(waiting for the other "
                     r"workers to join: (none came within|nothing happened for \d+ s, more "
                     r"than) the peer timeout of 4 s", err), err[-2000:]


def test_cli_rejects_bad_launcher_arguments(tmp_path):
    env = _env(tmp_path)
    for extra, message in (
            (["--workers", "0"], "kflow: error: --workers must be an int >= 1. Got 0 instead."),
            (["--workers", "2", "--strategy", "mirrored"],
             "kflow: error: --workers runs the multi_worker strategy; got --strategy mirrored."),
            (["--peer-timeout", "0"], "kflow: error: --peer-timeout must be > 0 seconds.")):
        proc = subprocess.run([sys.executable, "-m", "kflow", *TRAIN, *extra], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr


def test_cluster_from_tf_config_and_slurm():
    from kflow.errors import ConfigError
    from kflow.training.distributed import cluster_for, cluster_from_env

    env = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
                                    "task": {"type": "worker", "index": 1}})}
    c = cluster_from_env(env)
    assert (c.source, c.num_workers, c.index, c.address, c.is_chief) == (
        "TF_CONFIG", 3, 2, "c:3", False)
    slurm = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "0",
             "SLURMD_NODENAME": "node7", "KFLOW_SLURM_PORT": "9000"}
    c = cluster_from_env(slurm)
    assert (c.source, c.num_workers, c.index, c.address, c.is_chief) == (
        "SLURM", 4, 0, "node7:9000", True)
    assert cluster_for("auto", {}) is None
    assert cluster_for("default", slurm) is None
    assert cluster_for("auto", {**slurm, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert cluster_for("multi_worker", {}).num_workers == 1
    with pytest.raises(ConfigError, match=r"TF_CONFIG must be JSON like"):
        cluster_from_env({"TF_CONFIG": "{not json"})


def test_worker_argv_adds_the_strategy_and_drops_workers():
    from kflow.cli.launch import worker_argv

    assert worker_argv(["train", "x", "--workers", "2", "--epochs", "3"]) == [
        "train", "x", "--epochs", "3", "--strategy", "multi_worker"]
    assert worker_argv(["train", "x", "--workers=2", "--strategy", "auto"]) == [
        "train", "x", "--strategy", "auto"]


@pytest.mark.parametrize("text, detail", [
    ("Task /job:worker/replica:0/task:1 unhealthy (stopped sending heartbeats): "
     "/job:worker/replica:0/task:1", "worker 1 stopped sending heartbeats"),
    ("{{function_node __wrapped__CollectiveReduceV2}} Collective ops is aborted by: failed to "
     "connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:40239: Failed to connect "
     "to remote host: Connection refused", "worker 0 refused the connection"),
    ("... ipv4:10.0.0.9:5555: Failed to connect to remote host: Connection refused",
     "the worker at 10.0.0.9:5555 refused the connection"),
    ("{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/"
     "replica:0/task:1/device:CPU:0}} Collective ops is aborted by: Socket closed",
     "worker 0 closed the connection"),
    ("Collective ops is aborted by: something new", "worker 0 is unreachable; TensorFlow: "
     "UnavailableError: Collective ops is aborted by: something new"),
])
def test_lost_peer_detail_names_the_worker(text, detail):
    import tensorflow as tf

    from kflow.training.distributed import _peer_error_detail, cluster_from_env

    env = {"TF_CONFIG": json.dumps({"cluster": {"worker": ["localhost:40239", "localhost:40240"]},
                                    "task": {"type": "worker", "index": 1}})}
    exc = tf.errors.UnavailableError(None, None, text)
    expected = detail if "TensorFlow:" in detail else f"{detail}; TensorFlow: UnavailableError"
    assert _peer_error_detail(exc, cluster_from_env(env)) == expected
