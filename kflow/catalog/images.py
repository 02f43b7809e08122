"""images: a small CNN on any folder of class subfolders, read from disk per batch.

```
kflow train images --set path=photos/     # photos/cats/*.jpg, photos/dogs/*.jpg, ...
```

The images are decoded and resized batch by batch each epoch
(`kflow.data.streaming.ImageFolderStream`), so the folder may be larger than
memory; `streaming: false` loads it whole instead. The input scaling is
fitted on a sample of the training images and saved inside the model.
"""

from __future__ import annotations

from kflow import LayerChoices, Recipe, hp
from kflow.blocks.layers import conv_stages, dense_block
from kflow.errors import ConfigError
from kflow.recipe.transfer import TransferLearning


class ImageFolderCNN(TransferLearning, LayerChoices, Recipe):
    """Conv stages (two convs + max-pool each), global pooling, a dense block."""

    name = "images"
    description = ("CNN on a folder of class subfolders of images (set path), read from disk "
                   "per batch.")
    defaults = {"dropout": 0.25, "epochs": 20}

    path = hp.Str("", group="data", doc="Folder with one subfolder of images per class "
                  "(relative paths: from the YAML file's folder).")
    image_size = hp.Int(64, low=8, group="data", doc="Images are resized to this height "
                        "and width.")
    color_mode = hp.Choice("rgb", ["rgb", "grayscale", "rgba"], group="data",
                           doc="Channels the images are decoded to.")
    streaming = hp.Bool(True, group="data", doc="Decode the images from disk per batch "
                        "(false: load them all into memory).")
    sample_rows = hp.Int(1000, low=1, group="data",
                         doc="Training images the input scaling is fitted on (streaming).")
    filters = hp.Int(16, low=1, doc="Filters of the first conv stage (doubled each stage).",
                     search=(8, 64, "log"))
    stages = hp.Int(2, low=1, high=5, doc="Conv stages (two convs + 2x2 max-pool each).",
                    search=(1, 4))
    dense_units = hp.Int(64, low=1, doc="Units of the dense block before the head.",
                         search=(32, 256, "log"))

    def config(self):
        cfg = super().config()
        if self.path:
            cfg["data"]["path"] = str(self.resolve_path(self.path).resolve())
        return cfg

    def load_data(self):
        if not self.path:
            raise ConfigError("The images recipe needs `path`: a folder with one subfolder of "
                              "images per class (--set path=photos/).")
        folder = self.resolve_path(self.path)
        size = (self.image_size, self.image_size)
        if self.streaming:
            from kflow.data.streaming import ImageFolderStream

            return ImageFolderStream(folder, size, color_mode=self.color_mode,
                                     sample_rows=self.sample_rows)
        from kflow.data.images import load_image_folder

        return load_image_folder(folder, size, color_mode=self.color_mode)

    def build_backbone(self, x):
        import keras

        style = self.layer_style()
        x = conv_stages(x, self.stages, self.filters, style)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return dense_block(x, self.dense_units, style, "dense")
