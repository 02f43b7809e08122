"""Augmentation: selectable Keras layers, active in training only, absent when exported."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kflow.data import load_sklearn, train_val_test_split
from kflow.data.augmentation import AUGMENTATIONS, augment, augmentation_layers
from kflow.errors import ConfigError
from kflow.recipe.overrides import resolve_recipe

TINY = ["filters=4", "stages=1", "dense_units=8"]


@pytest.fixture(scope="module")
def digits():
    return train_val_test_split(load_sklearn("digits", images=True), seed=0)


def _digits_cnn(*set_args):
    recipe, _ = resolve_recipe("digits-cnn", set_args=[*TINY, *set_args])
    recipe = recipe.with_context(seed=0)
    return recipe


def test_augmentation_hparam_parsing_and_errors():
    assert _digits_cnn().augmentation == []
    assert _digits_cnn("augmentation=rotation, zoom").augmentation == ["rotation", "zoom"]
    with pytest.raises(ConfigError, match=r"The 'augmentation' parameter of digits-cnn must be "
                                          r"none, or a comma-separated list of: rotation, zoom, "
                                          r"contrast, crop, translation. Got 'flip' instead: "
                                          r"'flip' is not allowed \(not offered by this "
                                          r"recipe\)."):
        _digits_cnn("augmentation=flip")
    with pytest.raises(ConfigError, match=r"'rotaton' is not allowed \(did you mean "
                                          r"'rotation'\?\)"):
        _digits_cnn("augmentation=rotaton")


def test_augmentation_off_adds_no_layer_on_adds_one(digits):
    off = _digits_cnn().build_model(digits.train)
    assert "augmentation" not in [layer.name for layer in off.layers]
    on = _digits_cnn("augmentation=rotation,zoom,contrast,crop,translation").build_model(
        digits.train)
    layer = on.get_layer("augmentation")
    assert [a.name for a in layer.augmenters] == [
        "augment_rotation", "augment_zoom", "augment_contrast", "augment_crop",
        "augment_crop_resize", "augment_translation"]


def test_augmentation_runs_in_training_only(digits):
    model = _digits_cnn("augmentation=rotation,zoom,contrast,crop,translation").build_model(
        digits.train)
    x = digits.test.x[:16]
    augmented = keras.Model(model.input, model.get_layer("augmentation").output)
    np.testing.assert_array_equal(augmented(x, training=False), x)
    np.testing.assert_array_equal(augmented(x), x)  # no `training` given, as in an export
    assert np.abs(augmented(x, training=True).numpy() - x).max() > 1.0
    assert augmented(x, training=True).shape == x.shape
    first = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), first)
    np.testing.assert_array_equal(model(x).numpy(), first)


def test_exported_inference_graph_has_no_augmentation(digits, tmp_path):
    model = _digits_cnn("augmentation=rotation,zoom,contrast,crop,translation").build_model(
        digits.train)
    x = digits.test.x[:16]
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "saved_model"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), expected, atol=1e-6)
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                        for n in f.node_def}
    assert "ImageProjectiveTransformV3" not in ops  # rotation / zoom / translation
    assert not {op for op in ops if op.startswith("StatelessRandom")}


def test_augmented_model_trains_and_round_trips(digits, tmp_path):
    model = _digits_cnn("augmentation=rotation,contrast").build_model(digits.train)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.train.x[:64], digits.train.y[:64], epochs=1, batch_size=32, verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    x = digits.test.x[:8]
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_translation_is_a_keras_random_translation_of_at_least_one_pixel():
    (layer,) = augmentation_layers("translation", image_size=(8, 8), seed=3)
    assert isinstance(layer, keras.layers.RandomTranslation)
    config = layer.get_config()
    # strength 0.1 of an 8-pixel side would be a sub-pixel shift: +-1 pixel instead.
    assert (config["height_factor"], config["width_factor"]) == (0.125, 0.125)
    assert (config["fill_mode"], config["seed"]) == ("constant", 3)
    (layer,) = augmentation_layers("translation", image_size=(40, 20), strength=0.2)
    assert (layer.get_config()["height_factor"], layer.get_config()["width_factor"]) == (
        0.2, 0.2)
    x = np.zeros((2, 8, 8, 1), "float32")
    x[:, 2:6, 2:6] = 16.0
    (layer,) = augmentation_layers("translation", image_size=(8, 8), seed=0)
    shifted = np.stack([layer(x, training=True).numpy() for _ in range(8)])
    assert np.abs(shifted - x).max() > 1.0  # it moves the pixels ...
    border = [shifted[..., 0, :, :], shifted[..., 7, :, :], shifted[..., :, 0, :],
              shifted[..., :, 7, :]]
    assert all(np.abs(b).max() < 1e-4 for b in border)  # ... by at most one pixel


def test_translated_model_predicts_unaugmented_and_saves_as_plain_keras(digits, tmp_path):
    from kflow.training.plain_model import to_plain_model

    model = _digits_cnn("augmentation=translation").build_model(digits.train)
    assert [a.name for a in model.get_layer("augmentation").augmenters] == [
        "augment_translation"]
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.train.x[:64], digits.train.y[:64], epochs=1, batch_size=32, verbose=0)
    x = digits.test.x[:16]
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    np.testing.assert_array_equal(model(x).numpy(), expected)
    # What a run saves as model.keras: the same network without the augmentation.
    plain = to_plain_model(model)
    assert not {type(op).__name__ for op in plain.operations} & {
        "TrainingAugmentation", "RandomTranslation"}
    plain.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, atol=1e-6)
    # The live model (with its augmentation layer) round-trips too.
    model.save(tmp_path / "live.keras")
    live = keras.saving.load_model(tmp_path / "live.keras")
    assert isinstance(live.get_layer("augmentation").augmenters[0],
                      keras.layers.RandomTranslation)
    np.testing.assert_allclose(live.predict(x, verbose=0), expected, atol=1e-6)


def test_every_augmentation_keeps_the_image_shape():
    x = np.random.default_rng(0).uniform(0, 255, (4, 12, 10, 3)).astype("float32")
    for name in AUGMENTATIONS:
        out = x
        for layer in augmentation_layers(name, image_size=(12, 10), seed=1):
            out = layer(out, training=True)
        assert out.shape == x.shape, name
    inputs = keras.Input((12, 10, 3))
    assert augment(inputs, "none") is inputs
    with pytest.raises(ConfigError, match=r"Unknown augmentation 'zom' \(did you mean "
                                          r"'zoom'\?\)"):
        augmentation_layers("zom", image_size=(12, 10))
