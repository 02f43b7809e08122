"""Building blocks: initializers, regularizers, activations and layer blocks.

Importing this package does not import keras: the registries (and their
names) can be used to validate configs cheaply. Keras is imported when a
block, initializer or layer is built.
"""

from __future__ import annotations

from typing import Any

from kflow.blocks.activations import (
    ACTIVATIONS,
    RELU_FAMILY,
    activation_layer,
    is_relu_family,
)
from kflow.blocks.initializers import (
    INITIALIZERS,
    get_initializer,
    register_custom_objects,
)
from kflow.blocks.layers import (
    LayerStyle,
    conv_block,
    conv_stages,
    dense_block,
    dense_residual_block,
    residual_block,
)
from kflow.blocks.regularizers import REGULARIZERS, get_regularizer

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "REGULARIZERS",
    "RELU_FAMILY",
    "LayerStyle",
    "UniformFanIn",
    "activation_layer",
    "conv_block",
    "conv_stages",
    "dense_block",
    "dense_residual_block",
    "get_initializer",
    "get_regularizer",
    "is_relu_family",
    "register_custom_objects",
    "residual_block",
]


def __getattr__(name: str) -> Any:
    # Keras classes are loaded on first access only (PEP 562).
    if name == "UniformFanIn":
        from kflow.blocks.keras_objects import UniformFanIn

        return UniformFanIn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
