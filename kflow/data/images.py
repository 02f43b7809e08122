"""Images: a folder of class subfolders as a `Dataset`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kflow.data.dataset import Dataset
from kflow.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

# The formats `keras.utils.image_dataset_from_directory` reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def load_image_folder(
    path: str | Path,
    image_size: int | Sequence[int] = (64, 64),
    *,
    color_mode: str = "rgb",
    interpolation: str = "bilinear",
    crop_to_aspect_ratio: bool = False,
    batch_size: int = 256,
) -> Dataset:
    """Loads `path/<class name>/<image>` files as a `Dataset` of images.

    Reads with `keras.utils.image_dataset_from_directory` (class names are
    the sorted subfolder names, class ids their index) and resizes every
    image to `image_size`. The images are kept as float32 arrays of raw
    pixel values in [0, 255], rows in file order; kflow splits them, and the
    recipe's preprocessing (scaling, augmentation) lives in the model.

    Args:
        path: The folder holding one subfolder per class.
        image_size: `(height, width)` (or one int for square) to resize to.
            Defaults to `(64, 64)`.
        color_mode: "rgb", "grayscale" or "rgba". Defaults to "rgb".
        interpolation: Resize method ("bilinear", "nearest", "area"...).
            Defaults to "bilinear".
        crop_to_aspect_ratio: Center-crop to the target aspect ratio before
            resizing instead of squashing. Defaults to `False`.
        batch_size: Images decoded per step while reading. Defaults to 256.

    Returns:
        A `Dataset` with `x` of shape (n, height, width, channels).

    Example:

    ```python
    data = kflow.data.load_image_folder("flowers/", image_size=(96, 96))
    data.x.shape, data.class_names  # ((3670, 96, 96, 3), ['daisy', 'roses', ...])
    ```
    """
    import keras

    folder = Path(path)
    if not folder.is_dir():
        where = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(
            f"Image folder '{folder}' {where}; expected a folder with one subfolder of "
            "images per class (e.g. cats/001.png, dogs/001.png)."
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    counts = {
        c: sum(1 for f in (folder / c).rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        for c in classes
    }
    if not sum(counts.values()):
        loose = sum(1 for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        hint = (f"; its {loose} images are not in class subfolders" if loose else "")
        raise DataError(
            f"Image folder '{folder}' has no images ({', '.join(IMAGE_EXTENSIONS)}) in class "
            f"subfolders{hint}. Put each class's images in a subfolder named after it "
            "(e.g. cats/001.png, dogs/001.png)."
        )
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise DataError(
            f"Class folder(s) {empty} of '{folder}' hold no images; add images or "
            "remove those folders."
        )
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    ds = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=classes,
        color_mode=color_mode, batch_size=batch_size, image_size=size, shuffle=False,
        interpolation=interpolation, crop_to_aspect_ratio=crop_to_aspect_ratio,
        verbose=False,
    )
    xs, ys = [], []
    for images, labels in ds.as_numpy_iterator():
        xs.append(np.asarray(images, dtype="float32"))
        ys.append(np.asarray(labels, dtype="int64"))
    x, y = np.concatenate(xs), np.concatenate(ys)
    task = "binary" if len(classes) == 2 else "multiclass"
    return Dataset(x, y, task=task, class_names=classes, name=folder.name,
                   meta={"source": str(folder), "image_size": list(size),
                         "color_mode": color_mode})
