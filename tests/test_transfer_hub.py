"""KerasHub backbones (`backbone: PRESET_FOLDER` or `hub:NAME`), offline.

A small KerasHub ResNet is built here and written with `save_to_preset`, the
folder layout KerasHub's downloads have too (config.json, metadata.json,
model.weights.h5); nothing downloads. Named presets are tried only for their
error message without a network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import kflow
from kflow.errors import ConfigError
from kflow.recipe.transfer import is_hub_preset_dir
from kflow.training.trainer import Trainer

keras_hub = pytest.importorskip("keras_hub")


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A tiny ResNet preset folder, with weights no random initialization draws."""
    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    for w in hub.weights:
        if w.path.endswith("kernel"):  # same distribution, not what a seeded draw gives
            w.assign(-np.array(w))
    folder = tmp_path_factory.mktemp("hub") / "tiny_resnet"
    hub.save_to_preset(str(folder))
    return folder, [np.array(w) for w in hub.weights]


def test_a_preset_folder_is_told_apart_from_a_run_directory(preset, tmp_path):
    folder, _ = preset
    assert is_hub_preset_dir(folder)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metadata.json").write_text(json.dumps({"kflow": "run"}))
    assert not is_hub_preset_dir(tmp_path)
    assert Trainer("digits-cnn", verbose=0,
                   set_args=[f"backbone={folder}"]).recipe.backbone_kind() == "hub"
    assert Trainer("digits-cnn", verbose=0,
                   set_args=[f"backbone={tmp_path}"]).recipe.backbone_kind() == "run"


def test_a_kerashub_preset_folder_trains_frozen_then_fine_tunes(preset, tmp_path):
    folder, weights = preset
    run = kflow.train("digits-cnn", epochs=2, run_dir=tmp_path / "run", verbose=0, set_args=[
        f"backbone={folder}", "freeze_epochs=1", "early_stopping=false", "grad_log_every=0"])
    model = run.model
    net = model.get_layer("backbone")
    # The preset's weights were loaded, and moved only in the fine-tuning epoch; the
    # BatchNorm statistics never change (inference mode in both phases).
    pairs = list(zip(net.weights, weights, strict=True))
    stats = [(np.array(v), w) for v, w in pairs if "moving" in v.path]
    assert stats and all(np.array_equal(a, b) for a, b in stats)
    kernels = [(np.array(v), w) for v, w in pairs if v.path.endswith("kernel")]
    assert all(np.allclose(a, b, atol=0.05) and not np.array_equal(a, b) for a, b in kernels)
    assert tuple(model.input.shape[1:]) == (8, 8, 1)
    assert {layer.name for layer in model.layers} >= {"backbone_resize", "backbone_rgb"}
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["transfer"]["kind"] == "hub"
    assert "model_keras_needs" not in metrics["transfer"]  # ResNet: built-in layers only
    rows = _rows(run.run_dir)
    assert [row["phase"] for row in rows] == ["1.0", "2.0"]
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"])  # it learns
    # model.keras opens with plain Keras: neither kflow nor keras_hub importable.
    x = np.random.default_rng(0).uniform(0, 16, size=(3, 8, 8, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["kflow"] = None
        sys.modules["keras_hub"] = None
        import keras, numpy as np
        m = keras.saving.load_model({str(run.run_dir / "model.keras")!r}, safe_mode=True)
        np.save({str(tmp_path / "y.npy")!r}, m.predict(np.load({str(tmp_path / "x.npy")!r}),
                verbose=0))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                   capture_output=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0),
                               atol=1e-5)
    # The exports take the raw 8x8 digits and answer like the model.
    import tensorflow as tf

    from kflow.export.exporter import export_run

    result = export_run(run.run_dir, base=tmp_path / "base", tflite="float32",
                        latency_samples=5)
    serve = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    np.testing.assert_allclose(serve(features=tf.constant(x))["probabilities"].numpy(),
                               model.predict(x, verbose=0), atol=1e-5)
    assert result.tflite_files["float32"].stat().st_size > 100_000  # the ResNet's weights


def _rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_backbone_weights_random_starts_from_random_weights(preset):
    folder, weights = preset
    trainer = Trainer("digits-cnn", verbose=0,
                      set_args=[f"backbone={folder}", "backbone_weights=random"])
    net = trainer.build_model(trainer.splits().train).get_layer("backbone")
    kernels = [(np.array(w), v) for w, v in zip(net.weights, weights, strict=True)
               if w.path.endswith("kernel")]
    assert kernels and not any(np.allclose(a, b) for a, b in kernels)


def test_kerashub_errors_say_what_to_do(preset, tmp_path):
    folder, _ = preset
    trainer = Trainer("digits-cnn", verbose=0, set_args=["backbone=hub:resnet_18_imagenet"])
    with pytest.raises(ConfigError, match="needs a network.*local preset folder"):
        trainer.build_model(trainer.splits().train)  # no network here
    trainer = Trainer("digits-cnn", verbose=0, set_args=["backbone=hub:no_such_preset"])
    with pytest.raises(ConfigError, match="could not be loaded: ValueError: Unknown preset"):
        trainer.build_model(trainer.splits().train)
    trainer = Trainer("digits-cnn", verbose=0,
                      set_args=[f"backbone={folder}", "backbone_weights=imagenet"])
    with pytest.raises(ConfigError, match="carries its own weights"):
        trainer.build_model(trainer.splits().train)
    trainer = Trainer("digits-cnn", verbose=0, set_args=[
        f"backbone={folder}", f"backbone_weights={tmp_path / 'missing.weights.h5'}"])
    with pytest.raises(ConfigError, match="does not exist"):
        trainer.build_model(trainer.splits().train)


def test_a_preset_with_kerashubs_own_layers_says_what_opening_model_keras_needs(tmp_path):
    net = keras_hub.models.EfficientNetBackbone(  # a FusedMBConvBlock: KerasHub's own layer
        width_coefficient=0.25, depth_coefficient=0.25, stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1], stackwise_input_filters=[16, 16],
        stackwise_output_filters=[16, 24], stackwise_expansion_ratios=[1, 4],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "fused"], include_stem_padding=False)
    net.save_to_preset(str(tmp_path / "tiny_efficientnet"))
    with pytest.warns(UserWarning, match="FusedMBConvBlock.*needs keras-hub installed"):
        run = kflow.train("digits-cnn", epochs=1, run_dir=tmp_path / "run", verbose=0,
                          set_args=[f"backbone={tmp_path / 'tiny_efficientnet'}",
                                    "grad_log_every=0"])
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["transfer"]["model_keras_needs"] == "keras-hub"
    loaded = keras.saving.load_model(run.run_dir / "model.keras")  # keras_hub is imported here
    x = np.random.default_rng(1).uniform(0, 16, size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), run.model.predict(x, verbose=0),
                               atol=1e-5)


def test_a_preset_whose_layers_cannot_be_reopened_is_refused_before_training(tmp_path):
    # KerasHub 0.32's ViT layers do not rebuild from their own get_config().
    vit = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=1,
                                       num_heads=2, hidden_dim=16, mlp_dim=32)
    vit.save_to_preset(str(tmp_path / "tiny_vit"))
    trainer = Trainer("digits-cnn", verbose=0, set_args=[f"backbone={tmp_path / 'tiny_vit'}"])
    try:
        model = trainer.build_model(trainer.splits().train)
    except ConfigError as err:
        assert "does not rebuild from its own config" in str(err)
        assert "ViTPatchingAndEmbedding" in str(err)
    else:  # a fixed keras-hub: the ViT's tokens are pooled into the head
        assert model.get_layer("backbone_pool").output.shape == (None, 16)
