"""Honest baselines: scikit-learn models on the same training split as the network.

Every classification or regression run on a table (named columns, or a 2-D
array of features) also fits, on exactly the network's training split:

| name             | model                                                                |
|------------------|----------------------------------------------------------------------|
| `linear`         | `LogisticRegression` (classification) / `Ridge(alpha=1e-6)` (regression), |
|                  | on mean-imputed, standardized numbers and one-hot categories         |
| `boosted_trees`  | `HistGradientBoostingClassifier` / `Regressor` (default settings,    |
|                  | fixed seed), only when the training split has <= `BOOSTING_MAX_ROWS`  |
|                  | rows                                                                 |

Their test scores go into `metrics.json` under `baselines` (same metric names
as the network's: `accuracy` (+ `auc` for binary), `mae` for regression) and
into `report.html`; the doctor's `worse_than_baseline` rule (`baseline_finding`)
says plainly when the network scored worse than the best of them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["fit_baselines", "baseline_finding", "BOOSTING_MAX_ROWS", "LINEAR_MAX_ROWS",
           "WORSE_ACCURACY", "WORSE_MAE_RATIO", "table_like", "baselines_html"]

#: Gradient-boosted trees are fitted up to this many training rows.
BOOSTING_MAX_ROWS = 200_000
#: No baseline above this many training rows (a streaming-sized table).
LINEAR_MAX_ROWS = 2_000_000
#: The doctor reports the network as worse when its test accuracy is this much below
#: the best baseline's (0.005 = half a point) ...
WORSE_ACCURACY = 0.005
#: ... or its test MAE this many times the best baseline's (regression).
WORSE_MAE_RATIO = 1.02


def table_like(x: Any) -> bool:
    """Whether `x` is a table: a dict of columns, or a 2-D array of features."""
    return isinstance(x, dict) or (hasattr(x, "ndim") and x.ndim == 2)


def _preprocessor(x: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True),
                            StandardScaler())
    if not isinstance(x, dict):
        return numeric
    num = [k for k, v in x.items() if np.asarray(v).dtype.kind in "fiub"]
    cat = [k for k in x if k not in num]
    parts = []
    if num:
        parts.append(("numeric", numeric, num))
    if cat:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore",
                                                   sparse_output=False), cat))
    return ColumnTransformer(parts)


def _frame(x: Any) -> Any:
    if not isinstance(x, dict):
        return np.asarray(x, dtype=np.float64)
    import pandas as pd

    return pd.DataFrame({k: (np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind
                             in "fiub" else np.asarray(v).astype(str)) for k, v in x.items()})


def _scores(task: str, model: Any, x: Any, y: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    if task == "regression":
        pred = model.predict(x)
        y = y.reshape(pred.shape)
        return {"mae": float(metrics.mean_absolute_error(y, pred)),
                "r2": float(metrics.r2_score(y, pred))}
    pred = model.predict(x)
    out = {"accuracy": float(metrics.accuracy_score(y, pred))}
    if task == "binary" and len(np.unique(y)) == 2:
        out["auc"] = float(metrics.roc_auc_score(y, model.predict_proba(x)[:, 1]))
    return out


def fit_baselines(train: Any, test: Any, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Fits the baselines on `train` and scores them on `test`.

    Args:
        train: The network's training `Dataset` (table-like `x`).
        test: The held-out `Dataset` the network is tested on.
        seed: Seed of the tree model. Defaults to 0.

    Returns:
        `{name: {"test": {metric: value}, "train_rows": n, "seconds": s}}`;
        `{}` when the data is not a table or the training split is larger
        than `LINEAR_MAX_ROWS`.

    Example:

    ```python
    splits = kflow.training.Trainer("breast-cancer-mlp").splits()
    print(fit_baselines(splits.train, splits.test)["linear"]["test"]["accuracy"])
    ```
    """
    if (test is None or not table_like(train.x) or len(train) > LINEAR_MAX_ROWS
            or getattr(train, "streaming", False)):
        return {}
    import warnings

    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline

    task = train.task
    y = np.asarray(train.y)
    y = y.reshape(len(y), -1)[:, 0] if task != "regression" or y.ndim == 1 else y
    y_test = np.asarray(test.y)
    y_test = y_test.reshape(len(y_test), -1)[:, 0] if task != "regression" or \
        y_test.ndim == 1 else y_test
    candidates: dict[str, Any] = {
        "linear": (Ridge(alpha=1e-6) if task == "regression"
                   else LogisticRegression(max_iter=2000)),
    }
    if len(train) <= BOOSTING_MAX_ROWS and (task != "regression" or y.ndim == 1):
        candidates["boosted_trees"] = (
            HistGradientBoostingRegressor(random_state=seed) if task == "regression"
            else HistGradientBoostingClassifier(random_state=seed))
    x_train, x_test = _frame(train.x), _frame(test.x)
    out: dict[str, dict[str, Any]] = {}
    for name, estimator in candidates.items():
        start = time.perf_counter()
        model = make_pipeline(_preprocessor(train.x), estimator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter of the linear model
            model.fit(x_train, y)
            scores = _scores(task, model, x_test, y_test)
        out[name] = {"test": scores, "train_rows": len(train),
                     "seconds": round(time.perf_counter() - start, 3)}
    return out


def baseline_finding(metrics: dict[str, Any], task: str) -> dict[str, Any] | None:
    """The doctor's `worse_than_baseline` finding (as `Finding` fields), or `None`.

    A pure function of `metrics.json`: fires when the network's test accuracy
    is more than `WORSE_ACCURACY` below the best baseline's, or (regression)
    its test MAE is more than `WORSE_MAE_RATIO` times the best baseline's.
    """
    baselines = metrics.get("baselines") or {}
    net = metrics.get("test") or {}
    if not baselines or not net:
        return None
    regression = task == "regression"
    key = "mae" if regression else "accuracy"
    if key not in net:
        return None
    scored = {n: b["test"][key] for n, b in baselines.items() if key in b.get("test", {})}
    if not scored:
        return None
    best = (min if regression else max)(scored, key=scored.get)
    ours, theirs = float(net[key]), float(scored[best])
    worse = ours > theirs * WORSE_MAE_RATIO if regression else ours < theirs - WORSE_ACCURACY
    if not worse:
        return None
    gap = (f"test MAE {ours:.4g} vs {theirs:.4g}" if regression
           else f"test accuracy {ours:.4f} vs {theirs:.4f} ({(theirs - ours) * 100:.1f} points)")
    label = {"linear": "a linear model" if regression else "a logistic regression",
             "boosted_trees": "gradient-boosted trees"}.get(best, best)
    return dict(
        id="worse_than_baseline", severity="warning",
        title=f"The network is worse than {label} (scikit-learn) on the same split",
        evidence=f"The network's {gap}; {label} was fitted on the same training split.",
        why="A plain scikit-learn model beats the network here: use it, or fix the network "
            "before trusting it.",
        advice=["Regularize more (dropout, regularizer=l2) or use a smaller network "
                "(fewer units / hidden_layers): small tables overfit easily.",
                "Keep early stopping on (early_stopping: true) with enough patience, so the "
                "best epoch's weights are the ones kept.",
                "Check the input scaling (scaling: standard) and the categorical encoding.",
                f"If nothing closes the gap, ship {label}: it is simpler and better here."],
        data={"metric": key, "network": ours, "baseline": best, "baseline_score": theirs},
    )


def baselines_html(metrics: dict[str, Any]) -> str:
    """The report's table of the network's and the baselines' test scores ("" without any)."""
    import html

    baselines = metrics.get("baselines") or {}
    if not baselines:
        return ""
    rows = [("network (kflow)", metrics.get("test") or {})]
    rows += [(name, b.get("test", {})) for name, b in baselines.items()]
    names = [k for k in ("accuracy", "auc", "mae", "r2")
             if any(k in scores for _, scores in rows)]
    head = "".join(f"<th>test {html.escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>" + "".join(
            f"<td>{scores[n]:.4f}</td>" if n in scores else "<td>-</td>" for n in names)
        + "</tr>" for label, scores in rows)
    return ("<h2>Baselines (scikit-learn, same training split)</h2>"
            f"<table><tr><th>model</th>{head}</tr>{body}</table>")
