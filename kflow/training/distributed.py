"""Multi-worker training on TensorFlow's runtime: TF_CONFIG, SLURM, roles, lost peers.

kflow trains on several processes (machines, or GPUs of one machine run as
separate tasks) with `tf.distribute.MultiWorkerMirroredStrategy`; the cluster
comes from TensorFlow's own resolvers:

- `TF_CONFIG` (`TFConfigClusterResolver`): `{"cluster": {"worker": [...]},
  "task": {"type": "worker", "index": i}}`, as `kflow train --workers N`
  generates on loopback.
- A SLURM job step (`SlurmClusterResolver`): `srun kflow train ...` inside an
  allocation; nodes, tasks per node and GPUs per task come from the
  `SLURM_*` variables srun sets, the port from `KFLOW_SLURM_PORT` (default
  8888; task k of a node listens on port + k).

`--strategy auto` picks the multi-worker strategy when either describes more
than one task. The global batch is the recipe's `batch_size`: each of the N
replicas trains on `batch_size / N` rows of every batch (the data is
sharded per batch), so the numbers match one process at the same batch.

Every worker trains (the steps are collective); only the chief (task
`chief`, else worker 0) writes the run directory. The other workers write
to a temporary folder (holding a copy of the chief's backup when
resuming), removed when they end. Each worker prints one role line at
start and the checksum of its final weights at the end.

A worker whose peer dies (kill -9, preemption) stops with a one-line message
and exit status 3 instead of hanging: TensorFlow's coordination service
reports a peer that stopped sending heartbeats within seconds, and a
watchdog stops a worker that sees no training step finish for
`KFLOW_PEER_TIMEOUT` seconds (default 120; `kflow train --peer-timeout S`).
Start the same command again on every worker: it resumes from the chief's
last backup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kflow.errors import ConfigError

__all__ = ["Cluster", "cluster_from_env", "cluster_for", "multi_worker_strategy",
           "adapt_model", "worker_run", "PeerWatchdog", "weights_checksum",
           "PEER_LOST_EXIT", "peer_timeout"]

#: Exit status of a worker that lost a peer.
PEER_LOST_EXIT = 3
#: Default seconds without a finished step before a worker gives up on its peers.
DEFAULT_PEER_TIMEOUT = 120.0
_STRATEGY: Any = None


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker job.

    Attributes:
        source: "TF_CONFIG" or "SLURM".
        num_workers: Tasks in the job.
        index: This task's rank (0 .. num_workers - 1; the chief is 0).
        task_type: "chief" or "worker".
        address: This task's `host:port`.
        environ: The environment the cluster was read from.
    """

    source: str
    num_workers: int
    index: int
    task_type: str
    address: str
    environ: Mapping[str, str]

    @property
    def is_chief(self) -> bool:
        """Whether this task writes the run directory."""
        return self.index == 0

    def role_line(self, run_dir: Any = None) -> str:
        """One line saying who this worker is and where it writes."""
        role = "chief" if self.is_chief else "worker"
        where = (f"writes {run_dir}" if self.is_chief else
                 "writes to a temporary folder, removed at the end")
        return (f"worker {self.index} of {self.num_workers} ({role}, {self.source}, "
                f"{self.address}): {where}")


def _tf_config_cluster(environ: Mapping[str, str]) -> Cluster | None:
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        chief = list(cluster.get("chief", []))
        workers = list(cluster.get("worker", []))
        task_type, task_index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "TF_CONFIG must be JSON like {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
            f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}. Got {text[:200]!r} ({exc}).",
        ) from None
    tasks = chief + workers
    if task_type not in ("chief", "worker") or not tasks:
        raise ConfigError(f"TF_CONFIG: kflow runs 'chief' and 'worker' tasks; got task type "
                          f"{task_type!r} with cluster {sorted(cluster)}.")
    rank = task_index if task_type == "chief" else len(chief) + task_index
    if not 0 <= rank < len(tasks):
        raise ConfigError(f"TF_CONFIG: task index {task_index} is outside the cluster's "
                          f"{len(tasks)} tasks.")
    return Cluster("TF_CONFIG", len(tasks), rank, task_type, tasks[rank], environ)


def _slurm_cluster(environ: Mapping[str, str]) -> Cluster | None:
    if "SLURM_PROCID" not in environ:
        return None
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
    if not tasks:
        return None
    rank = int(environ["SLURM_PROCID"])
    port = slurm_port(environ)
    local = int(environ.get("SLURM_LOCALID", "0"))
    node = environ.get("SLURMD_NODENAME") or environ.get("SLURM_TOPOLOGY_ADDR") or "localhost"
    return Cluster("SLURM", int(tasks), rank, "chief" if rank == 0 else "worker",
                   f"{node}:{port + local}", environ)


def slurm_port(environ: Mapping[str, str]) -> int:
    """The first port of a SLURM job's workers (`KFLOW_SLURM_PORT`, default 8888)."""
    text = environ.get("KFLOW_SLURM_PORT", "8888")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"KFLOW_SLURM_PORT must be a port number. Got {text!r}.") from None


def cluster_from_env(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The multi-worker cluster the environment describes (`TF_CONFIG` first, then SLURM).

    Args:
        environ: Defaults to `os.environ`.

    Returns:
        A `Cluster`, or `None` when neither is set.

    Raises:
        ConfigError: `TF_CONFIG` is set but malformed.
    """
    environ = os.environ if environ is None else environ
    return _tf_config_cluster(environ) or _slurm_cluster(environ)


def cluster_for(strategy_name: str, environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The cluster a strategy name trains on: `None` unless it runs multi-worker.

    "multi_worker" uses the environment's cluster (one local worker without
    one); "auto" does so only when the environment describes more than one
    task.
    """
    if strategy_name not in ("auto", "multi_worker"):
        return None
    cluster = cluster_from_env(environ)
    if cluster is None and strategy_name == "multi_worker":
        return Cluster("local", 1, 0, "chief", "localhost", os.environ)
    if cluster is not None and strategy_name == "auto" and cluster.num_workers < 2:
        return None
    return cluster


def _resolver(cluster: Cluster) -> Any:
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    if cluster.source == "TF_CONFIG":
        return resolvers.TFConfigClusterResolver()
    if cluster.source == "SLURM":
        env = cluster.environ
        gpus = int(env.get("SLURM_GPUS_ON_NODE") or 0)
        if gpus:
            return resolvers.SlurmClusterResolver(port_base=slurm_port(env), gpus_per_node=gpus)
        return _CPUSlurmClusterResolver(port_base=slurm_port(env),
                                        gpus_per_node=cluster.num_workers, gpus_per_task=1,
                                        auto_set_gpu=False)
    return None


def _cpu_slurm_class() -> type:
    import tensorflow as tf

    class CPUSlurmClusterResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
        """`SlurmClusterResolver` for tasks without GPUs.

        TensorFlow's resolver lays tasks out by GPU (`gpus_per_node=0` gives
        no task at all), so it is given one pretend GPU slot per task (never
        assigned: `auto_set_gpu=False`) and reports no accelerators.
        """

        def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
            return {}

    return CPUSlurmClusterResolver


def _CPUSlurmClusterResolver(**kwargs: Any) -> Any:  # noqa: N802 - a class, made lazily
    return _cpu_slurm_class()(**kwargs)


def multi_worker_strategy(cluster: Cluster) -> Any:
    """The process's `MultiWorkerMirroredStrategy` (created once; joins the peers).

    Must be created before TensorFlow initializes its devices. Waits for
    every worker to join, at most `peer_timeout()` seconds.
    """
    global _STRATEGY
    if _STRATEGY is not None:
        return _STRATEGY
    import tensorflow as tf

    from kflow import _keras_compat

    _keras_compat.install_multi_worker_reduce()
    resolver = _resolver(cluster)
    timeout = peer_timeout()
    if resolver is not None and cluster.num_workers > 1:
        _keras_compat.configure_coordination_service(
            resolver, register_timeout_s=timeout, heartbeat_timeout_s=min(timeout, 10.0))
    with _join_guard(cluster, timeout):
        try:
            _STRATEGY = (tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
                         if resolver is not None else tf.distribute.MultiWorkerMirroredStrategy())
        except _peer_error_types() as exc:
            lost_peer(cluster, f"waiting for the other workers to join: none came within the "
                      f"peer timeout of {timeout:g} s ({type(exc).__name__})")
        except RuntimeError as exc:
            if "must be configured at program startup" in str(exc):
                raise ConfigError(
                    "The multi-worker strategy must be created before TensorFlow starts its "
                    "devices: build the Trainer (or call kflow.train) before running any "
                    "TensorFlow op in this process.") from None
            raise
    return _STRATEGY


@contextlib.contextmanager
def _join_guard(cluster: Cluster, timeout: float) -> Iterator[None]:
    """Stops the process if the workers have not all joined within `timeout` seconds.

    The strategy waits for its peers inside TensorFlow's C++ start-up, which
    holds the GIL, so no Python thread can run meanwhile: a forked helper
    process that only waits on a pipe prints the message and kills this
    process (exit by SIGKILL) when the time is up; it ends as soon as the
    join returns (or this process dies).
    """
    if cluster.num_workers < 2 or not hasattr(os, "fork"):
        yield
        return
    import select
    import signal

    parent = os.getpid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: async-signal-safe calls only
        try:
            os.close(write_end)
            if not select.select([read_end], [], [], timeout)[0]:
                os.write(2, (f"kflow: error: worker {cluster.index} of {cluster.num_workers} "
                             f"lost its peers (waiting for the other workers to join: none came "
                             f"within the peer timeout of {timeout:g} s). Start the same "
                             "command on every worker (--peer-timeout S waits longer).\n"
                             ).encode())
                os.kill(parent, signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        yield
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


def adapt_model(model: Any, strategy: Any) -> None:
    """What a compiled model needs to train under `strategy` with Keras 3.15.

    Multi-worker: build metrics from a local batch (keras-team/keras#20585).
    Several replicas with `steps_per_execution > 1`: trace the step inline
    (see `kflow._keras_compat.inline_replica_steps`).
    """
    import tensorflow as tf

    from kflow import _keras_compat

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _keras_compat.install_multi_worker_reduce()
        _keras_compat.local_symbolic_build(model)
    if strategy.num_replicas_in_sync > 1 and model.steps_per_execution > 1:
        _keras_compat.inline_replica_steps(model)


def peer_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds without progress before a worker gives up (`KFLOW_PEER_TIMEOUT`)."""
    environ = os.environ if environ is None else environ
    text = environ.get("KFLOW_PEER_TIMEOUT", "")
    if not text:
        return DEFAULT_PEER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"KFLOW_PEER_TIMEOUT (--peer-timeout) must be a number of seconds "
                          f"> 0. Got {text!r}.")
    return value


def lost_peer(cluster: Cluster, detail: str) -> None:
    """Prints why this worker stops and exits with `PEER_LOST_EXIT` at once.

    `os._exit`: a process whose collective group broke cannot run
    TensorFlow again, and a normal exit would wait for the dead peer.
    """
    print(f"kflow: error: worker {cluster.index} of {cluster.num_workers} lost its peers "
          f"({detail}). Start the same command again on every worker to resume from the "
          "last backup.", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(PEER_LOST_EXIT)


class PeerWatchdog:
    """Stops the process when no step finishes for `timeout` seconds.

    Also a Keras callback source: `callback()` beats on every train and test
    batch and disarms when `fit` ends.

    Args:
        cluster: This worker.
        phase: What the worker is doing, for the message.
        timeout: Seconds. Defaults to `peer_timeout()`.
    """

    def __init__(self, cluster: Cluster, phase: str, timeout: float | None = None):
        self.cluster = cluster
        self.phase = phase
        self.timeout = peer_timeout() if timeout is None else float(timeout)
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self._last = time.monotonic()

    def start(self) -> None:
        if self.cluster.num_workers < 2 or self._thread is not None:
            return
        self._stop.clear()
        self.beat()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="kflow-peers")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread = None

    @contextlib.contextmanager
    def armed(self) -> Iterator[PeerWatchdog]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                lost_peer(self.cluster, f"{self.phase}: nothing happened for {idle:.0f} s, "
                          f"more than the peer timeout of {self.timeout:g} s")

    def callback(self) -> Any:
        import keras

        dog = self

        class _Beat(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                dog.phase = "training"
                dog.start()

            def on_train_batch_end(self, batch, logs=None):
                dog.beat()

            def on_test_batch_end(self, batch, logs=None):
                dog.beat()

            def on_epoch_end(self, epoch, logs=None):
                dog.beat()

            def on_train_end(self, logs=None):
                dog.stop()

        return _Beat()


def weights_checksum(model: Any) -> str:
    """A short SHA-256 of the model's weights (equal on workers that agree)."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]


def _peer_error_types() -> tuple[type[BaseException], ...]:
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError)


def worker_run(trainer: Any, cluster: Cluster, *, run_dir: Any, runs_root: Any,
               overwrite: bool, callbacks: Any, save: bool) -> Any:
    """`Trainer.run` on one worker of `cluster`: role line, run dir, watchdog, cleanup.

    The chief runs in the run directory; another worker runs in a
    temporary folder holding a copy of the chief's run (its backup, to
    resume the same epoch), removed at the end.
    """
    temp = None
    try:
        target = run_dir
        chief_dir = Path(".")
        if save:
            if cluster.is_chief or run_dir is None:
                rd, _ = trainer._run_dir(run_dir, runs_root, overwrite and cluster.is_chief)
            else:  # the chief checks (and with --overwrite replaces) an explicit run dir
                from kflow.run import RunDir

                rd = RunDir(run_dir)
            chief_dir = rd.path
            if not cluster.is_chief:
                _remove_stale_temp_dirs()
                prefix = f"kflow-worker{cluster.index}-pid{os.getpid()}-"
                temp = Path(tempfile.mkdtemp(prefix=prefix))
                target = temp / rd.path.name
                _copy_run(rd, target, fresh=overwrite)
            else:
                target = rd.path
        print(f"kflow: {cluster.role_line(target if save else '(not saved)')}", flush=True)
        if not cluster.is_chief:
            trainer.verbose = 0  # the chief reports progress
        dog = PeerWatchdog(cluster, "training")
        try:
            run = trainer.run(run_dir=target, runs_root=runs_root, overwrite=overwrite,
                              callbacks=[*callbacks, dog.callback()], save=save)
        except _peer_error_types() as exc:
            lost_peer(cluster, _peer_error_detail(exc, cluster))
        finally:
            dog.stop()
        print(f"kflow: worker {cluster.index} of {cluster.num_workers} finished; weights "
              f"checksum {weights_checksum(run.model)}", flush=True)
        if temp is not None:  # the run directory is the chief's
            run.run_dir = chief_dir
        return run
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _peer_error_detail(exc: BaseException, cluster: Cluster | None = None) -> str:
    """What TensorFlow's error says about the lost peer, in a few words.

    Three ways a dead peer shows: the coordination service's heartbeat check
    names its task, a collective fails to connect to its address (which
    TF_CONFIG maps back to a worker number), or an open collective's socket
    is closed under it.
    """
    import re

    text = str(exc)
    found = re.search(r"unhealthy \(stopped sending heartbeats\):\s*/job:\w+/replica:\d+/"
                      r"task:(\d+)", text)
    if found:
        return (f"worker {found.group(1)} stopped sending heartbeats; "
                f"TensorFlow: {type(exc).__name__}")
    found = re.search(r"ipv[46]:(\S+?):(\d+): Failed to connect to remote host", text)
    if found:
        host, port = found.group(1).strip("[]"), found.group(2)
        index = _task_index_of(cluster, host, port) if cluster is not None else None
        who = f"worker {index}" if index is not None else f"the worker at {host}:{port}"
        return f"{who} refused the connection; TensorFlow: {type(exc).__name__}"
    if re.search(r"Socket closed|Connection reset by peer|Broken pipe", text):
        # The message names only the local task; with two workers the peer is the other one.
        who = (f"worker {1 - cluster.index}" if cluster is not None and cluster.num_workers == 2
               else "a peer")
        return f"{who} closed the connection; TensorFlow: {type(exc).__name__}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = f"{type(exc).__name__}: {lines[0][:160] if lines else 'collective failed'}"
    if cluster is not None and cluster.num_workers == 2:  # the peer is the other worker
        return f"worker {1 - cluster.index} is unreachable; TensorFlow: {detail}"
    return detail


def _task_index_of(cluster: Cluster, host: str, port: str) -> int | None:
    """The rank of the task at `host:port` in the cluster's TF_CONFIG, if it is there."""
    try:
        spec = json.loads(cluster.environ.get("TF_CONFIG", ""))["cluster"]
        tasks = list(spec.get("chief", [])) + list(spec.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    local = {"localhost", "127.0.0.1", "::1"}
    for rank, address in enumerate(tasks):
        h, _, p = str(address).rpartition(":")
        if p == port and (h == host or (h in local and host in local)):
            return rank
    return None


def _remove_stale_temp_dirs() -> None:
    """Removes the temporary folders of workers that were killed (their pid is gone)."""
    import re

    for folder in Path(tempfile.gettempdir()).glob("kflow-worker*-pid*-*"):
        found = re.match(r"kflow-worker\d+-pid(\d+)-", folder.name)
        if not found:
            continue
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # another user's live process
            continue


def _copy_run(rd: Any, target: Path, *, fresh: bool) -> None:
    """Copies the chief's run (not its checkpoints or TensorBoard logs) to `target`."""
    if fresh or not rd.path.is_dir():
        return
    skip = {rd.tensorboard.name, rd.best_checkpoint.parent.name}
    shutil.copytree(rd.path, target, ignore=lambda folder, names: [
        n for n in names if Path(folder) == rd.path and n in skip])
