"""The tuning objective: which logged metric a trial is scored by, and its direction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kflow.errors import ConfigError, did_you_mean
from kflow.recipe.base import Recipe

__all__ = ["Objective", "logged_metrics", "resolve_objective"]


@dataclass(frozen=True)
class Objective:
    """A metric to maximize or minimize.

    Attributes:
        name: As logged by Keras: `val_accuracy`, `val_loss`, `accuracy`...
        direction: "max" or "min".
        cv: Folds of the cross-validated mean (`None`: the validation split).
    """

    name: str
    direction: str
    cv: int | None = None

    @property
    def split(self) -> str:
        return "val" if self.name.startswith("val_") else "train"

    @property
    def metric(self) -> str:
        return self.name.removeprefix("val_")

    def score(self, metrics: Mapping[str, Any]) -> float:
        """The objective's value in a run's `metrics` (`{"val": {"accuracy": ...}}`)."""
        return float(metrics[self.split][self.metric])

    def better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.direction == "max" else a < b)

    def describe(self) -> str:
        what = f"mean {self.name} of {self.cv}-fold cross-validation" if self.cv else self.name
        return f"{what} ({'higher' if self.direction == 'max' else 'lower'} is better)"

    def to_keras_tuner(self):
        import keras_tuner

        return keras_tuner.Objective(self.name, direction=self.direction)


def logged_metrics(recipe: Recipe, task: str, *, has_val: bool) -> dict[str, str]:
    """The metrics a training of `recipe` logs, with their direction ("max"/"min")."""
    metrics: dict[str, str] = {"loss": "min"}
    for metric in recipe.metrics(task):
        name = metric if isinstance(metric, str) else getattr(metric, "name", str(metric))
        direction = {"up": "max", "down": "min"}.get(getattr(metric, "_direction", ""))
        if direction is None:
            from keras_tuner.src.engine.metrics_tracking import infer_metric_direction

            direction = infer_metric_direction(name) or "max"
        metrics[name] = direction
    if has_val:
        metrics.update({f"val_{k}": v for k, v in list(metrics.items())})
    return metrics


def resolve_objective(
    name: str | None, recipe: Recipe, task: str, *, has_val: bool, cv: int | None = None
) -> Objective:
    """Checks `name` (`val_accuracy`, or `val_f1:max` to set the direction) against the
    metrics the recipe logs. The default is `val_accuracy` when logged, else `val_loss`.

    Raises:
        ConfigError: the objective is not a logged metric (the message lists them).
    """
    owner = type(recipe).name or type(recipe).__name__
    logged = logged_metrics(recipe, task, has_val=has_val or bool(cv))
    if name is None:
        name = next(n for n in ("val_accuracy", "val_loss", "loss") if n in logged)
    name, _, direction = name.strip().partition(":")
    if name not in logged:
        hint = ""
        if name.startswith("val_") and not (has_val or cv):
            hint = (" The recipe has no validation split (val_fraction=0); set "
                    "val_fraction > 0 or use --cv K.")
        prefixed = [n for n in logged if n.startswith(name)]
        guess = f" (did you mean '{prefixed[0]}'?)" if prefixed else did_you_mean(name, logged)
        raise ConfigError(
            f"The objective '{name}' is not a metric {owner} logs{guess}."
            f" Logged metrics: {', '.join(logged)}.{hint}"
        )
    if cv and not name.startswith("val_"):
        held_out = ", ".join(n for n in logged if n.startswith("val_"))
        raise ConfigError(
            f"With --cv the objective is a held-out fold's metric: one of {held_out}. "
            f"Got '{name}' instead."
        )
    if direction and direction not in ("max", "min"):
        raise ConfigError(
            f"The objective direction must be max or min (e.g. {name}:max). Got "
            f"'{direction}' instead."
        )
    return Objective(name=name, direction=direction or logged[name], cv=cv)
