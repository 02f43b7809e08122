"""Sources: image folders, TFDS (mocked: no download, the real tfds.load path)."""

import numpy as np
import pytest

from kflow.data import load_image_folder, load_tfds
from kflow.errors import DataError, UnknownNameError


def _write_images(folder, counts, size=(10, 12)):
    import keras

    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(*size, 3)).astype("uint8")
            keras.utils.save_img(folder / cls / f"{i:03d}.png", pixels)


def test_image_folder_loads_classes_and_resizes(tmp_path):
    _write_images(tmp_path / "pets", {"cats": 3, "dogs": 2})
    data = load_image_folder(tmp_path / "pets", image_size=(8, 8))
    assert data.x.shape == (5, 8, 8, 3) and data.x.dtype == np.float32
    assert data.class_names == ["cats", "dogs"] and data.task == "binary"
    assert data.y.tolist() == [0, 0, 0, 1, 1]
    assert 0.0 <= data.x.min() and data.x.max() <= 255.0
    gray = load_image_folder(tmp_path / "pets", image_size=6, color_mode="grayscale")
    assert gray.x.shape == (5, 6, 6, 1)


@pytest.mark.parametrize("layout, message", [
    ({}, r"Image folder '.*empty' has no images \(.bmp, .gif, .jpeg, .jpg, .png\) in class "
         r"subfolders. Put each class's images in a subfolder named after it"),
    ({"cats": 0, "dogs": 0}, r"Image folder '.*empty' has no images"),
    ({"cats": 2, "dogs": 0}, r"Class folder\(s\) \['dogs'\] of '.*empty' hold no images; add "
                             r"images or remove those folders."),
])
def test_image_folder_without_images(tmp_path, layout, message):
    folder = tmp_path / "empty"
    folder.mkdir()
    _write_images(folder, layout)
    with pytest.raises(DataError, match=message):
        load_image_folder(folder)


def test_image_folder_with_loose_images_or_missing(tmp_path):
    _write_images(tmp_path, {"flat": 2})
    with pytest.raises(DataError, match=r"has no images .* in class subfolders; its 2 images "
                                        r"are not in class subfolders"):
        load_image_folder(tmp_path / "flat")
    with pytest.raises(DataError, match=r"Image folder '.*nowhere' does not exist; expected a "
                                        r"folder with one subfolder of images per class"):
        load_image_folder(tmp_path / "nowhere")


def test_tfds_by_name_and_split_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        data = load_tfds("mnist", split="train")
        few = load_tfds("mnist", split="test", max_examples=5, image_size=(8, 8))
    assert data.x.shape == (24, 28, 28, 1) and data.x.dtype == np.float32
    assert data.y.dtype == np.int64 and data.task == "multiclass"
    assert data.class_names == [str(i) for i in range(10)] and data.num_classes == 10
    assert data.meta["source"] == "tfds:mnist" and data.meta["split"] == "train"
    assert few.x.shape == (5, 8, 8, 1)


def test_tfds_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match=r"Unknown TFDS dataset 'mnits' \(did you mean "
                                               r"'mnist'\?\)"):
        load_tfds("mnits", download=False)
