"""digits-mlp: a multilayer perceptron on scikit-learn's 8x8 handwritten digits."""

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import dense_block, dense_residual_block
from kflow.data import load_sklearn


class DigitsMLP(LayerChoices, Recipe):
    """Dense layers on the 64 pixels of the digits dataset (10 classes)."""

    name = "digits-mlp"
    description = "MLP on scikit-learn digits (64 pixels, 10 classes); optional skip connections."
    defaults = {"dropout": 0.1, "batch_norm": "none", "epochs": 40}

    hidden_layers = hp.Int(2, low=1, high=64, doc="Number of hidden dense layers.",
                           search=(1, 4))
    units = hp.Int(128, low=1, doc="Units per hidden layer.", search=(32, 256, "log"))
    skip_connections = hp.Bool(
        False, doc="Residual blocks (two dense layers + identity shortcut) instead of plain "
        "layers.", search=True)

    def load_data(self):
        return load_sklearn("digits")

    def build_backbone(self, x):
        style = self.layer_style()
        if self.skip_connections:
            x = dense_block(x, self.units, style, "hidden_0")
            for i in range(1, self.hidden_layers, 2):
                x = dense_residual_block(x, self.units, style, f"residual_{i}")
            return x
        for i in range(self.hidden_layers):
            x = dense_block(x, self.units, style, f"hidden_{i}")
        return x
