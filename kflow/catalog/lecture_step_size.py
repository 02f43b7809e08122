"""lecture-step-size: the lecture's "step size .9 vs .2" slides on a linear model.

Full-batch gradient descent (SGD optimizer, `batch_size: full`) on a linear
regression with correlated, standardized features and the MSE loss. The
loss is a quadratic bowl whose steepest curvature is about
2 * (1 + (features - 1) * correlation) = 5 with the defaults; gradient
descent converges when learning_rate * curvature < 2:

    kflow train lecture-step-size --set learning_rate=0.2   # converges
    kflow train lecture-step-size --set learning_rate=0.9   # jumps across the
                                                            # valley, higher each time
"""

import numpy as np

from kflow import Recipe, hp
from kflow.data import Dataset


class StepSize(Recipe):
    """Linear regression trained by full-batch gradient descent."""

    tflite_not_offered = {
        "int8": "a linear model of a few weights: one int8 scale for them costs 12 % of the "
                "MAE (0.130 vs 0.116) and the int8 file is larger than the float32 one "
                "(quantize/dequantize ops); float16 and dynamic-range keep the MAE"}

    name = "lecture-step-size"
    description = "Linear regression, full-batch GD: step size 0.9 diverges, 0.2 converges."
    defaults = {"optimizer": "sgd", "learning_rate": 0.2, "batch_size": "full", "epochs": 15,
                "early_stopping": False, "grad_log_every": 1}

    features = hp.Int(4, low=1, high=64, group="data", doc="Number of input features.")
    correlation = hp.Float(0.5, low=0.0, high=1.0, high_inclusive=False, group="data",
                           doc="Correlation between every two features.")
    samples = hp.Int(500, low=10, group="data", doc="Number of samples.")

    def load_data(self):
        rng = np.random.default_rng(0)
        d = self.features
        cov = np.full((d, d), self.correlation) + (1 - self.correlation) * np.eye(d)
        x = rng.multivariate_normal(np.zeros(d), cov, size=self.samples)
        y = x @ rng.normal(size=d) + 1.0 + 0.1 * rng.normal(size=self.samples)
        return Dataset(x.astype("float32"), y.astype("float32"), task="regression",
                       feature_names=[f"x{i}" for i in range(d)], name="correlated")

    def build_backbone(self, x):
        return x  # the regression head Dense(1) makes it a linear model

    def build_head(self, x, train):
        """A plain `Dense(1)` on the unscaled target: the lecture's step sizes are for
        this quadratic loss (the default head would scale the target)."""
        import keras

        from kflow.blocks.initializers import get_initializer

        return keras.layers.Dense(1, kernel_initializer=get_initializer(
            "glorot_uniform", seed=self.seed), name="value", dtype="float32")(x)
