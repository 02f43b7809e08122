"""`kflow train ... --workers N`: N local worker processes of one multi-worker job.

For trying multi-worker training on one machine (and for the tests): the
launcher picks N free TCP ports on the loopback interface, starts N
`python -m kflow ...` processes, each with a `TF_CONFIG` naming all of them
and its own index, prefixes their output with `[worker i]`, and waits. On
a cluster, start one process per task yourself (`srun kflow train ...`, or
your own `TF_CONFIG`): the launcher is not needed there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

__all__ = ["free_ports", "tf_config", "launch_workers"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that are free on `host` now.

    The sockets are held until all ports are chosen, so the ports differ;
    another program may still take one before a worker binds it (rare on
    loopback).
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` JSON of worker `index` in a cluster of `addresses`."""
    return json.dumps({"cluster": {"worker": list(addresses)},
                       "task": {"type": "worker", "index": index}})


def _forward(stream: IO[str], prefix: str, out: IO[str]) -> None:
    for line in stream:
        out.write(prefix + line)
        out.flush()


def launch_workers(argv: Sequence[str], workers: int, *, host: str = "127.0.0.1",
                   env: Mapping[str, str] | None = None, grace: float | None = None) -> int:
    """Runs `python -m kflow *argv` as `workers` processes of one job on `host`.

    Args:
        argv: The kflow arguments of each worker (without `--workers`).
        workers: Number of processes, >= 1.
        host: Interface the workers listen on. Defaults to loopback.
        env: Base environment. Defaults to `os.environ`.
        grace: Seconds the other workers get to stop by themselves after
            one failed, before they are terminated. Defaults to the peer
            timeout plus 30.

    Returns:
        0 when every worker exits 0, else the first non-zero exit status.

    Example:

    ```python
    from kflow.training.launch import launch_workers

    launch_workers(["train", "digits-mlp", "--epochs", "3"], 2)
    ```
    """
    from kflow.errors import ConfigError
    from kflow.training.distributed import peer_timeout

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an int >= 1. Got {workers!r} instead.")
    base = dict(os.environ if env is None else env)
    base.pop("TF_CONFIG", None)
    grace = peer_timeout(base) + 30 if grace is None else grace
    addresses = [f"{host}:{port}" for port in free_ports(workers, host)]
    print(f"kflow: starting {workers} workers on {', '.join(addresses)}", flush=True)
    procs: list[subprocess.Popen[str]] = []
    threads = []
    for i in range(workers):
        child_env = {**base, "TF_CONFIG": tf_config(addresses, i), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "kflow", *argv], env=child_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1)
        procs.append(proc)
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            t = threading.Thread(target=_forward, args=(stream, f"[worker {i}] ", out),
                                 daemon=True)
            t.start()
            threads.append(t)
    try:
        codes = _wait(procs, grace)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        _wait(procs, 30)
        raise
    for t in threads:
        t.join(timeout=5)
    return next((c for c in codes if c != 0), 0)


def _wait(procs: list[subprocess.Popen[str]], grace: float) -> list[int]:
    """Waits for all; once one failed, the others get `grace` seconds, then SIGTERM."""
    deadline = None
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return [int(c) for c in codes if c is not None]
        if deadline is None and any(c not in (None, 0) for c in codes):
            deadline = time.monotonic() + grace
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + 1e9
        time.sleep(0.2)
