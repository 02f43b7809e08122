"""Honest baselines: scikit-learn models on the same training split as the network.

Every classification or regression run on a table (named columns, or a 2-D
array of features), in memory or streamed, also fits, on the network's
training split:

| name             | model                                                                |
|------------------|----------------------------------------------------------------------|
| `linear`         | `LogisticRegression` (classification) / `Ridge(alpha=1e-6)` (regression), |
|                  | on mean-imputed, standardized numbers and one-hot categories         |
| `boosted_trees`  | `HistGradientBoostingClassifier` / `Regressor` (default settings,    |
|                  | fixed seed), only when the rows it is fitted on are at most          |
|                  | `BOOSTING_MAX_ROWS`                                                  |

| training split                        | fitted on                  | scored on                  |
|---------------------------------------|----------------------------|----------------------------|
| in memory, <= `LINEAR_MAX_ROWS` rows  | all its rows               | all test rows              |
| in memory, > `LINEAR_MAX_ROWS` rows   | a uniform sample of        | a uniform sample of        |
|                                       | `SAMPLE_ROWS` rows         | `SAMPLE_ROWS` test rows    |
|                                       |                            | (all when fewer)           |
| streamed (`kflow.data.streaming`,     | the stream's own training  | a uniform sample of        |
| `kflow.data.tfrecord`)                | sample (the `sample_rows`  | `SAMPLE_ROWS` test rows    |
|                                       | rows the preprocessing is  | (all when fewer), read in  |
|                                       | fitted on; at most         | one pass over the files    |
|                                       | `SAMPLE_ROWS` of them)     | unless the split's own     |
|                                       |                            | sample already holds them  |

Samples are seeded (the run's seed), so a run gives the same baselines
again. Nothing is read beyond the sample and one chunk at a time, so the
memory a streamed run needs does not grow with the file.

Their test scores go into `metrics.json` under `baselines` (same metric names
as the network's: `accuracy` (+ `auc` for binary), `mae` for regression), with
the rows used: `{"test": {...}, "train_rows": n, "test_rows": m, "seconds": s}`,
plus `"sampled_from"` (the training split's rows) when `train_rows` is a sample
and `"test_sampled_from"` when `test_rows` is. They go into `report.html` too
("fitted on a sample of N of M training rows" when sampled); the doctor's
`worse_than_baseline` rule (`baseline_finding`) says plainly when the network
scored worse than the best of them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["fit_baselines", "baseline_finding", "BOOSTING_MAX_ROWS", "LINEAR_MAX_ROWS",
           "SAMPLE_ROWS", "WORSE_ACCURACY", "WORSE_MAE_RATIO", "table_like",
           "baselines_html", "sample_note"]

#: Gradient-boosted trees are fitted when they would be fitted on at most this many rows.
BOOSTING_MAX_ROWS = 200_000
#: An in-memory training split of more rows is sampled (as a streamed one always is).
LINEAR_MAX_ROWS = 2_000_000
#: A sampled run's baselines are fitted on at most this many training rows and scored
#: on at most this many test rows (a uniform, seeded sample of each split).
SAMPLE_ROWS = 200_000
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


def _labels(task: str, y: Any) -> np.ndarray:
    """The targets as scikit-learn takes them: 1-D class ids, 1-D or 2-D regression targets."""
    y = np.asarray(y)
    if task != "regression":
        return y.reshape(len(y), -1)[:, 0].astype(np.int64)
    return y


def _predict(task: str, model: Any, x: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """`(predictions, positive-class probabilities (binary tasks) or None)`."""
    pred = model.predict(x)
    proba = model.predict_proba(x)[:, 1] if task == "binary" and len(
        getattr(model, "classes_", ())) == 2 else None
    return pred, proba


def _scores(task: str, y: np.ndarray, pred: np.ndarray,
            proba: np.ndarray | None) -> dict[str, float]:
    from sklearn import metrics

    if task == "regression":
        y = y.reshape(pred.shape)
        return {"mae": float(metrics.mean_absolute_error(y, pred)),
                "r2": float(metrics.r2_score(y, pred))}
    out = {"accuracy": float(metrics.accuracy_score(y, pred))}
    if task == "binary" and proba is not None and len(np.unique(y)) == 2:
        out["auc"] = float(metrics.roc_auc_score(y, proba))
    return out


def _pick(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of a uniform sample of `k` of `n` rows (all `n` when `n <= k`)."""
    if n <= k:
        return np.arange(n)
    return np.sort(rng.choice(n, k, replace=False))


def _take(x: Any, index: np.ndarray) -> Any:
    return {k: np.asarray(v)[index] for k, v in x.items()} if isinstance(x, dict) \
        else np.asarray(x)[index]


def _training_rows(train: Any, sampled: bool, rng: np.random.Generator
                   ) -> tuple[Any, np.ndarray, int | None]:
    """`(x, y, rows sampled from or None)`: what the baselines are fitted on.

    A streamed split's `x`/`y` are already a uniform sample of its rows (the
    one its preprocessing is fitted on), so nothing is read again.
    """
    x, y, total = train.x, np.asarray(train.y), len(train)
    if sampled and len(y) > SAMPLE_ROWS:
        index = _pick(len(y), SAMPLE_ROWS, rng)
        x, y = _take(x, index), y[index]
    return x, y, (total if len(y) < total else None)


def _streamed_rows(part: Any, pick: np.ndarray) -> Any:
    """Yields `(x, y)` chunk by chunk: the rows at positions `pick` of a streamed split.

    The rows come from the stream's own reader, converted and labelled exactly
    as the network's batches (`StreamPart.tf_dataset`): nothing else is kept.
    """
    stream = part.stream
    if part.rows is not None:  # the split's row numbers are known: read just those
        rows = part.rows[pick]
        for first, x, _ in stream.read(rows):
            yield x, stream.labels[rows[first:first + len(next(iter(x.values())))]]
        return
    seen = 0  # a hashed split: its rows in file order, chunk by chunk
    for x, y, _ in stream.read_part(part.part):
        lo, hi = np.searchsorted(pick, [seen, seen + len(y)])
        local = pick[lo:hi] - seen
        seen += len(y)
        if len(local):
            yield {k: v[local] for k, v in x.items()}, y[local]


def _test_rows(test: Any, sampled: bool, rng: np.random.Generator
               ) -> tuple[Any, int, int | None]:
    """`(chunks of (x, y), rows scored, rows sampled from or None)` of the test split."""
    total = len(test)
    if not getattr(test, "streaming", False):
        index = _pick(total, SAMPLE_ROWS if sampled else total, rng)
        if len(index) == total:
            return [(test.x, test.y)], total, None
        return [(_take(test.x, index), np.asarray(test.y)[index])], len(index), total
    k = min(total, SAMPLE_ROWS)
    if len(test.y) >= k:  # the split's own uniform sample holds enough rows
        index = _pick(len(test.y), k, rng)
        chunks = [(_take(test.x, index), np.asarray(test.y)[index])]
    else:
        chunks = _streamed_rows(test, _pick(total, k, rng))
    return chunks, k, (total if k < total else None)


def fit_baselines(train: Any, test: Any, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Fits the baselines on `train` and scores them on `test`.

    A streamed split (`train.streaming`), or an in-memory one of more than
    `LINEAR_MAX_ROWS` rows, is sampled (see the module docstring): the
    baselines are fitted on at most `SAMPLE_ROWS` training rows and scored on
    at most `SAMPLE_ROWS` test rows, and the entries say so.

    Args:
        train: The network's training `Dataset` (table-like `x`), or a
            streamed split (`kflow.data.streaming.StreamPart`).
        test: The held-out `Dataset` (or streamed split) the network is
            tested on.
        seed: Seed of the tree model and of the samples. Defaults to 0.

    Returns:
        `{name: {"test": {metric: value}, "train_rows": n, "test_rows": m,
        "seconds": s}}`, with `"sampled_from"` (the training split's rows)
        when `n` rows are a sample of them and `"test_sampled_from"` when
        the `m` test rows are; `{}` when the data is not a table.

    Example:

    ```python
    splits = kflow.training.Trainer("breast-cancer-mlp").splits()
    print(fit_baselines(splits.train, splits.test)["linear"]["test"]["accuracy"])
    ```
    """
    if test is None or not table_like(train.x) or not table_like(test.x):
        return {}
    import warnings

    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline

    task = train.task
    sampled = getattr(train, "streaming", False) or len(train) > LINEAR_MAX_ROWS
    x, y, sampled_from = _training_rows(train, sampled, np.random.default_rng([seed, 0]))
    y = _labels(task, y)
    candidates: dict[str, Any] = {
        "linear": (Ridge(alpha=1e-6) if task == "regression"
                   else LogisticRegression(max_iter=2000)),
    }
    if len(y) <= BOOSTING_MAX_ROWS and (task != "regression" or y.ndim == 1):
        candidates["boosted_trees"] = (
            HistGradientBoostingRegressor(random_state=seed) if task == "regression"
            else HistGradientBoostingClassifier(random_state=seed))
    x_train = _frame(x)
    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the linear model
        for name, estimator in candidates.items():
            start = time.perf_counter()
            models[name] = make_pipeline(_preprocessor(x), estimator).fit(x_train, y)
            seconds[name] = time.perf_counter() - start
        del x_train
        chunks, test_rows, test_from = _test_rows(test, sampled,
                                                  np.random.default_rng([seed, 1]))
        y_test: list[np.ndarray] = []
        preds: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {n: [] for n in models}
        for x_chunk, y_chunk in chunks:  # one pass, however many models
            y_test.append(_labels(task, y_chunk))
            frame = _frame(x_chunk)
            for name, model in models.items():
                start = time.perf_counter()
                preds[name].append(_predict(task, model, frame))
                seconds[name] += time.perf_counter() - start
    y_all = np.concatenate(y_test)
    out: dict[str, dict[str, Any]] = {}
    for name, parts in preds.items():
        proba = None if parts[0][1] is None else np.concatenate([p for _, p in parts])
        out[name] = {"test": _scores(task, y_all, np.concatenate([p for p, _ in parts]),
                                     proba),
                     "train_rows": len(y), "test_rows": int(test_rows),
                     "seconds": round(seconds[name], 3)}
        if sampled_from is not None:
            out[name]["sampled_from"] = int(sampled_from)
        if test_from is not None:
            out[name]["test_sampled_from"] = int(test_from)
    return out


def sample_note(entry: dict[str, Any]) -> str:
    """The note "fitted on a sample of N of M training rows" (and of the test rows), or "".

    Args:
        entry: One baseline's entry of `metrics.json` (`fit_baselines`).
    """
    notes = []
    if entry.get("sampled_from"):
        notes.append(f"fitted on a sample of {entry['train_rows']:,} of "
                     f"{entry['sampled_from']:,} training rows")
    if entry.get("test_sampled_from"):
        notes.append(f"scored on a sample of {entry['test_rows']:,} of "
                     f"{entry['test_sampled_from']:,} test rows")
    return ", ".join(notes)


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
    note = sample_note(baselines[best])
    return dict(
        id="worse_than_baseline", severity="warning",
        title=f"The network is worse than {label} (scikit-learn) on the same split",
        evidence=f"The network's {gap}; {label} was fitted on the same training split"
                 + (f" ({note})." if note else "."),
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
    notes = {sample_note(b) for b in baselines.values()} - {""}
    note = "".join(f"<p>The baselines were {html.escape(n)} (uniform, seeded).</p>"
                   for n in sorted(notes))
    return ("<h2>Baselines (scikit-learn, same training split)</h2>"
            f"<table><tr><th>model</th>{head}</tr>{body}</table>{note}")
