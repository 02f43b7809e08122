"""Running one trial: the trial's values as overrides, kflow's engine, a score.

Every trial trains in its own directory `TUNE_DIR/trials/<trial_id>/`: a
complete `kflow train` run directory, or with `--cv` the output of
`kflow.cross_validate` (config.yaml, cv.json, cv.csv). It leaves
`trial.json` there: status, score, epochs, time and, for a failed trial, the
reason. A trial whose training finished before an interruption is read
back, not retrained.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kflow.run import TuneDir
from kflow.tuning.objective import Objective
from kflow.tuning.space import SearchSpace

__all__ = ["TrialOutcome", "TrialRunner", "read_outcome"]

COMPLETED, FAILED = "COMPLETED", "FAILED"


@dataclass
class TrialOutcome:
    """What a trial left behind (`trial.json`).

    Attributes:
        trial_id: KerasTuner's trial id.
        status: "COMPLETED" or "FAILED".
        score: The objective's value (`None` when failed).
        values: The searched hyperparameters' values in this trial.
        epochs: The epoch budget (`--max-epochs`, or Hyperband's `tuner/epochs`).
        epochs_run: Epochs trained (early stopping may stop sooner; mean over folds).
        epochs_spent: Epochs trained in all (summed over folds).
        best_epoch: The epoch whose weights were kept.
        seconds: Wall time of the trial.
        reason: Why it failed ("" if it did not).
        worker: The tuner id that ran it (`KERASTUNER_TUNER_ID`).
        fold_scores: Per-fold scores with `--cv`.
    """

    trial_id: str
    status: str
    score: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    epochs_run: float = 0
    epochs_spent: int = 0
    best_epoch: float = 0
    seconds: float = 0.0
    reason: str = ""
    worker: str = ""
    fold_scores: list[float] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status != COMPLETED


def read_outcome(trial_dir: str | Path) -> TrialOutcome | None:
    """Reads `trial.json` of a trial's run directory (`None` if absent)."""
    path = TuneDir.trial_json(trial_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    known = {f for f in TrialOutcome.__dataclass_fields__}
    return TrialOutcome(**{k: v for k, v in data.items() if k in known})


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


def _nan_epoch(history: Mapping[str, list[float]]) -> int | None:
    for i, value in enumerate(history.get("loss", [])):
        if not math.isfinite(value):
            return i + 1
    return None


@dataclass
class TrialRunner:
    """Trains and scores trials of one search.

    Args:
        space: The search space (its recipe holds the fixed values).
        objective: What the trial is scored by.
        tune_dir: The tuning directory (`trials/<trial_id>/` go under it).
        seed: Seed of the splits and the training (the same for every trial).
        max_epochs: Epochs of a trial unless Hyperband sets `tuner/epochs`.
        fixed: Overrides applied to every trial (early stopping on...).
        worker: This process's tuner id.
        log: Prints a line (or does nothing).
    """

    space: SearchSpace
    objective: Objective
    tune_dir: Path
    seed: int
    max_epochs: int
    fixed: dict[str, Any] = field(default_factory=dict)
    worker: str = "tuner0"
    log: Callable[[str], None] = print

    def trial_dir(self, trial_id: str) -> Path:
        return TuneDir(self.tune_dir).trial(trial_id)

    def config_for(self, values: Mapping[str, Any]) -> tuple[Any, int]:
        """The trial's recipe (validated) and epoch budget."""
        epochs = int(values.get("tuner/epochs") or self.max_epochs)
        overrides = {**self.space.overrides(values), **self.fixed, "epochs": epochs}
        return self.space.recipe.with_context(seed=self.seed, **overrides), epochs

    def __call__(self, trial_id: str, values: Mapping[str, Any]) -> TrialOutcome:
        """Runs (or reads back) one trial and writes its `trial.json`."""
        from kflow.run import RunDir, atomic_write_text

        trial_dir = self.trial_dir(trial_id)
        searched = {k: v for k, v in self.space.active(values).items()}
        outcome = TrialOutcome(trial_id=str(trial_id), status=FAILED, values=searched,
                               worker=self.worker)
        previous = read_outcome(trial_dir)
        start = time.perf_counter()
        try:
            recipe, outcome.epochs = self.config_for(values)
            outcome.values = {k: recipe.hparams[k] for k in searched}
            if self.objective.cv:
                self._cross_validate(recipe, trial_dir, outcome)
            else:
                self._train(recipe, trial_dir, outcome, RunDir(trial_dir).finished)
        except Exception as exc:  # noqa: BLE001 - any failure fails the trial, not the search
            outcome.status, outcome.reason = FAILED, outcome.reason or _reason(exc)
        outcome.seconds = round(time.perf_counter() - start, 3)
        if previous is not None and previous.status == outcome.status and previous.seconds:
            outcome.seconds = previous.seconds  # read back: keep the time it took then
        trial_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(TuneDir.trial_json(trial_dir),
                          json.dumps(asdict(outcome), indent=2) + "\n")
        return outcome

    def _train(self, recipe: Any, trial_dir: Path, outcome: TrialOutcome,
               finished: bool) -> None:
        from kflow.run import load_run
        from kflow.training.engine import train

        if finished:
            run = load_run(trial_dir, load_model=False)
        else:
            import keras

            keras.backend.clear_session()
            run = train(recipe, run_dir=trial_dir, seed=self.seed, verbose=0)
        self._score_run(outcome, run)

    def _cross_validate(self, recipe: Any, trial_dir: Path, outcome: TrialOutcome) -> None:
        """Scores the mean held-out metric of `kflow.cross_validate` (K folds of train +
        validation; the test split stays unused). A finished trial's `cv.json` is read back."""
        from kflow.run import RunDir
        from kflow.training.cross_validation import cross_validate

        rd = RunDir(trial_dir)
        cv_file = rd.cv_json
        if cv_file.is_file() and rd.config.is_file():
            folds = json.loads(cv_file.read_text())["per_fold"]
        else:
            import keras

            keras.backend.clear_session()
            folds = cross_validate(recipe, folds=self.objective.cv, seed=self.seed,
                                   out_dir=trial_dir, verbose=0).folds
        metric, patience = self.objective.metric, recipe.hparams["patience"]
        epochs_run = [int(f["epochs_run"]) for f in folds]
        outcome.epochs_spent = sum(epochs_run)
        outcome.epochs_run = _mean(epochs_run)
        # Early stopping keeps the weights of `patience` epochs before it stopped.
        outcome.best_epoch = _mean([max(1, e - patience) if e < outcome.epochs else e
                                    for e in epochs_run])
        for i, fold in enumerate(folds):
            for name in dict.fromkeys(("loss", metric)):
                if not math.isfinite(float(fold[name])):
                    outcome.reason = (f"held-out {name} of fold {i + 1} is {fold[name]} "
                                      "(training diverged)")
                    raise FloatingPointError(outcome.reason)
        outcome.fold_scores = [float(f[metric]) for f in folds]
        outcome.score = float(sum(outcome.fold_scores) / len(folds))
        outcome.status = COMPLETED

    def _score_run(self, outcome: TrialOutcome, run: Any) -> None:
        outcome.epochs_run = outcome.epochs_spent = int(run.metrics.get("epochs_run", 0))
        outcome.best_epoch = int(run.metrics.get("best_epoch", 0))
        nan_at = _nan_epoch(run.history)
        if run.metrics.get("nan_stop"):  # the engine's NaN guard stopped (and explains) it
            outcome.reason = str(run.metrics.get("stop_reason") or "the loss became NaN")
            raise FloatingPointError(outcome.reason)
        if nan_at is not None:
            outcome.reason = (f"loss became NaN at epoch {nan_at}; training was stopped "
                              "(TerminateOnNaN)")
            raise FloatingPointError(outcome.reason)
        score = self.objective.score(run.metrics)
        if not math.isfinite(score):
            outcome.reason = f"{self.objective.name} is {score}"
            raise FloatingPointError(outcome.reason)
        outcome.score = score
        outcome.status = COMPLETED


def _mean(values: list[int]) -> float | int:
    if not values:
        return 0
    mean = sum(values) / len(values)
    return int(mean) if float(mean).is_integer() else round(mean, 2)
