"""`kflow train images --set path=DIR` (read per batch) and `kflow train tfds --set name=...`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from kflow.cli.main import main
from kflow.data.streaming import ImageFolderStream


def _image_folder(root, n_per_class: int = 24, size: int = 12):
    import keras

    rng = np.random.default_rng(0)
    for c, name in enumerate(["circles", "squares"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, size=(size, size + 2, 3)).astype("uint8")
            img[2:-2, 2:-2, c] = 220  # class signal in channel c
            keras.utils.save_img(root / name / f"{i:03d}.png", img)
    return root


def test_images_recipe_from_the_cli_reads_per_batch(tmp_path, capsys):
    folder = _image_folder(tmp_path / "photos")
    run = tmp_path / "run"
    code = main(["train", "images", "--set", f"path={folder}", "--set", "image_size=8",
                 "--set", "epochs=2", "--set", "filters=4", "--set", "stages=1",
                 "--set", "grad_log_every=0", "--run-dir", str(run), "--quiet"])
    assert code == 0
    info = json.loads((run / "run.json").read_text())
    assert info["input_shape"] == [8, 8, 3] and info["class_names"] == ["circles", "squares"]
    assert info["num_train"] + info["num_val"] + info["num_test"] == 48
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.5


def test_image_stream_same_split_and_pixels_as_in_memory(tmp_path):
    from kflow.data import load_image_folder
    from kflow.data.splits import train_val_test_split

    folder = _image_folder(tmp_path / "photos", n_per_class=10)
    stream = ImageFolderStream(folder, (8, 8), sample_rows=1000)
    parts = stream.stream_splits(0.2, 0.2, seed=3)
    memory = train_val_test_split(load_image_folder(folder, (8, 8)), 0.2, 0.2, 3)
    assert len(parts.train) == len(memory.train) and len(parts.test) == len(memory.test)
    streamed = np.concatenate([x.numpy() for x, _ in parts.test.tf_dataset(4, training=False)])
    # same images (up to order: the stream reads its split's rows in file order)
    np.testing.assert_allclose(np.sort(streamed.reshape(len(streamed), -1).sum(1)),
                               np.sort(memory.test.x.reshape(len(streamed), -1).sum(1)),
                               rtol=1e-5)
    one = [y.numpy() for _, y in parts.train.tf_dataset(4, training=True, seed=0, epoch=2)]
    two = [y.numpy() for _, y in parts.train.tf_dataset(4, training=True, seed=0, epoch=2)]
    np.testing.assert_array_equal(np.concatenate(one), np.concatenate(two))


def test_tfds_recipe_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    run = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=200):
        code = main(["train", "tfds", "--set", "name=mnist", "--set", "epochs=1",
                     "--set", "filters=4", "--set", "units=8", "--set", "grad_log_every=0",
                     "--run-dir", str(run), "--quiet"])
    assert code == 0
    info = json.loads((run / "run.json").read_text())
    assert info["input_shape"] == [28, 28, 1] and len(info["class_names"]) == 10
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["recipe"] == "tfds" and config["data"]["tfds_name"] == "mnist"
