"""digits-vit: a tiny Vision Transformer on patches of the 8x8 digits."""

from __future__ import annotations

from typing import Any

from kflow import Recipe, hp
from kflow.blocks.attention import (
    NORM_PLACEMENTS,
    POSITIONAL_EMBEDDINGS,
    add_cls_token,
    patch_embedding,
    positional_embedding,
    sequence_pool,
    transformer_encoder,
)
from kflow.data import Dataset, load_sklearn
from kflow.errors import ConfigError
from kflow.recipe.transfer import TransferLearning


class DigitsViT(TransferLearning, Recipe):
    """Patches -> linear embedding (+ CLS token) + positions -> Transformer encoder -> pool."""

    name = "digits-vit"
    description = "A tiny Vision Transformer on patches of scikit-learn's 8x8 digits."
    defaults = {"epochs": 80, "learning_rate": 2e-3, "patience": 15, "global_clipnorm": 1.0}

    patch_size = hp.Int(2, low=1, high=8, group="model",
                        doc="Side of a square patch in pixels (must divide 8).")
    dim = hp.Int(64, low=1, group="model", doc="Token size (embedding dimension).",
                 search=(16, 128, "log"))
    layers = hp.Int(2, low=1, group="model", doc="Transformer encoder blocks.", search=(1, 4))
    heads = hp.Int(4, low=1, group="model", doc="Attention heads (must divide dim).")
    mlp_dim = hp.Int(128, low=1, group="model", doc="Feed-forward width of each block.")
    dropout = hp.Float(0.1, low=0.0, high=1.0, high_inclusive=False, group="model",
                       doc="Dropout in attention and after each sub-layer.", search=(0.0, 0.3))
    norm = hp.Choice("pre", list(NORM_PLACEMENTS), group="model",
                     doc="LayerNorm before each sub-layer (pre) or after the residual (post).")
    positional = hp.Choice("learned", list(POSITIONAL_EMBEDDINGS), group="model",
                           doc="Position embedding: learned, sinusoidal or none.")
    pooling = hp.Choice("mean", ["mean", "cls"], group="model",
                        doc="Image vector: mean of the patch tokens, or a learned CLS token.")

    def validate(self) -> None:
        super().validate()
        if 8 % self.hparams["patch_size"]:
            raise ConfigError(f"patch_size of {self.name} must divide 8 (1, 2, 4 or 8). "
                              f"Got {self.hparams['patch_size']}.")
        if self.hparams["dim"] % self.hparams["heads"]:
            raise ConfigError(f"dim of {self.name} must be a multiple of heads. Got dim="
                              f"{self.hparams['dim']}, heads={self.hparams['heads']}.")

    def load_data(self) -> Dataset:
        return load_sklearn("digits", images=True)

    def build_backbone(self, x: Any) -> Any:
        x = patch_embedding(x, self.patch_size, self.dim, seed=self.seed)
        if self.pooling == "cls":
            x = add_cls_token(x, seed=self.seed)
        x = positional_embedding(x, self.positional, seed=self.seed)
        x = transformer_encoder(x, self.layers, self.heads, self.mlp_dim, dropout=self.dropout,
                                norm=self.norm, seed=self.seed)
        return sequence_pool(x, self.pooling)
