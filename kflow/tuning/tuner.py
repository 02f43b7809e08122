"""The KerasTuner bridge: oracles, a `keras_tuner.Tuner` whose trials call kflow.

KerasTuner's oracles choose the values (random, grid, Bayesian optimization,
Hyperband); `KflowTuner.run_trial` hands them to a `TrialRunner`, which
trains with `kflow.train`. Distributed search is KerasTuner's own: a process
with `KERASTUNER_TUNER_ID=chief` serves the oracle over gRPC at
`KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`, processes with other tuner ids
run trials. Port 0 picks a free port; the chief writes the one it got to
`TUNE_DIR/chief.json`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras_tuner
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import trial as trial_module

from kflow.run import TuneDir, atomic_write_text
from kflow.tuning.trial import TrialOutcome, TrialRunner

__all__ = ["KflowTuner", "make_oracle", "serve_oracle", "is_chief", "is_worker", "tuner_id"]

PROJECT_NAME = "keras_tuner"


def tuner_id() -> str:
    return os.environ.get("KERASTUNER_TUNER_ID", "tuner0")


def is_chief() -> bool:
    """This process serves the oracle of a distributed search."""
    return dist_utils.is_chief_oracle()


def is_worker() -> bool:
    """This process runs trials for a chief elsewhere."""
    return dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()


class _AtomicStateMixin:
    """Writes the oracle's state and trial files through a temporary file and a rename,
    so an interruption never leaves a half-written `oracle.json`."""

    def save(self):
        atomic_write_text(self._get_oracle_fname(), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        path = str(TuneDir.trial_json(self._get_trial_dir(trial.trial_id)))
        atomic_write_text(path, json.dumps(trial.get_state()))


def make_oracle(
    tuner: str,
    *,
    objective: Any,
    hyperparameters: Any,
    max_trials: int | None,
    max_epochs: int,
    seed: int,
    factor: int = 3,
    hyperband_iterations: int = 1,
    max_consecutive_failed_trials: int = 5,
) -> keras_tuner.Oracle:
    """The KerasTuner oracle of `tuner` over a fixed space (no new entries)."""
    common = dict(
        objective=objective, hyperparameters=hyperparameters, allow_new_entries=False,
        tune_new_entries=False, seed=seed + 1,  # KerasTuner treats seed 0 as "random"
        max_consecutive_failed_trials=max_consecutive_failed_trials,
    )
    oracles = keras_tuner.oracles
    if tuner == "random":
        base, kwargs = oracles.RandomSearchOracle, dict(max_trials=max_trials)
    elif tuner == "grid":
        base, kwargs = oracles.GridSearchOracle, dict(max_trials=max_trials)
    elif tuner == "bayesian":
        dims = len([h for h in hyperparameters.space
                    if not isinstance(h, keras_tuner.engine.hyperparameters.Fixed)])
        # KerasTuner's default (3 random points per dimension) leaves a small budget
        # no model-guided trials; use at most half of it for the random start.
        initial = max(2, min(3 * dims, (max_trials or 10) // 2))
        base, kwargs = oracles.BayesianOptimizationOracle, dict(
            max_trials=max_trials, num_initial_points=initial)
    elif tuner == "hyperband":
        base, kwargs = oracles.HyperbandOracle, dict(
            max_epochs=max_epochs, factor=factor, hyperband_iterations=hyperband_iterations)
    else:  # checked by the caller
        raise ValueError(tuner)
    cls = type(f"Kflow{base.__name__}", (_AtomicStateMixin, base), {})
    oracle = cls(**common, **kwargs)
    if tuner == "hyperband" and max_trials:
        oracle.max_trials = max_trials  # a cap on top of Hyperband's own schedule
    return oracle


class KflowTuner(keras_tuner.Tuner):
    """A `keras_tuner.Tuner` whose trials train with kflow's engine.

    Args:
        oracle: A KerasTuner oracle (see `make_oracle`).
        runner: Runs one trial: `runner(trial_id, values) -> TrialOutcome`.
        tune_dir: The tuning directory (KerasTuner's files go to `keras_tuner/`).
        on_trial: Called with each finished trial's outcome (progress lines, CSV).
    """

    def __init__(self, oracle: keras_tuner.Oracle, *, runner: TrialRunner,
                 tune_dir: str | Path,
                 on_trial: Callable[[TrialOutcome], None] | None = None):
        super().__init__(oracle=oracle, directory=str(tune_dir), project_name=PROJECT_NAME,
                         overwrite=False)
        self.runner = runner
        self.tune_dir = Path(tune_dir)
        self.on_trial = on_trial
        self.outcomes: dict[str, TrialOutcome] = {}
        if hasattr(self.oracle, "verbose"):
            self.oracle.verbose = 0  # kflow prints its own lines (and never clears output)

    def run_trial(self, trial, *args, **kwargs):
        values = dict(trial.hyperparameters.values)
        outcome = self.runner(trial.trial_id, values)
        self.outcomes[trial.trial_id] = outcome
        if self.on_trial is not None:
            self.on_trial(outcome)
        if outcome.failed:
            raise keras_tuner.errors.FailedTrialError(outcome.reason)
        return {self.oracle.objective.name: outcome.score}

    # The models live in the trials' run directories.
    def save_model(self, trial_id, model, step=0):
        pass

    def load_model(self, trial):

        from kflow.run import RunDir
        from kflow.run.model_file import load_model_file

        return load_model_file(RunDir(self.runner.trial_dir(trial.trial_id)).model)

    def search(self, *args, **kwargs):
        """Runs trials until the oracle stops (or, on the chief, serves the oracle)."""
        if is_chief():
            self.save()
            serve_oracle(self.oracle, self.tune_dir, log=self.runner.log)
            return
        self.on_search_begin()
        while True:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == trial_module.TrialStatus.STOPPED:
                break
            if trial.status == trial_module.TrialStatus.IDLE:
                time.sleep(0.5)  # the oracle waits for running trials (Hyperband, grid)
                continue
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial, *args, **kwargs)
            self.on_trial_end(trial)
        self.on_search_end()


_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def oracle_bind_address() -> str:
    """The address the chief's oracle listens on.

    KerasTuner's gRPC oracle has no authentication, so kflow binds it to the
    loopback interface (127.0.0.1) unless the user asks for another address
    with `kflow tune --oracle-bind ADDR` (the `KFLOW_ORACLE_BIND` variable):
    the node's own address for workers on other nodes of a trusted cluster
    network, or 0.0.0.0 for all interfaces.
    """
    return os.environ.get("KFLOW_ORACLE_BIND") or "127.0.0.1"


def serve_oracle(oracle: keras_tuner.Oracle, tune_dir: Path,
                 log: Callable[[str], None] = print) -> None:
    """Serves `oracle` over gRPC until every worker was told to stop.

    Like KerasTuner's `oracle_chief.start_server`, but port 0 binds a free
    port (written to `tune_dir/chief.json`) and the chief exits as soon as
    the last worker finished, not up to 20 s later.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    ip = oracle_bind_address()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{ip}:{os.environ['KERASTUNER_ORACLE_PORT']}")
    if not port:
        from kflow.errors import RunError

        raise RunError(
            f"The chief could not listen on {ip}:{os.environ['KERASTUNER_ORACLE_PORT']}; "
            "choose another KERASTUNER_ORACLE_PORT (0 picks a free one)."
        )
    server.start()
    atomic_write_text(TuneDir(tune_dir).chief,
                      json.dumps({"ip": ip, "port": port, "pid": os.getpid()}) + "\n")
    scope = ("loopback only: workers must run on this machine; --oracle-bind ADDR opens it to "
             "others" if ip in _LOOPBACK else "reachable from the network, without "
             "authentication: use it on a trusted network only")
    log(f"oracle listening on {ip}:{port} ({scope}); start workers with the same command and "
        f"KERASTUNER_TUNER_ID=tuner<N> KERASTUNER_ORACLE_IP={os.environ['KERASTUNER_ORACLE_IP']}"
        f" KERASTUNER_ORACLE_PORT={port}")
    try:
        while not (servicer.stop_triggered and exit_chief(oracle)):
            time.sleep(0.2)
    finally:
        server.stop(grace=1)
