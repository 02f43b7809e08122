"""text-classifier: any table with a text column and a label, raw strings in."""

from __future__ import annotations

from typing import Any

from kflow import Recipe, hp
from kflow.blocks.attention import positional_embedding, sequence_pool, transformer_encoder
from kflow.blocks.layers import LayerStyle
from kflow.blocks.recurrent import RECURRENT_CELLS, conv1d_block, recurrent_stack
from kflow.data import Dataset

#: The shipped example table (generated reviews, free to redistribute).
EXAMPLE_TABLE = "example_text/reviews.csv"
ENCODERS = ("bag", "conv1d", "lstm", "transformer")


def _example_path() -> str:
    from importlib import resources

    return str(resources.files("kflow.catalog") / "data" / "reviews.csv")


class TextClassifier(Recipe):
    """TextVectorization (fitted on the training split) -> Embedding -> encoder -> head.

    The model's input is a batch of raw strings (`text`); tokenizing, the
    vocabulary and padding live inside the model, so `model.keras`, the
    SavedModel, TF Serving and `kflow predict` all take raw text. Padded
    steps are masked (Embedding `mask_zero=True`) in the bag average, the
    LSTM and the attention.
    """

    name = "text-classifier"
    description = "Text classification from a table's text column (raw strings in)."
    defaults = {"epochs": 20, "patience": 4, "learning_rate": 3e-3, "batch_size": 32,
                "scaling": "none"}

    path = hp.Str("", group="data", doc="CSV/Parquet table with a text and a label column "
                  "(empty: the shipped example of 600 generated product reviews).")
    text_column = hp.Str("text", group="data", doc="The column holding the documents.")
    label_column = hp.Str("label", group="data", doc="The column holding the classes.")
    max_tokens = hp.Int(5000, low=3, group="data",
                        doc="Vocabulary size (with padding and out-of-vocabulary ids).")
    sequence_length = hp.Int(48, low=1, group="data",
                             doc="Tokens per document (longer ones are cut, shorter padded).")
    encoder = hp.Choice("bag", list(ENCODERS), group="model", search=True,
                        doc="bag (masked mean of word embeddings), conv1d, lstm or "
                        "transformer.")
    embedding_dim = hp.Int(32, low=1, group="model", doc="Word embedding size.",
                           search=(8, 128, "log"))
    units = hp.Int(32, low=1, group="model",
                   doc="Filters (conv1d), LSTM units or feed-forward width (transformer).")
    cell = hp.Choice("lstm", list(RECURRENT_CELLS), group="model",
                     doc="Recurrent cell of encoder=lstm.", requires={"encoder": ["lstm"]})
    heads = hp.Int(2, low=1, group="model", doc="Attention heads of encoder=transformer.",
                   requires={"encoder": ["transformer"]})
    dropout = hp.Float(0.2, low=0.0, high=1.0, high_inclusive=False, group="model",
                       doc="Dropout before the head.")

    def load_data(self) -> Dataset:
        from kflow.data.text import load_text_table

        path = self.resolve_path(self.path) if self.path else _example_path()
        return load_text_table(str(path), self.text_column, self.label_column)

    def build_model(self, train: Dataset) -> Any:
        import keras

        inputs = keras.Input(shape=(), dtype="string", name="text")
        x = self.build_preprocessing(inputs, train)
        x = self.build_backbone(x)
        outputs = self.build_head(x, train)
        return keras.Model(inputs, outputs, name="text_classifier")

    def build_preprocessing(self, inputs: Any, train: Dataset) -> Any:
        import keras

        from kflow.data.text import text_vectorizer

        ids = text_vectorizer(train.x, max_tokens=self.max_tokens,
                              sequence_length=self.sequence_length)(inputs)
        vocab = self.max_tokens
        return keras.layers.Embedding(
            vocab, self.embedding_dim, mask_zero=self.encoder != "conv1d", name="token_embedding",
            embeddings_initializer=keras.initializers.RandomUniform(
                -0.05, 0.05, seed=LayerStyle(seed=self.seed).layer_seed("token_embedding")),
        )(ids)

    def build_backbone(self, x: Any) -> Any:
        import keras

        style = LayerStyle(seed=self.seed, batch_norm="none")
        if self.encoder == "bag":
            x = sequence_pool(x, "mean", name="bag_mean")
        elif self.encoder == "conv1d":
            x = conv1d_block(x, self.units, style, "conv1d_0", kernel_size=3)
            x = sequence_pool(x, "max", name="pool")
        elif self.encoder == "lstm":
            x = recurrent_stack(x, self.units, 1, cell=self.cell, seed=self.seed)
        else:
            x = positional_embedding(x, "learned", seed=self.seed)
            x = transformer_encoder(x, 1, self.heads, self.units, seed=self.seed)
            x = sequence_pool(x, "mean")
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, seed=style.layer_seed("dropout"),
                                     name="dropout")(x)
        return x
