"""lecture-mlp: the lecture's experiments on one small MLP.

Depth, activation, initialization (or a plain `init_scale`), BatchNorm, skip
connections, dropout, L2 and input scaling are all hyperparameters, so each
claim of the lecture is one YAML file beside this one (`deep_sigmoid.yaml`,
`deep_relu_bn.yaml`, ...) or one `--set`:

    kflow train recipes/lecture/deep_sigmoid.yaml     # vanishing gradients
    kflow doctor runs/lecture-mlp-*                   # ... and the doctor says so

Datasets (all bundled or generated, no download):

- `digits`: scikit-learn's 8x8 digits, 64 pixel features in [0, 16], 10 classes.
- `scales`: 2000 samples, 8 informative features whose scales range from
  0.001 to 1000, 2 classes: raw inputs with very different scales.
"""

import numpy as np

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import dense_block, dense_residual_block
from kflow.data import Dataset, load_sklearn

#: Feature scales of the `scales` dataset (the label depends on all features equally).
SCALES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e3)


def make_scales(samples: int, seed: int = 0) -> Dataset:
    """Binary labels from standardized features that are given very different scales."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(samples, len(SCALES)))
    w = rng.normal(size=len(SCALES))
    y = (z @ w + 0.3 * rng.normal(size=samples) > 0).astype("int64")
    x = (z * np.asarray(SCALES) + np.asarray(SCALES)).astype("float32")
    return Dataset(x, y, task="binary", class_names=["0", "1"],
                   feature_names=[f"x{i} (scale {s:g})" for i, s in enumerate(SCALES)],
                   name="scales")


class LectureMLP(LayerChoices, Recipe):
    """A plain or residual MLP with every knob the lecture talks about."""

    name = "lecture-mlp"
    description = "Small MLP for the lecture's experiments (depth, activation, init, BN, skips)."
    defaults = {"batch_norm": "none", "epochs": 10, "early_stopping": False}

    dataset = hp.Choice("digits", ["digits", "scales"], group="data",
                        doc="digits (64 pixels, 10 classes) or scales (features at scales "
                        "1e-3..1e3, 2 classes).")
    samples = hp.Int(0, low=0, group="data",
                     doc="Use only the first N samples of the dataset (0: all).")
    label_noise = hp.Float(0.0, low=0.0, high=1.0, group="data",
                           doc="Fraction of labels replaced by random classes (noise a large "
                           "model can memorize: overfitting).")
    hidden_layers = hp.Int(2, low=1, high=64, doc="Number of hidden layers (depth).")
    units = hp.Int(64, low=1, doc="Units per hidden layer.")
    init_scale = hp.Float(
        None, low=0.0, low_inclusive=False, nullable=True,
        doc="Draw hidden kernels from N(0, init_scale^2) instead of `initializer` "
        "(small: vanishing, large: exploding gradients).")
    skip_connections = hp.Bool(False, doc="Residual blocks (identity shortcuts) after the "
                               "first hidden layer.")

    def load_data(self):
        if self.dataset == "scales":
            data = make_scales(self.samples or 2000)
        else:
            data = load_sklearn("digits")
        if self.samples and len(data) > self.samples:
            data = data.subset(np.arange(self.samples))
        if self.label_noise:
            rng = np.random.default_rng(1)
            flip = rng.random(len(data)) < self.label_noise
            data.y[flip] = rng.integers(0, data.num_classes, int(flip.sum()))
        return data

    def layer_style(self):
        style = super().layer_style()
        if self.init_scale:
            style = style.replace(initializer={"name": "random_normal",
                                               "stddev": self.init_scale})
        return style

    def build_backbone(self, x):
        style = self.layer_style()
        x = dense_block(x, self.units, style, "hidden_0")
        if self.skip_connections:
            for i in range(1, self.hidden_layers, 2):
                x = dense_residual_block(x, self.units, style, f"residual_{i}")
            return x
        for i in range(1, self.hidden_layers):
            x = dense_block(x, self.units, style, f"hidden_{i}")
        return x
