"""Text data: a text column of a table, or a folder of text files per class.

The features of a text `Dataset` are a 1-D array of Python strings, one
document per row; the model turns them into token ids with a
`TextVectorization` layer fitted on the training split only
(`text_vectorizer`), so the saved model, the SavedModel and TF Serving take
raw strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import DataError

__all__ = ["load_text_table", "load_text_folder", "text_vectorizer", "make_review_table"]


def _labels(values: Any, source: str, column: str) -> tuple[np.ndarray, list[str]]:
    values = np.asarray([str(v).strip() for v in values])
    if (values == "").any() or (values == "nan").any():
        rows = np.flatnonzero((values == "") | (values == "nan"))[:10].tolist()
        raise DataError(f"Column '{column}' of {source} has no label at rows {rows}.")
    names = sorted(set(values.tolist()))
    index = {n: i for i, n in enumerate(names)}
    return np.asarray([index[v] for v in values], dtype="int64"), names


def load_text_table(source: Any, text_column: str = "text",
                    label_column: str = "label") -> Dataset:
    """A table with a text column and a label column as a text classification dataset.

    Example:

    ```python
    ds = kflow.data.text.load_text_table("reviews.csv", "text", "label")
    ds.x[:2], ds.class_names   # raw strings; sorted label names
    ```

    Args:
        source: A CSV/TSV/Parquet path, a DataFrame or a dict of columns.
        text_column: The documents. Defaults to "text".
        label_column: The class of each document. Defaults to "label".

    Returns:
        A `Dataset` whose `x` holds the strings (missing text becomes "").
    """
    from kflow.data.tabular import read_table

    frame, name = read_table(source)
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise DataError(f"{name} has no column '{column}'. Columns: "
                            f"{', '.join(map(str, frame.columns))}.")
    text = frame[text_column].fillna("").astype(str).to_numpy().astype(object)
    y, names = _labels(frame[label_column].tolist(), name, label_column)
    return Dataset(np.asarray(text, dtype=str), y, class_names=names, feature_names=["text"],
                   name=Path(str(name)).stem, meta={"text_column": text_column,
                                                    "label_column": label_column})


def load_text_folder(folder: str | Path, suffix: str = ".txt") -> Dataset:
    """A folder with one sub-folder of text files per class (`pos/*.txt`, `neg/*.txt`).

    Args:
        folder: The root folder.
        suffix: File name ending of the documents. Defaults to ".txt".

    Returns:
        A `Dataset` of raw strings; classes are the sub-folder names, sorted.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"Text folder '{root}' does not exist or is not a folder.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for i, name in enumerate(classes):
        for file in sorted((root / name).glob(f"*{suffix}")):
            texts.append(file.read_text(errors="replace"))
            labels.append(i)
    if len(classes) < 2 or not texts:
        raise DataError(f"Text folder '{root}' needs at least two class sub-folders with "
                        f"*{suffix} files; found classes {classes} and {len(texts)} files.")
    return Dataset(np.asarray(texts, dtype=str), np.asarray(labels, "int64"),
                   class_names=classes, feature_names=["text"], name=root.name)


def text_vectorizer(train_text: Any, *, max_tokens: int = 5000, sequence_length: int = 64,
                    name: str = "vectorize") -> Any:
    """A `TextVectorization` layer (lowercase, strip punctuation, split on spaces) fitted
    on `train_text` only.

    Token ids: 0 is padding, 1 the out-of-vocabulary token, then the
    `max_tokens - 2` most frequent words of the training split. Documents
    are padded or cut to `sequence_length` ids. The vocabulary is saved
    with the model.

    Args:
        train_text: The training split's strings.
        max_tokens: Vocabulary size including padding and OOV. Defaults to 5000.
        sequence_length: Ids per document. Defaults to 64.
        name: Layer name. Defaults to "vectorize".

    Returns:
        The adapted layer.
    """
    import keras

    layer = keras.layers.TextVectorization(max_tokens=max_tokens, output_mode="int",
                                           output_sequence_length=sequence_length, name=name)
    layer.adapt(np.asarray(train_text, dtype=str).reshape(-1), batch_size=256)
    return layer


# -- the shipped example table: generated reviews ---------------------------------------
_PRODUCTS = ["blender", "headphones", "backpack", "kettle", "lamp", "keyboard", "tent",
             "jacket", "camera", "chair", "printer", "bike", "watch", "phone case", "novel"]
_GOOD = ["great", "excellent", "sturdy", "reliable", "comfortable", "wonderful", "solid",
         "fantastic", "quiet", "useful", "beautiful", "fast"]
_BAD = ["terrible", "flimsy", "broken", "useless", "awful", "noisy", "cheap", "disappointing",
        "slow", "uncomfortable", "poor", "faulty"]
_NEUTRAL = ["arrived on tuesday", "came in a box", "is blue", "was a gift",
            "replaced my old one", "took a week to ship", "has a manual", "fits on the shelf"]
_GOOD_END = ["I would buy it again.", "Highly recommended!", "Five stars.", "Love it.",
             "Worth every penny."]
_BAD_END = ["I want a refund.", "Do not buy.", "One star.", "Returned it.",
            "Waste of money."]


def make_review_table(n: int = 600, seed: int = 0) -> Any:
    """Generated product reviews with a positive/negative label (free to redistribute).

    Each review mixes neutral sentences with sentiment words; about a fifth
    negate a word ("not great" is negative), so word order matters a
    little and bag-of-words models do not get everything right.

    Returns:
        A DataFrame with columns `text` and `label`.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        positive = bool(rng.integers(2))
        product = rng.choice(_PRODUCTS)
        words = _GOOD if positive else _BAD
        parts = [f"The {product} {rng.choice(_NEUTRAL)}."]
        if rng.random() < 0.2:  # negated opposite word: "not terrible" is mildly positive
            other = _BAD if positive else _GOOD
            parts.append(f"It is not {rng.choice(other)}.")
        else:
            parts.append(f"It is {rng.choice(words)} and {rng.choice(words)}.")
        if rng.random() < 0.5:
            parts.append(f"The {product} {rng.choice(_NEUTRAL)}.")
        if rng.random() < 0.6:
            parts.append(str(rng.choice(_GOOD_END if positive else _BAD_END)))
        rows.append((" ".join(parts), "positive" if positive else "negative"))
    return pd.DataFrame(rows, columns=["text", "label"])
