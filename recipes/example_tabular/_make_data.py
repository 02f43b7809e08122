"""Generates `students.csv`, the example table of the `tabular` recipe.

Run from the repository root: `python recipes/example_tabular/_make_data.py`.
(The leading underscore keeps kflow's recipe scan from importing this file.)

400 students with a learnable pass/fail result: more study hours, a better
previous score, enough sleep, tutoring and fewer absences raise the odds of
passing, and the school shifts them. It has what real tables have: missing
numbers, a text category with missing cells, a yes/no column, a column name
with a space, and three rows without a label.
"""

from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 400
SCHOOL_EFFECT = {"Northside": 0.6, "Riverside": 0.0, "Hilltop": -0.8, "Lakeview": 0.3}


def make(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hours = rng.uniform(0, 12, ROWS).round(1)
    sleep = rng.normal(7.0, 1.2, ROWS).clip(3, 11).round(1)
    previous = rng.normal(68, 12, ROWS).clip(20, 100).round(0)
    school = rng.choice(list(SCHOOL_EFFECT), ROWS, p=[0.3, 0.3, 0.25, 0.15])
    tutoring = rng.choice(["yes", "no"], ROWS, p=[0.35, 0.65])
    absences = rng.poisson(3, ROWS)
    logit = (0.6 * (hours - 6) + 0.09 * (previous - 68) + 0.5 * (sleep - 7)
             - 0.3 * (absences - 3) + np.vectorize(SCHOOL_EFFECT.get)(school)
             + 1.0 * (tutoring == "yes") - 0.3)
    passed = rng.uniform(size=ROWS) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({
        "hours_studied": hours,
        "sleep_hours": sleep,
        "previous score": previous,
        "school": school.astype(object),
        "tutoring": tutoring,
        "absences": absences,
        "result": np.where(passed, "pass", "fail").astype(object),
    })
    for column, fraction in (("hours_studied", 0.08), ("sleep_hours", 0.05),
                             ("previous score", 0.05), ("school", 0.04)):
        frame.loc[rng.uniform(size=ROWS) < fraction, column] = np.nan
    frame.loc[rng.choice(ROWS, 3, replace=False), "result"] = np.nan
    return frame


if __name__ == "__main__":
    out = Path(__file__).with_name("students.csv")
    make().to_csv(out, index=False)
    print(f"wrote {out}")
