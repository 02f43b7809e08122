"""Image augmentation as Keras preprocessing layers, active only in training.

A recipe declares which augmentations it offers with an `Augmentations`
hyperparameter and applies the chosen ones in `build_preprocessing`:

```python
class MyImages(kflow.Recipe):
    augmentation = Augmentations("none", allowed=("rotation", "zoom", "contrast"))

    def build_preprocessing(self, inputs, train):
        x = augment(inputs, self.augmentation, seed=getattr(self, "_seed", None))
        return super().build_preprocessing(x, train)
```

The layers (`RandomFlip`, `RandomRotation`, `RandomZoom`, `RandomCrop`,
`RandomContrast`, `RandomTranslation`) draw new transformations at every
training step. They are wrapped in a `TrainingAugmentation` layer that runs
them only in training, so inference (`predict`, `evaluate`, `model(x)`, the
exported SavedModel and TFLite) has no augmentation op and served predictions
are deterministic. A run's saved `model.keras` leaves the wrapper out
altogether (it is identity at inference), so plain Keras opens it without
kflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kflow.errors import ConfigError, did_you_mean
from kflow.recipe.hparams import HParam

__all__ = ["AUGMENTATIONS", "Augmentations", "augmentation_layers", "augment"]

AUGMENTATIONS = {
    "flip": "mirror left-right (RandomFlip horizontal)",
    "flip_vertical": "mirror top-bottom (RandomFlip vertical)",
    "rotation": "rotate by up to +-strength * 360 degrees / 2 (RandomRotation)",
    "zoom": "zoom in or out by up to strength (RandomZoom)",
    "crop": "crop a random (1 - strength) window, resized back (RandomCrop + Resizing)",
    "contrast": "scale the contrast by up to 1 +- 2 * strength (RandomContrast)",
    "translation": "shift by up to +-strength of the height and width, at least one pixel, "
                   "filling with zeros (RandomTranslation)",
}


def _parse_names(value: Any) -> list[str] | None:
    """`"rotation, zoom"`, `["rotation", "zoom"]`, `"none"` -> names (None if malformed)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.replace("+", ",").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return None
    names = [v.strip().lower() for v in value]
    return [] if names in ([], ["none"]) else names


class Augmentations(HParam):
    """A hyperparameter choosing a set of augmentations, e.g. `rotation,zoom`.

    Accepts "none", a comma-separated string or a list; validates each name
    against the augmentations the recipe offers (`allowed`), so a recipe for
    digits can leave flips out.

    Args:
        default: The default set. Defaults to "none".
        allowed: The names this recipe offers. Defaults to all of
            `AUGMENTATIONS`.
        **kwargs: See `kflow.hp.HParam` (`doc`, `group`...); group defaults
            to "data".
    """

    type_name = "augmentation list"

    def __init__(self, default: Any = "none", *,
                 allowed: Sequence[str] | None = None, **kwargs: Any):
        self.allowed = list(allowed) if allowed is not None else list(AUGMENTATIONS)
        unknown = [a for a in self.allowed if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"Unknown augmentations {unknown}; known: {list(AUGMENTATIONS)}")
        kwargs.setdefault("group", "data")
        super().__init__(default, **kwargs)

    def describe(self) -> str:
        return "none, or a comma-separated list of: " + ", ".join(self.allowed)

    def parse(self, text: str) -> Any:
        return text

    def _validate(self, value: Any, owner: str) -> list[str]:
        names = _parse_names(value)
        if names is None:
            raise self._fail(value, owner)
        for name in names:
            if name not in self.allowed:
                why = (" (not offered by this recipe)" if name in AUGMENTATIONS
                       else did_you_mean(name, self.allowed))
                raise self._fail(value, owner, extra=f": {name!r} is not allowed{why}")
        return list(dict.fromkeys(names))


def augmentation_layers(
    names: Sequence[str] | str,
    *,
    image_size: Sequence[int],
    value_range: Sequence[float] = (0.0, 255.0),
    strength: float = 0.1,
    seed: int | None = None,
) -> list[Any]:
    """The Keras preprocessing layers for `names`, in the order given.

    Args:
        names: Augmentation names (see `AUGMENTATIONS`), a list or a
            comma-separated string; "none" for no layers.
        image_size: `(height, width)` of the images (for "crop" and
            "translation").
        value_range: `(low, high)` of the raw pixel values, which
            `RandomContrast` clips to. Defaults to `(0, 255)`.
        strength: How strong each augmentation is (see `AUGMENTATIONS`).
            Defaults to 0.1. "translation" shifts by at least one pixel
            whatever the strength: on an 8x8 image, 0.1 of the side would be
            a sub-pixel shift, which only blurs it.
        seed: Base seed; layer i uses `seed + i`. Defaults to `None`.
    """
    import keras

    parsed = _parse_names(names)
    if parsed is None:
        raise ConfigError(f"Augmentation names must be a list or a comma-separated string. "
                          f"Got {names!r} instead.")
    layers: list[Any] = []
    height, width = int(image_size[0]), int(image_size[1])
    for i, name in enumerate(parsed):
        s = None if seed is None else seed + i
        if name == "flip":
            layers.append(keras.layers.RandomFlip("horizontal", seed=s, name="augment_flip"))
        elif name == "flip_vertical":
            layers.append(keras.layers.RandomFlip("vertical", seed=s,
                                                  name="augment_flip_vertical"))
        elif name == "rotation":
            layers.append(keras.layers.RandomRotation(strength / 2, seed=s,
                                                      name="augment_rotation"))
        elif name == "zoom":
            layers.append(keras.layers.RandomZoom(strength, seed=s, name="augment_zoom"))
        elif name == "crop":
            crop_h = max(1, round(height * (1 - strength)))
            crop_w = max(1, round(width * (1 - strength)))
            # At inference RandomCrop passes the image through and Resizing to the
            # same size is exact, so the pair is the identity there.
            layers.append(keras.layers.RandomCrop(crop_h, crop_w, seed=s, name="augment_crop"))
            layers.append(keras.layers.Resizing(height, width, name="augment_crop_resize"))
        elif name == "contrast":
            layers.append(keras.layers.RandomContrast(
                strength * 2, value_range=tuple(value_range), seed=s, name="augment_contrast"))
        elif name == "translation":
            # Fractions of the side; zeros come in at the border (the background of a
            # digit, the padding of the classic pad-and-crop shift).
            layers.append(keras.layers.RandomTranslation(
                max(strength, 1 / height), max(strength, 1 / width), fill_mode="constant",
                seed=s, name="augment_translation"))
        else:
            raise ConfigError(
                f"Unknown augmentation '{name}'{did_you_mean(name, list(AUGMENTATIONS))}. "
                f"Allowed: {', '.join(AUGMENTATIONS)}."
            )
    return layers


def augment(
    x: Any,
    names: Sequence[str] | str,
    *,
    value_range: Sequence[float] = (0.0, 255.0),
    strength: float = 0.1,
    seed: int | None = None,
) -> Any:
    """Applies the augmentation layers for `names` to the image tensor `x`.

    Call it in a recipe's `build_preprocessing` on the raw image input. The
    layers are wrapped in one `TrainingAugmentation` layer named
    "augmentation": they transform only when called with `training=True`
    (`fit`), and pass images through unchanged otherwise (`predict`,
    `evaluate`, `model(x)`, the exported SavedModel). See
    `augmentation_layers` for the arguments; no names gives `x` back.

    Example:

    ```python
    inputs = keras.Input((32, 32, 3))
    x = kflow.data.augment(inputs, "flip,rotation,zoom", seed=0)
    ```
    """
    from kflow.data.training_augmentation import TrainingAugmentation

    layers = augmentation_layers(names, image_size=tuple(x.shape[1:3]),
                                 value_range=value_range, strength=strength, seed=seed)
    return TrainingAugmentation(layers, name="augmentation")(x) if layers else x
