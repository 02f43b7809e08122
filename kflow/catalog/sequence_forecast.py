"""sequence-forecast: forecast a time series from windows of its past, split in time order."""

from __future__ import annotations

from typing import Any

import numpy as np

from kflow import Recipe, hp
from kflow.blocks.attention import positional_embedding, sequence_pool, transformer_encoder
from kflow.blocks.layers import LayerStyle
from kflow.blocks.recurrent import conv1d_block, recurrent_stack
from kflow.data import Dataset

FORECAST_ENCODERS = ("lstm", "gru", "conv1d", "transformer")


def _example_path() -> str:
    from importlib import resources

    return str(resources.files("kflow.catalog") / "data" / "synthetic_sunspots.csv")


def _columns(value: str) -> list[str]:
    return [c.strip() for c in str(value).split(",") if c.strip()]


class SequenceForecast(Recipe):
    """Window of past steps -> encoder -> change from the last observed value.

    The head predicts the *change* from the window's last value of each
    target (a `Dense` delta, rescaled by the training split's spread, added
    to the last value), so an untrained model starts as the naive
    last-value forecast and training has to beat it. `metrics.json` records
    the naive forecast's test MAE/MSE (`naive_last_value`) next to the
    model's.

    The shipped series (`synthetic_sunspots.csv`) is *generated*: 325 yearly
    values with ~11-year cycles of random length and amplitude, a fast rise
    and slow decay, and noise, shaped like the yearly sunspot numbers. It is
    not the real sunspot record.
    """

    name = "sequence-forecast"
    description = "Forecast a time series (shipped: a synthetic sunspot-like yearly series)."
    defaults = {"epochs": 150, "patience": 20, "learning_rate": 3e-3, "global_clipnorm": 1.0,
                "batch_size": 16}

    path = hp.Str("", group="data", doc="CSV/Parquet time-series table (empty: the shipped "
                  "synthetic yearly sunspot-like series).")
    time_column = hp.Str("year", nullable=True, group="data",
                         doc="Column to sort the rows by (none: file order).")
    features = hp.Str("sunspots", group="data", doc="Input columns, comma-separated.")
    targets = hp.Str("sunspots", group="data", doc="Columns to forecast, comma-separated.")
    window = hp.Int(24, low=1, group="data", doc="Past steps the model sees.")
    horizon = hp.Int(1, low=1, group="data", doc="Future steps to forecast.")
    stride = hp.Int(1, low=1, group="data", doc="Steps between consecutive windows.")
    encoder = hp.Choice("gru", list(FORECAST_ENCODERS), group="model", search=True,
                        doc="Sequence encoder: lstm, gru, conv1d or transformer.")
    units = hp.Int(32, low=1, group="model", doc="Recurrent units / filters / token size.",
                   search=(8, 64, "log"))

    def load_data(self) -> Dataset:
        from kflow.data.sequence import load_windows

        path = self.resolve_path(self.path) if self.path else _example_path()
        return load_windows(
            str(path), features=_columns(self.features), targets=_columns(self.targets),
            window=self.window, horizon=self.horizon, stride=self.stride,
            time_column=self.time_column or None, val_fraction=self.hparams["val_fraction"],
            test_fraction=self.hparams["test_fraction"])

    def _last_values(self, x: Any) -> Any:
        """The last observed value of each target, repeated for each horizon step."""
        import keras

        features, targets = _columns(self.features), _columns(self.targets)
        missing = [t for t in targets if t not in features]
        if missing:
            from kflow.errors import ConfigError

            raise ConfigError(f"{self.name} forecasts changes from the last value, so every "
                              f"target must also be a feature; add {missing} to features.")
        index = [features.index(t) for t in targets]
        last = keras.ops.take(x[:, -1, :], np.asarray(index, "int32"), axis=1)
        return keras.ops.tile(last, (1, self.horizon))

    def build_model(self, train: Dataset) -> Any:
        import keras

        inputs = keras.Input(shape=train.x.shape[1:], name="series", dtype="float32")
        x = self.build_preprocessing(inputs, train)
        x = self.build_backbone(x)
        spread = float(np.std(np.diff(train.y, axis=0))) or 1.0
        delta = keras.layers.Dense(
            train.y.shape[-1], kernel_initializer="zeros", name="change")(x)
        delta = keras.layers.Rescaling(spread, name="change_scale")(delta)
        outputs = keras.layers.Add(name="value")([self._last_values(inputs), delta])
        return keras.Model(inputs, outputs, name="sequence_forecast")

    @property
    def tflite_not_offered(self) -> dict[str, str]:  # type: ignore[override]
        if self.encoder not in ("lstm", "gru"):
            return {}
        return {"int8": "full-integer quantization quantizes the recurrent state at every "
                        "step of the window and the errors add up (GRU: test MAE 28.3 vs 17.0 "
                        "in float32 on the shipped series); float16 and dynamic-range keep it "
                        "(17.04, 17.02)"}

    def build_backbone(self, x: Any) -> Any:
        style = LayerStyle(seed=self.seed, batch_norm="none")
        if self.encoder in ("lstm", "gru"):
            return recurrent_stack(x, self.units, 1, cell=self.encoder, seed=self.seed)
        if self.encoder == "conv1d":
            x = conv1d_block(x, self.units, style, "conv1d_0", kernel_size=3, padding="causal")
            x = conv1d_block(x, self.units, style, "conv1d_1", kernel_size=3, padding="causal")
            return sequence_pool(x, "last")
        import keras

        x = keras.layers.Dense(self.units, name="token_projection")(x)
        x = positional_embedding(x, "sinusoidal")
        x = transformer_encoder(x, 1, 2, self.units * 2, seed=self.seed)
        return sequence_pool(x, "last")

    def reference_metrics(self, splits: Any) -> dict[str, Any]:
        """The naive last-value forecast on each part, to compare the model against."""
        out: dict[str, Any] = {}
        for part_name in ("val", "test"):
            part = getattr(splits, part_name, None)
            if part is None or not len(part):
                continue
            x = np.asarray(part.x)
            features, targets = _columns(self.features), _columns(self.targets)
            last = x[:, -1, [features.index(t) for t in targets]]
            pred = np.tile(last, (1, self.horizon))
            err = pred - np.asarray(part.y).reshape(pred.shape)
            out[part_name] = {"mae": float(np.abs(err).mean()), "loss": float((err**2).mean())}
        return {"naive_last_value": out}
