"""Hyperparameter search with KerasTuner, driven by the recipe's own declarations.

`kflow.tune(recipe, tuner="random"|"grid"|"bayesian"|"hyperband", ...)` (and
`kflow tune RECIPE ...`) searches the space the recipe declares (`search=` of
each hyperparameter), changed by `--search NAME=SPEC` or a YAML `search:`
block. Trials train with kflow's engine in `TUNE_DIR/trials/<id>/`; the
search writes `trials.csv`, `report.html` and `best.yaml`, resumes when
re-run, and runs distributed with KerasTuner's chief/worker environment
variables.

Importing this package is cheap: KerasTuner and TensorFlow load when a
search starts.

Modules: `space` (the search space), `objective`, `trial` (one trial; with
`--cv` through `kflow.cross_validate`), `tuner` (the KerasTuner bridge),
`report` (table, HTML report, best.yaml), `search` (`tune`).
"""

from __future__ import annotations

from kflow.tuning.objective import Objective
from kflow.tuning.search import TUNERS, TuneOptions, TuneResult, hyperband_schedule, tune
from kflow.tuning.space import Dim, SearchSpace, parse_search_args

__all__ = [
    "tune",
    "TuneOptions",
    "TuneResult",
    "TUNERS",
    "SearchSpace",
    "Dim",
    "Objective",
    "parse_search_args",
    "hyperband_schedule",
]

