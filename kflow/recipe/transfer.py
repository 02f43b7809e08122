"""Transfer learning for image recipes: a pretrained backbone, frozen, then fine-tuned.

`TransferLearning` is a recipe mixin (the image recipes mix it in) that
declares, under the same names in every recipe:

| setting              | meaning                                                       |
|----------------------|---------------------------------------------------------------|
| `backbone`           | empty: the recipe's own network, from scratch. A kflow run    |
|                      | directory (`runs/digits-cnn-1a2b3c4d`): its model up to the   |
|                      | layer that feeds its head, with its trained weights (and its  |
|                      | own input scaling). A Keras Applications name                 |
|                      | (`MobileNetV3Small`, `ResNet50`, ...). A KerasHub preset:     |
|                      | a local preset folder (what `save_to_preset` writes) or       |
|                      | `hub:NAME` (`hub:resnet_18_imagenet`; downloads: needs a      |
|                      | network). `pretrain`: the recipe pretrains its own backbone   |
|                      | run first (`digits-transfer`).                                |
| `backbone_weights`   | Applications: a local weights file (`.h5` / `.weights.h5`),   |
|                      | `imagenet` (downloads: needs a network), or empty / `random`  |
|                      | (random initialization). KerasHub: empty (the preset's own    |
|                      | weights), `random`, or a local weights file.                  |
| `backbone_size`      | Applications and KerasHub: images are resized to this side   |
|                      | (>= 32) unless the backbone fixes its own input size.         |
| `freeze_epochs`      | first epochs with the backbone frozen; then fine-tuning.      |
| `fine_tune_layers`   | layers (with weights) of the backbone unfrozen from the top   |
|                      | when fine-tuning starts (0: all).                             |
| `fine_tune_lr_scale` | the learning rate (schedule) is multiplied by this when the   |
|                      | fine-tuning phase starts.                                     |

As in the Keras transfer-learning guide, the backbone is one nested model
(named `backbone`) and its BatchNormalization layers stay in inference mode
in both phases: their moving statistics never change. The guide's
`backbone(x, training=False)` is kept in the graph, but Keras 3 lets the
outer model's `training=True` override it, so the layers are frozen
explicitly: the whole backbone in phase 1, and its BatchNormalization
layers also in phase 2 (a frozen BatchNormalization layer runs in inference
mode in Keras 3). Everything around it is built from
built-in Keras layers (`Resizing`, `Concatenate`, `Conv2D`,
`GlobalAveragePooling2D`), so the saved `model.keras` still opens with plain
Keras and the exported model takes the raw images. A KerasHub backbone is
rebuilt as a plain functional model over the preset's own layers: where those
are all built-in Keras layers (ResNet, for instance) `model.keras` needs
neither kflow nor KerasHub; where the preset uses KerasHub's own layers,
opening `model.keras` needs `keras-hub` installed (the run says so, in a
warning and in `metrics.json`); the SavedModel, TF Serving and TFLite
exports never need it. The recipe's own input scaling feeds every backbone:
a preset's image converter is not applied.

The phases belong to `kflow.training.Trainer.fit`: it asks the recipe for
`fine_tune_plan()` and calls `set_phase(model, phase)`; see there for the
phase boundary in `history.csv` (`phase` column: 1 frozen, 2 fine-tuning),
TensorBoard and the report, and for resuming in either phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kflow.errors import ConfigError
from kflow.recipe.hparams import Float, Int, Str

__all__ = ["TransferLearning", "FineTunePlan", "application_names", "BACKBONE_LAYER",
           "PRETRAIN"]

#: The name of the nested backbone model inside a transfer model.
BACKBONE_LAYER = "backbone"
#: The `backbone` value that asks the recipe to pretrain its own backbone run.
PRETRAIN = "pretrain"
#: The prefix of a KerasHub preset given by name (`hub:resnet_18_imagenet`).
HUB_PREFIX = "hub:"
#: Preset handles KerasHub resolves itself (given with or without `hub:`).
_HUB_SCHEMES = ("kaggle://", "hf://", "modelscope://")
#: Head layers of kflow recipes (`Recipe.build_head`): the backbone ends where they start.
_HEAD_LAYERS = ("probabilities", "probability", "value_scaled")
_NO_BACKBONE = ("", "none")


@dataclass(frozen=True)
class FineTunePlan:
    """The two phases of a transfer run.

    Attributes:
        freeze_epochs: Epochs 1..freeze_epochs train with the backbone frozen.
        layers: Backbone layers (with weights) unfrozen from the top in
            phase 2; 0: all of them.
        lr_scale: Multiplier of the learning rate in phase 2.
    """

    freeze_epochs: int
    layers: int
    lr_scale: float


def application_names() -> list[str]:
    """The Keras Applications architectures `backbone` accepts by name."""
    import keras

    return sorted(n for n in dir(keras.applications)
                  if n[:1].isupper() and callable(getattr(keras.applications, n)))


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith(".") or Path(value).is_dir()


def _is_hub_handle(value: str) -> bool:
    return value.startswith(HUB_PREFIX) or value.startswith(_HUB_SCHEMES)


def is_hub_preset_dir(path: Path) -> bool:
    """Whether `path` is a KerasHub preset folder (`config.json` + `metadata.json`).

    A kflow run directory has neither; a folder written by
    `keras_hub.models.Backbone.save_to_preset` (or downloaded from Kaggle or
    Hugging Face) has both, and its metadata names the KerasHub version.
    """
    import json

    meta = path / "metadata.json"
    if not (path / "config.json").is_file() or not meta.is_file():
        return False
    try:
        found = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and any(k in found for k in ("keras_hub_version",
                                                                 "keras_nlp_version"))


class TransferLearning:
    """Mixin: the `backbone` and fine-tuning settings of image recipes (see the module doc).

    Mix it in before the recipe base classes (`class MyCNN(TransferLearning,
    LayerChoices, Recipe)`); the recipe's own `build_backbone` is used when
    `backbone` is empty. A recipe that can pretrain its backbone itself
    overrides `pretrain_backbone(log)` and defaults `backbone` to `pretrain`.
    """

    backbone = Str(
        "", group="model", nullable=True,
        doc="Start from a pretrained network: a kflow run dir (its layers before the head), "
            "a Keras Applications name (e.g. MobileNetV3Small), a KerasHub preset folder or "
            "hub:NAME (e.g. hub:resnet_18_imagenet; downloads), pretrain (digits-transfer: "
            "its own digits 0-4 run), or empty/none: this recipe's own network from scratch.")
    backbone_weights = Str(
        "", group="model", nullable=True,
        doc="Keras Applications: a local weights file (.h5/.weights.h5), imagenet "
            "(downloads; needs a network), or empty: random initialization. KerasHub: "
            "empty: the preset's weights; random: random initialization; or a weights file.")
    backbone_size = Int(
        32, low=32, group="model",
        doc="Keras Applications and KerasHub backbones: images are resized to this height "
            "and width (unless the backbone fixes its input size).")
    freeze_epochs = Int(
        0, low=0, group="training",
        doc="Epochs trained with the backbone frozen (BatchNorm in inference mode) before "
            "fine-tuning; 0: no frozen phase.")
    fine_tune_layers = Int(
        0, low=0, group="training",
        doc="Backbone layers (with weights) trainable when fine-tuning, from the top; "
            "0: all.")
    fine_tune_lr_scale = Float(
        0.1, low=0.0, high=1.0, low_inclusive=False, group="training",
        doc="Learning rate multiplier from the first fine-tuning epoch (after "
            "freeze_epochs).")

    # -- settings ---------------------------------------------------------------------
    def validate(self) -> None:
        super().validate()  # type: ignore[misc]
        h = self.hparams  # type: ignore[attr-defined]
        owner = self.name or type(self).__name__  # type: ignore[attr-defined]
        value = (h["backbone"] or "").strip()
        if value.lower() in _NO_BACKBONE:
            if (self.default_of("backbone") or "").strip():  # type: ignore[attr-defined]
                return  # a transfer recipe's "from scratch" twin: the phases are skipped
            for key in ("freeze_epochs", "fine_tune_layers", "backbone_weights"):
                if h[key] and h[key] != self.default_of(key):  # type: ignore[attr-defined]
                    raise ConfigError(
                        f"'{key}' of {owner} needs a pretrained `backbone` (a run directory "
                        "or a Keras Applications name); set backbone, or leave "
                        f"{key} at its default.")
            return
        if value == PRETRAIN:
            if type(self).pretrain_backbone is TransferLearning.pretrain_backbone:
                raise ConfigError(
                    f"backbone: {PRETRAIN} is not available for {owner} (it has no pretraining "
                    "step); give a run directory or a Keras Applications name.")
            return
        if _looks_like_path(value) or _is_hub_handle(value):
            return  # checked when the model is built (the run may be trained in between)
        names = application_names()
        if value not in names:
            from kflow.errors import did_you_mean

            raise ConfigError(
                f"Unknown backbone {value!r} for {owner}{did_you_mean(value, names)}: give a "
                "kflow run directory (e.g. runs/digits-cnn-1a2b3c4d), a KerasHub preset "
                "(a preset folder, or hub:NAME) or a Keras Applications name: "
                f"{', '.join(names)}.")

    def _backbone_setting(self) -> str:
        value = (self.hparams["backbone"] or "").strip()  # type: ignore[attr-defined]
        return "" if value.lower() in _NO_BACKBONE else value

    def backbone_kind(self) -> str:
        """"" (own network), "run", "hub" (a KerasHub preset) or "application"."""
        value = self._backbone_setting()
        if not value:
            return ""
        if _is_hub_handle(value):
            return "hub"
        if value == PRETRAIN:
            return "run"
        if _looks_like_path(value):
            path = self.resolve_path(value)  # type: ignore[attr-defined]
            return "hub" if is_hub_preset_dir(path) else "run"
        return "application"

    def fine_tune_plan(self) -> FineTunePlan | None:
        """The two phases, or `None` (no backbone, or no frozen phase)."""
        h = self.hparams  # type: ignore[attr-defined]
        if not self.backbone_kind() or not h["freeze_epochs"]:
            return None
        return FineTunePlan(h["freeze_epochs"], h["fine_tune_layers"], h["fine_tune_lr_scale"])

    # -- the backbone run ---------------------------------------------------------------
    def pretrain_backbone(self, log: Callable[[str], None] | None = None) -> Path:
        """Trains (or reuses) the run this recipe's `backbone: pretrain` starts from."""
        raise NotImplementedError

    def prepare_backbone(self, log: Callable[[str], None] | None = None) -> None:
        """Resolves `backbone` before the model is built (pretraining it when asked).

        Called by `Trainer.build_model` outside the strategy scope, since
        pretraining is a kflow run of its own. Re-seeds afterwards in every
        case, so the model built next does not depend on whether the
        pretrained run had to be trained or was reused.
        """
        value = self._backbone_setting()
        if not value or getattr(self, "_backbone_run", None) is not None:
            return
        if value == PRETRAIN:
            run = Path(self.pretrain_backbone(log))
            from kflow.training.trainer import set_seed

            set_seed(self.seed,  # type: ignore[attr-defined]
                     deterministic=self.hparams["deterministic"] is True)  # type: ignore
        elif self.backbone_kind() == "run":
            run = self.resolve_path(value)  # type: ignore[attr-defined]
        else:
            return
        self._backbone_run = run

    def backbone_run(self) -> Path | None:
        """The run directory the backbone comes from (after `prepare_backbone`)."""
        if self.backbone_kind() != "run":
            return None
        if getattr(self, "_backbone_run", None) is None:
            self.prepare_backbone()
        return self._backbone_run

    # -- model ------------------------------------------------------------------------
    def build_preprocessing(self, inputs: Any, train: Any) -> Any:
        if self.backbone_kind() != "run":
            return super().build_preprocessing(inputs, train)  # type: ignore[misc]
        # A run's backbone starts with that run's own input scaling (fitted on its data):
        # keep the recipe's other preprocessing (augmentation), skip its scaling.
        h = self.hparams  # type: ignore[attr-defined]
        scaling = h["scaling"]
        h["scaling"] = "none"
        try:
            return super().build_preprocessing(inputs, train)  # type: ignore[misc]
        finally:
            h["scaling"] = scaling

    def build_model(self, train: Any) -> Any:
        """Input -> preprocessing -> the pretrained backbone -> head (own network: as usual).

        The recipe's own `build_backbone` is replaced by the pretrained one
        when `backbone` is set (overriding `build_model`, which recipes leave
        alone, keeps the mixin independent of where it sits in the MRO).
        """
        if not self.backbone_kind():
            return super().build_model(train)  # type: ignore[misc]
        import keras

        if isinstance(train.x, dict):
            raise ConfigError("A pretrained backbone needs image inputs, not table columns.")
        inputs = keras.Input(shape=train.x.shape[1:], name="features", dtype="float32")
        x = self.build_preprocessing(inputs, train)
        x = self.build_transfer_backbone(x)
        outputs = self.build_head(x, train)  # type: ignore[attr-defined]
        model_name = (self.name or type(self).__name__).replace("-", "_")  # type: ignore
        return keras.Model(inputs, outputs, name=model_name)

    def build_transfer_backbone(self, x: Any) -> Any:
        """The nested `backbone` model on `x`, called with `training=False`."""
        import keras

        kind = self.backbone_kind()
        if kind == "run":
            net = self._run_backbone(x)
        elif kind == "hub":
            net = self._hub_backbone()
            shape = tuple(net.inputs[0].shape[1:])
            x = self._image_adapter(x, size=shape[:2] if None not in shape[:2] else None,
                                    channels=shape[2] or 3)
        else:
            x = self._image_adapter(x)
            net = self._application_backbone(tuple(x.shape[1:]))
        x = net(x, training=False)  # the guide's call (Keras 3: see set_phase)
        if len(x.shape) == 4:  # a feature map
            x = keras.layers.GlobalAveragePooling2D(name="backbone_pool")(x)
        elif len(x.shape) == 3:  # a sequence of tokens (a ViT's patches)
            x = keras.layers.GlobalAveragePooling1D(name="backbone_pool")(x)
        return x

    def _run_backbone(self, x: Any) -> Any:
        import keras

        from kflow.run import RunDir
        from kflow.run.model_file import load_model_file

        path = self.backbone_run()
        if not path.exists():
            raise ConfigError(
                f"backbone {str(path)!r} does not exist: give a trained kflow run directory "
                "(runs/digits-cnn-1a2b3c4d) or a KerasHub preset folder (config.json, "
                "metadata.json, model.weights.h5).")
        rd = RunDir(path)
        if not rd.model.is_file():
            raise ConfigError(
                f"backbone {str(path)!r} is not a trained kflow run (no {rd.model.name}); "
                "train it first (kflow train RECIPE), or give another run directory.")
        source = load_model_file(rd.model)
        head = next((source.get_layer(n) for n in _HEAD_LAYERS
                     if any(layer.name == n for layer in source.layers)), source.layers[-1])
        expected = tuple(source.inputs[0].shape[1:])
        if len(source.inputs) != 1 or expected != tuple(x.shape[1:]):
            raise ConfigError(
                f"The backbone run {path} takes inputs of shape {expected}; this recipe's "
                f"images are {tuple(x.shape[1:])}. Use a run trained on images of the same "
                "shape.")
        return keras.Model(source.input, head.input, name=BACKBONE_LAYER)

    def _image_adapter(self, x: Any, size: tuple[int, int] | None = None,
                       channels: int = 3) -> Any:
        """Resizes to `size` (default `backbone_size`) and maps the channels to `channels`."""
        import keras

        if len(x.shape) != 4:
            raise ConfigError(
                f"A pretrained image backbone needs images (height, width, channels); this "
                f"recipe's inputs have shape {tuple(x.shape[1:])}.")
        side = self.hparams["backbone_size"]  # type: ignore[attr-defined]
        size = tuple(size) if size else (side, side)
        if tuple(x.shape[1:3]) != size:
            x = keras.layers.Resizing(*size, name="backbone_resize")(x)
        have = x.shape[-1]
        if have == 1 and channels == 3:
            x = keras.layers.Concatenate(axis=-1, name="backbone_rgb")([x, x, x])
        elif have != channels:
            x = keras.layers.Conv2D(channels, 1, name="backbone_channels")(x)
        return x

    def _hub_backbone(self) -> Any:
        """The KerasHub preset's backbone as a plain functional model named `backbone`."""
        import keras

        value = self._backbone_setting()
        kind = "preset folder" if not _is_hub_handle(value) else "preset"
        preset = (str(self.resolve_path(value))  # type: ignore[attr-defined]
                  if kind == "preset folder" else value.removeprefix(HUB_PREFIX))
        try:
            import keras_hub
        except ImportError as exc:
            raise ConfigError(
                f"backbone {value!r} is a KerasHub {kind}, and KerasHub is not installed: "
                "pip install 'kflow[hub]' (or keras-hub).") from exc
        weights = (self.hparams["backbone_weights"] or "").strip()  # type: ignore[attr-defined]
        if weights == "imagenet":
            raise ConfigError(
                "backbone_weights: imagenet is for Keras Applications; a KerasHub preset "
                "carries its own weights (leave backbone_weights empty), or give random or a "
                "weights file.")
        own_weights = weights == ""
        try:
            hub = keras_hub.models.Backbone.from_preset(preset, load_weights=own_weights)
        except Exception as exc:  # KerasHub raises ValueError, OSError, requests' errors...
            hint = ("" if kind == "preset folder" else
                    " A preset given by name downloads from Kaggle or Hugging Face and needs a "
                    "network; offline, give a local preset folder (what "
                    "`backbone.save_to_preset(folder)` writes).")
            raise ConfigError(f"KerasHub {kind} {preset!r} could not be loaded: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0]}.{hint}"
                              ) from exc
        if len(hub.inputs) != 1 or len(hub.inputs[0].shape) != 4 or isinstance(
                hub.output, (dict, list, tuple)):
            raise ConfigError(
                f"KerasHub {kind} {preset!r} is a {type(hub).__name__}, not an image "
                "backbone (one image input, one feature map out).")
        if weights and weights.lower() != "random":
            self._load_weights_file(hub, weights,
                                    f"the KerasHub {type(hub).__name__} of {preset!r}")
        net = keras.Model(hub.inputs, hub.output, name=BACKBONE_LAYER)
        own = [layer for layer in _all_layers(net)
               if not type(layer).__module__.startswith("keras.")]
        for layer in own:  # what keras.saving.load_model will do with each of them
            try:
                type(layer).from_config(layer.get_config())
            except Exception as exc:  # noqa: BLE001 - whatever the layer raises
                raise ConfigError(
                    f"KerasHub {keras_hub.__version__}'s {type(layer).__name__} (in {preset!r}) "
                    "does not rebuild from its own config, so a model.keras holding it could "
                    f"not be opened again ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}). Use a backbone built from layers "
                    "that round-trip (KerasHub's ResNet, EfficientNet, DenseNet, VGG, ...), or "
                    "a newer keras-hub.") from exc
        foreign = sorted({type(layer).__name__ for layer in own})
        self._backbone_needs = "keras-hub" if foreign else ""
        if foreign:
            import warnings

            warnings.warn(
                f"The KerasHub backbone {preset!r} uses KerasHub's own layers "
                f"({', '.join(foreign)}): opening this run's model.keras needs keras-hub "
                "installed. Its SavedModel, TF Serving and TFLite exports do not.",
                stacklevel=2)
        return net

    def _application_backbone(self, shape: tuple[int, ...]) -> Any:
        import keras

        name = self._backbone_setting()
        weights = (self.hparams["backbone_weights"] or "").strip()  # type: ignore[attr-defined]
        if weights.lower() == "random":
            weights = ""
        kwargs: dict[str, Any] = {"include_top": False, "input_shape": shape,
                                  "weights": "imagenet" if weights == "imagenet" else None}
        try:
            app = getattr(keras.applications, name)(**kwargs)
        except ValueError as exc:
            raise ConfigError(f"Keras Applications {name} cannot be built for inputs {shape}: "
                              f"{exc}") from exc
        if weights and weights != "imagenet":
            self._load_weights_file(app, weights, f"{name} without its top (include_top=False)")
        return keras.Model(app.input, app.output, name=BACKBONE_LAYER)

    def _load_weights_file(self, net: Any, weights: str, what: str) -> None:
        """Loads the `backbone_weights` file into `net`, with one-line errors."""
        path = self.resolve_path(weights)  # type: ignore[attr-defined]
        if not path.is_file():
            raise ConfigError(f"backbone_weights file {str(path)!r} does not exist.")
        try:
            net.load_weights(str(path))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"backbone_weights {str(path)!r} do not fit {what}: {exc}"
                              ) from exc

    # -- phases -----------------------------------------------------------------------
    def set_phase(self, model: Any, phase: int) -> None:
        """Phase 1: the backbone frozen. Phase 2: all or the top `fine_tune_layers` trainable.

        BatchNormalization layers stay frozen in phase 2 too (inference mode).

        Changing `trainable` needs a new `compile` to take effect (the trainer does it).
        """
        import keras

        net = _find_backbone(model)
        if phase == 1:
            net.trainable = False
            return
        net.trainable = True
        top = self.hparams["fine_tune_layers"]  # type: ignore[attr-defined]
        if top:
            weighted = [layer for layer in net.layers if layer.weights]
            for layer in weighted[:-top]:
                layer.trainable = False
        for layer in _all_layers(net):  # BatchNorm in inference mode: its statistics kept
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False

    def reference_metrics(self, splits: Any) -> dict[str, Any]:
        found = dict(super().reference_metrics(splits))  # type: ignore[misc]
        kind = self.backbone_kind()
        if kind:
            plan = self.fine_tune_plan()
            found["transfer"] = {
                "backbone": str(self.backbone_run()) if kind == "run"
                else self._backbone_setting(),
                "kind": kind,
                **({"model_keras_needs": self._backbone_needs}
                   if getattr(self, "_backbone_needs", "") else {}),
                "freeze_epochs": plan.freeze_epochs if plan else 0,
                "fine_tune_layers": self.hparams["fine_tune_layers"],  # type: ignore
                "fine_tune_lr_scale": plan.lr_scale if plan else 1.0,
            }
        return found


def _all_layers(model: Any) -> list[Any]:
    """The layers of `model` and of the models nested in it."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found += _all_layers(layer)
    return found


def _find_backbone(model: Any) -> Any:
    for layer in model.layers:
        if layer.name == BACKBONE_LAYER:
            return layer
    raise ValueError(f"Model {model.name!r} has no layer named {BACKBONE_LAYER!r}.")


def phase_logger(freeze_epochs: int) -> Any:
    """A callback adding `phase` to each epoch's logs: 1 backbone frozen, 2 fine-tuning.

    `history.csv`, TensorBoard (a `phase` scalar that steps at the boundary)
    and the report's curves read the boundary from it.
    """
    import keras

    class FineTunePhase(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["phase"] = 1.0 if epoch < freeze_epochs else 2.0

    return FineTunePhase()
