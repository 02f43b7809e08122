"""digits-cnn: a small convolutional network on scikit-learn's 8x8 digits."""

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import conv_stages, dense_block
from kflow.data import load_sklearn
from kflow.data.augmentation import Augmentations, augment
from kflow.recipe.transfer import TransferLearning


class DigitsCNN(TransferLearning, LayerChoices, Recipe):
    """Conv blocks (conv -> BN -> ReLU, max-pool) then a dense block on 8x8x1 digits."""

    name = "digits-cnn"
    description = "CNN with conv blocks on scikit-learn digits as 8x8x1 images (10 classes)."
    defaults = {"dropout": 0.25, "epochs": 40}

    filters = hp.Int(32, low=1, doc="Filters of the first conv stage (doubled each stage).",
                     search=(8, 64, "log"))
    stages = hp.Int(2, low=1, high=3, doc="Conv stages (two convs + 2x2 max-pool each).",
                    search=(1, 3))
    dense_units = hp.Int(128, low=1, doc="Units of the dense block before the head.",
                         search=(32, 256, "log"))
    # No flips: a mirrored 2, 3 or 7 is not a digit.
    augmentation = Augmentations(
        "none", allowed=("rotation", "zoom", "contrast", "crop", "translation"),
        doc="Training-only image augmentation, e.g. translation or rotation,zoom (identity "
            "at inference). On these 8x8 images translation (+-1 pixel) shrinks the "
            "train/validation gap; rotation, zoom and crop, which blur them, do not.")

    def load_data(self):
        return load_sklearn("digits", images=True)

    def build_preprocessing(self, inputs, train):
        x = augment(inputs, self.augmentation, value_range=(0.0, 16.0),
                    seed=self.seed)
        return super().build_preprocessing(x, train)

    def build_backbone(self, x):
        import keras

        style = self.layer_style()
        x = conv_stages(x, self.stages, self.filters, style)
        x = keras.layers.Flatten(name="flatten")(x)
        return dense_block(x, self.dense_units, style, "dense")
