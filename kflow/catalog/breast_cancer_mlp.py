"""breast-cancer-mlp: binary classification on scikit-learn's breast cancer table."""

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import dense_block
from kflow.data import load_sklearn


class BreastCancerMLP(LayerChoices, Recipe):
    """An MLP on 30 standardized tabular features (malignant vs benign)."""

    name = "breast-cancer-mlp"
    description = "Binary MLP on scikit-learn breast_cancer (30 numeric features)."
    defaults = {"dropout": 0.2, "batch_norm": "none", "epochs": 60, "patience": 10}

    hidden_layers = hp.Int(2, low=1, high=16, doc="Number of hidden dense layers.",
                           search=(1, 3))
    units = hp.Int(32, low=1, doc="Units per hidden layer.", search=(8, 128, "log"))

    def load_data(self):
        return load_sklearn("breast_cancer")

    def build_backbone(self, x):
        style = self.layer_style()
        for i in range(self.hidden_layers):
            x = dense_block(x, self.units, style, f"hidden_{i}")
        return x
