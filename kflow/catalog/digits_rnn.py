"""digits-rnn: a recurrent network reading each 8x8 digit row by row."""

from __future__ import annotations

from typing import Any

from kflow import Recipe, hp
from kflow.blocks.recurrent import RECURRENT_CELLS, recurrent_stack
from kflow.data import Dataset, load_sklearn


def digits_as_rows() -> Dataset:
    """scikit-learn's digits as sequences of 8 steps (rows) x 8 features (pixels)."""
    data = load_sklearn("digits", images=True)
    data.x = data.x.reshape(len(data.x), 8, 8)
    data.name = "digits_rows"
    return data


class DigitsRNN(Recipe):
    """LSTM/GRU/SimpleRNN over the 8 rows of each digit; the last state feeds the head.

    Gradient clipping is on by default (`global_clipnorm=1.0`): a recurrent
    net multiplies its gradient by the same recurrent matrix at every step,
    so one bad batch can blow it up (the lecture's exploding gradients).
    Healthy gradients here stay below the threshold, so clipping costs
    nothing when it is not needed.
    """

    name = "digits-rnn"
    description = "LSTM/GRU/RNN reading scikit-learn digits row by row (8 steps x 8 pixels)."
    defaults = {"epochs": 60, "global_clipnorm": 1.0, "learning_rate": 3e-3, "patience": 10}

    cell = hp.Choice("lstm", list(RECURRENT_CELLS), group="model",
                     doc="Recurrent cell: lstm, gru or rnn (SimpleRNN).", search=True)
    units = hp.Int(64, low=1, group="model", doc="Hidden state size per layer (and direction).",
                   search=(16, 128, "log"))
    layers = hp.Int(1, low=1, high=4, group="model", doc="Stacked recurrent layers.",
                    search=(1, 3))
    bidirectional = hp.Bool(True, group="model", doc="Read the rows both ways (bottom-up too).",
                            search=True)
    dropout = hp.Float(0.0, low=0.0, high=1.0, high_inclusive=False, group="model",
                       doc="Dropout after each recurrent layer.", search=(0.0, 0.5))
    recurrent_dropout = hp.Float(0.0, low=0.0, high=1.0, high_inclusive=False, group="model",
                                 doc="Dropout on the recurrent state (training only).")

    def load_data(self) -> Dataset:
        return digits_as_rows()

    def build_backbone(self, x: Any) -> Any:
        return recurrent_stack(
            x, self.units, self.layers, cell=self.cell, bidirectional=self.bidirectional,
            dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, seed=self.seed)
