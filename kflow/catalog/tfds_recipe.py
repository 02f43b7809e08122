"""tfds: a supervised TensorFlow Datasets set by name (`kflow train tfds --set name=mnist`).

Images get a small CNN, vectors an MLP. The data is read with
`kflow.data.load_tfds` (into memory; use `split` / `max_examples` to read
less); `download: false` uses only what is already in `data_dir`.
"""

from __future__ import annotations

import dataclasses

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import conv_block, dense_block
from kflow.errors import ConfigError


class TfdsRecipe(LayerChoices, Recipe):
    """A CNN (image inputs) or an MLP (vector inputs) on a TFDS dataset."""

    name = "tfds"
    description = "CNN/MLP on a supervised TFDS dataset by name (set name, e.g. mnist)."
    defaults = {"dropout": 0.2, "epochs": 10}
    #: `--set name=mnist` (the recipe's own `name` is "tfds").
    hparam_aliases = {"name": "tfds_name", "data.name": "tfds_name"}

    tfds_name = hp.Str("", group="data", doc="The TFDS name, e.g. mnist or cifar10:3.0.2.")
    split = hp.Str("train", group="data", doc="The TFDS split (expression) to read, e.g. "
                   "train[:10%]; kflow splits it into train/val/test.")
    data_dir = hp.Str(None, nullable=True, group="data", doc="TFDS data folder (none: "
                      "TFDS's default).")
    download = hp.Bool(True, group="data", doc="Download the data when it is not in data_dir.")
    max_examples = hp.Int(None, low=1, nullable=True, group="data",
                          doc="Read at most this many examples (none: all).")
    filters = hp.Int(16, low=1, doc="Filters of the first conv stage (images).",
                     search=(8, 64, "log"))
    units = hp.Int(128, low=1, doc="Units of the dense block.", search=(32, 256, "log"))

    def load_data(self):
        if not self.tfds_name:
            raise ConfigError("The tfds recipe needs the dataset's name: --set name=mnist "
                              "(any supervised TFDS dataset).")
        from kflow.data.tfds import load_tfds

        return load_tfds(self.tfds_name, self.split, data_dir=self.data_dir,
                         download=self.download, max_examples=self.max_examples)

    def build_backbone(self, x):
        import keras

        style = self.layer_style()
        if len(x.shape) == 4:  # images
            conv_style = dataclasses.replace(style, dropout=0.0)
            x = conv_block(x, self.filters, conv_style, "stage0_conv0", pool="max")
            x = conv_block(x, self.filters * 2, conv_style, "stage1_conv0", pool="max")
            x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        elif len(x.shape) > 2:
            x = keras.layers.Flatten(name="flatten")(x)
        return dense_block(x, self.units, style, "dense")
