"""digits-resnet: a small residual network (skip connections) on 8x8 digits."""

import dataclasses

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import conv_block, residual_block
from kflow.data import load_sklearn
from kflow.recipe.transfer import TransferLearning


class DigitsResNet(TransferLearning, LayerChoices, Recipe):
    """A ResNet-style CNN: stem conv, residual blocks with identity shortcuts, global pooling."""

    name = "digits-resnet"
    description = "Small ResNet (residual blocks with skip connections) on 8x8x1 digits."
    defaults = {"epochs": 40}

    filters = hp.Int(32, low=1, doc="Filters of the first stage (doubled each stage).",
                     search=(8, 64, "log"))
    stages = hp.Int(2, low=1, high=3, doc="Residual stages; each after the first halves "
                    "the resolution.", search=(1, 3))
    blocks_per_stage = hp.Int(1, low=1, high=8, doc="Residual blocks per stage.",
                              search=(1, 3))

    def load_data(self):
        return load_sklearn("digits", images=True)

    def build_backbone(self, x):
        import keras

        style = self.layer_style()
        x = conv_block(x, self.filters, dataclasses.replace(style, dropout=0.0), "stem")
        for stage in range(self.stages):
            for block in range(self.blocks_per_stage):
                x = residual_block(
                    x, self.filters * 2**stage, dataclasses.replace(style, dropout=0.0),
                    f"stage{stage}_block{block}",
                    strides=2 if (stage > 0 and block == 0) else 1,
                )
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name="pool_dropout")(x)
        return x
