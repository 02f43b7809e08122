"""The `Recipe` base class: declared hyperparameters, data, backbone and task head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kflow.blocks.activations import ACTIVATIONS
from kflow.blocks.initializers import INITIALIZERS
from kflow.blocks.regularizers import REGULARIZERS
from kflow.errors import ConfigError, did_you_mean
from kflow.optim.optimizers import MOMENTUM_OPTIMIZERS, NESTEROV_OPTIMIZERS, OPTIMIZERS
from kflow.optim.schedules import SCHEDULES
from kflow.recipe.class_weight import ClassWeight
from kflow.recipe.hparams import Bool, Choice, Float, HParam, Int, Switch

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from kflow.data.dataset import Dataset

__all__ = ["Recipe", "LayerChoices", "TASKS", "BatchSize"]

TASKS = ("multiclass", "binary", "regression")


class BatchSize(Int):
    """Batch size: a positive int, or "full" for full-batch gradient descent."""

    def describe(self) -> str:
        return 'an int >= 1, or "full" (the whole training split in one batch)'

    def _validate(self, value: Any, owner: str) -> int | str:
        if isinstance(value, str) and value.strip().lower() == "full":
            return "full"
        return super()._validate(value, owner)


class Recipe:
    """A model recipe: declared hyperparameters, its data and how to build the model.

    Subclasses declare hyperparameters as class attributes (`kflow.hp.Float`,
    `Int`, `Bool`, `Choice`, `Str`), give a registered `name`, and implement
    `load_data()` and `build_backbone()`. The task head, loss and metrics
    follow from the data's task (multiclass, binary or regression); override
    `build_head()` for anything else. Hyperparameters shared by all recipes
    (optimizer, learning rate, schedule, batch size, epochs, splits...) are
    declared here, so every recipe uses the same names.

    Args:
        seed: Seed for initializers and data randomness the recipe controls
            (the trainer passes the run's seed). Defaults to 0.
        config_dir: Folder that relative paths in the recipe's settings are
            resolved against (the YAML config's folder). Defaults to `None`
            (the current directory).
        **hparams: Hyperparameter values overriding the declared defaults.

    Example:

    ```python
    import kflow
    from kflow import hp

    class TinyMLP(kflow.Recipe):
        name = "tiny-mlp"
        description = "A one-hidden-layer MLP on iris."
        units = hp.Int(16, low=1, doc="Hidden units.", search=(8, 64))

        def load_data(self):
            return kflow.data.load_sklearn("iris")

        def build_backbone(self, x):
            return kflow.blocks.dense_block(x, self.units, self.layer_style(), "hidden")

    run = kflow.train(TinyMLP(units=32), epochs=5)
    ```
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    #: TFLite variants this recipe's models do not convert well, with the reason
    #: (`{"int8": "..."}`): recorded in `run.json`; `kflow export --tflite all`
    #: skips them and asking for one by name is an error that says why.
    tflite_not_offered: ClassVar[dict[str, str]] = {}

    # -- optimizer ------------------------------------------------------------
    optimizer = Choice(
        "adam", registry=OPTIMIZERS, group="optimizer",
        doc="Optimizer that applies the gradient updates.",
        search=["adam", "sgd", "rmsprop"],
    )
    learning_rate = Float(
        1e-3, low=0.0, low_inclusive=False, group="optimizer",
        doc="Step size eta of the update w <- w - eta * dLoss/dw.",
        search=(1e-4, 1e-1, "log"),
    )
    momentum = Float(
        0.0, low=0.0, high=1.0, high_inclusive=False, group="optimizer",
        doc="Momentum (SGD and RMSprop only): remembers past directions.",
        requires={"optimizer": sorted(MOMENTUM_OPTIMIZERS)},
    )
    nesterov = Bool(False, group="optimizer", doc="Nesterov momentum (SGD only).",
                    requires={"optimizer": sorted(NESTEROV_OPTIMIZERS)})
    weight_decay = Float(
        0.0, low=0.0, group="optimizer",
        doc="Decoupled weight decay (AdamW, or any optimizer's weight_decay).",
    )
    lr_schedule = Choice(
        "constant", registry=SCHEDULES, group="optimizer",
        doc="Learning-rate schedule over training.",
    )
    warmup_epochs = Int(0, low=0, group="optimizer", doc="Linear warm-up epochs.",
                        requires={"lr_schedule": ("constant", "cosine")})
    decay_rate = Float(
        0.5, low=0.0, high=1.0, low_inclusive=False, group="optimizer",
        doc="Multiplier per decay period (step / exponential), or per plateau (plateau).",
        requires={"lr_schedule": ("exponential", "step", "plateau")},
    )
    plateau_patience = Int(
        3, low=1, group="optimizer",
        doc="Epochs without improvement of the monitored metric before the plateau "
        "schedule multiplies the rate by decay_rate.",
        requires={"lr_schedule": ("plateau",)},
    )
    decay_epochs = Int(10, low=1, group="optimizer", doc="Epochs per decay period.",
                       requires={"lr_schedule": ("exponential", "step")})
    clipnorm = Float(
        None, low=0.0, low_inclusive=False, nullable=True, group="optimizer",
        doc="Clip each variable's gradient to this L2 norm (none: off).",
    )
    global_clipnorm = Float(
        None, low=0.0, low_inclusive=False, nullable=True, group="optimizer",
        doc="Clip the global gradient norm of all variables (none: off).",
    )
    ema = Bool(
        False, group="optimizer",
        doc="Keep an exponential moving average of the weights (Keras use_ema); validation, "
        "checkpoints and the saved model use it.",
    )
    ema_momentum = Float(
        0.99, low=0.0, high=1.0, high_inclusive=False, group="optimizer",
        doc="EMA momentum m: average <- m * average + (1 - m) * weights, each step.",
        requires={"ema": (True,)},
    )
    grad_accumulation = Int(
        1, low=1, group="optimizer",
        doc="Apply the mean gradient of N batches at once (Keras gradient_accumulation_steps): "
        "effective batch = N * batch_size at the same learning rate.",
    )
    # -- training -------------------------------------------------------------
    class_weight = ClassWeight(
        "none", group="training",
        doc="Loss weight per class: none, balanced (n / (k * n_class) on the training split), "
        "or {class: weight}.",
    )
    label_smoothing = Float(
        0.0, low=0.0, high=1.0, high_inclusive=False, group="training",
        doc="Classification targets y * (1 - s) + s / k (k classes; 2 for binary).",
    )
    epochs = Int(30, low=1, group="training", doc="Maximum number of epochs.")
    batch_size = BatchSize(
        32, low=1, group="training",
        doc='Samples per update: 1 = stochastic GD, "full" = full-batch GD.',
        search=(16, 128, "log"),
    )
    early_stopping = Bool(True, group="training", doc="Stop when val_loss stops improving.")
    patience = Int(8, low=1, group="training", doc="Epochs without improvement before stopping.")
    steps_per_execution = Int(
        0, low=0, group="training",
        doc="Train steps fused per tf.function call (0: chosen automatically).",
    )
    grad_log_every = Int(
        32, low=0, group="training",
        doc="Log per-layer gradient norms, update ratios and dead ReLUs every N steps "
            "(0: off); automatic steps_per_execution is at most N.",
    )
    precision = Choice(
        "float32", ["float32", "mixed_float16", "mixed_bfloat16"], group="training",
        doc="Compute dtype: float32, or mixed (float16 with loss scaling, bfloat16); "
            "variables, head and saved model stay float32.",
    )
    jit_compile = Switch(
        "auto", group="training",
        doc="XLA-compile the train step: auto (Keras decides; off on CPU), true or false.",
    )
    deterministic = Switch(
        "auto", group="training",
        doc="Deterministic TF ops: auto = on without a GPU (free on CPU), off on GPUs "
            "(costs speed there); config.yaml records the value used.",
    )
    # -- data -----------------------------------------------------------------
    val_fraction = Float(
        0.15, low=0.0, high=1.0, high_inclusive=False, group="data",
        doc="Fraction of the data held out for validation.",
    )
    test_fraction = Float(
        0.15, low=0.0, high=1.0, high_inclusive=False, group="data",
        doc="Fraction of the data held out for the final test.",
    )
    scaling = Choice(
        "standard", ["standard", "minmax", "none"], group="data",
        doc="Input scaling fitted on the training split: mean 0/std 1, [0, 1], or none.",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        specs = cls.hparam_specs()
        for key in cls.__dict__.get("defaults", {}):
            if key not in specs:
                raise TypeError(f"{cls.__name__}.defaults names unknown hyperparameter {key!r}")
        if cls.__dict__.get("name"):
            from kflow.recipe.registry import register_recipe

            register_recipe(cls)

    def __init__(self, *, seed: int = 0, config_dir: str | Path | None = None,
                 **hparams: Any):
        self.seed = int(seed)
        self.config_dir = Path(config_dir) if config_dir is not None else None
        specs = self.hparam_specs()
        self.hparams: dict[str, Any] = {}
        for key in hparams:
            if key not in specs:
                raise ConfigError(self._unknown_message(key))
        for key, spec in specs.items():
            value = hparams.get(key, self.default_of(key))
            self.hparams[key] = spec.validate(value, owner=self.name or type(self).__name__)
        self.validate()

    # -- declarations ---------------------------------------------------------
    @classmethod
    def hparam_specs(cls) -> dict[str, HParam]:
        """All declared hyperparameters (inherited first), by name."""
        specs: dict[str, HParam] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, HParam):
                    specs[key] = value
        return specs

    @classmethod
    def default_of(cls, key: str) -> Any:
        for klass in cls.__mro__:
            if key in vars(klass).get("defaults", {}):
                return vars(klass)["defaults"][key]
        return cls.hparam_specs()[key].default

    @classmethod
    def _unknown_message(cls, key: str) -> str:
        specs = cls.hparam_specs()
        owner = cls.name or cls.__name__
        return (
            f"Unknown hyperparameter '{key}' for recipe {owner}"
            f"{did_you_mean(key, list(specs))}. "
            f"Run `kflow recipes show {owner}` to list them."
        )

    def validate(self) -> None:
        """Checks combinations of values; override (and call super) to add your own.

        The declared conditions (`requires=` of each hyperparameter) are checked
        here: a value other than the default needs its condition to hold.
        """
        owner = self.name or type(self).__name__
        specs = self.hparam_specs()
        for key, spec in specs.items():
            value = self.hparams[key]
            if (not spec.requires or not spec.strict_requires or not value
                    or value == self.default_of(key)):
                continue
            for parent, allowed in spec.requires.items():
                if parent in self.hparams and self.hparams[parent] not in allowed:
                    raise ConfigError(
                        f"The '{key}' parameter of {owner} only applies to {parent}="
                        f"{' or '.join(map(str, allowed))}. Got {parent}="
                        f"{self.hparams[parent]!r} with {key}={value!r}; leave {key} at its "
                        f"default or set {parent} accordingly."
                    )
        if self.hparams["clipnorm"] and self.hparams["global_clipnorm"]:
            raise ConfigError(
                f"Set either 'clipnorm' (per variable) or 'global_clipnorm' for {owner}, "
                "not both."
            )
        if self.hparams["val_fraction"] + self.hparams["test_fraction"] >= 0.9:
            raise ConfigError(
                f"val_fraction + test_fraction of {owner} must be < 0.9 so that "
                f"data is left to train on. Got {self.hparams['val_fraction']} + "
                f"{self.hparams['test_fraction']}."
            )

    def config(self) -> dict[str, dict[str, Any]]:
        """The hyperparameters grouped by section, as written to `config.yaml`."""
        grouped: dict[str, dict[str, Any]] = {}
        for key, spec in self.hparam_specs().items():
            section = grouped.setdefault(spec.group, {})
            section["name" if key == spec.group else key] = self.hparams[key]
        return grouped

    def with_context(self, *, seed: int | None = None,
                     config_dir: str | Path | None = None, **hparams: Any) -> Recipe:
        """A copy with another seed, config folder or hyperparameter values (validated)."""
        return type(self)(
            seed=self.seed if seed is None else seed,
            config_dir=self.config_dir if config_dir is None else config_dir,
            **{**self.hparams, **hparams},
        )

    def resolve_path(self, path: str | Path) -> Path:
        """`path` as given when absolute, else relative to `config_dir` (or the cwd)."""
        path = Path(path).expanduser()
        if path.is_absolute() or self.config_dir is None:
            return path
        return self.config_dir / path

    def __repr__(self) -> str:
        changed = {
            k: v for k, v in self.hparams.items() if v != self.default_of(k)
        }
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"

    # -- data -----------------------------------------------------------------
    def load_data(self) -> Dataset:
        """Returns the full dataset (kflow splits it into train/val/test)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_data().")

    # -- model ----------------------------------------------------------------
    def layer_style(self) -> Any:
        """The block style (activation, initializer, ...) from the hyperparameters."""
        from kflow.blocks.layers import LayerStyle

        fields = ("activation", "initializer", "regularizer", "regularizer_strength",
                  "dropout", "batch_norm")
        kwargs = {f: self.hparams[f] for f in fields if f in self.hparams}
        return LayerStyle(**kwargs, seed=self.seed)

    def build_preprocessing(self, inputs: Any, train: Dataset) -> Any:
        """Maps raw model inputs to backbone inputs, fitted on the training split only.

        The default scales numeric features as the `scaling` hyperparameter
        says: "standard" (a `Normalization` layer adapted on the training
        split: mean 0, std 1), "minmax" (the training split's per-feature
        min and max map to 0 and 1), or "none". The statistics are layer
        weights, so they travel with the saved and exported model. Tabular
        data (named columns) is imputed, scaled and encoded by
        `kflow.data.preprocess_columns`. Both scale through
        `kflow.data.preprocessing.scaling_layer`.
        """
        import numpy as np

        scaling = self.hparams.get("scaling", "standard")
        if isinstance(train.x, dict):
            from kflow.data.preprocessing import preprocess_columns

            return preprocess_columns(
                inputs, train, scaling=scaling, seed=self.seed,
                categorical_encoding=self.hparams.get("categorical_encoding", "one_hot"),
                embedding_dim=self.hparams.get("embedding_dim", 8),
            )
        from kflow.data.preprocessing import scaling_layer

        layer = scaling_layer(np.asarray(train.x, dtype="float32"), scaling)
        return layer(inputs) if layer is not None else inputs

    def build_backbone(self, x: Any) -> Any:
        """Builds the network body on the preprocessed input tensor `x`."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_backbone().")

    def build_head(self, x: Any, train: Dataset) -> Any:
        """Adds the output layer for the task of the training data."""
        import keras

        from kflow.blocks.initializers import get_initializer

        init = get_initializer("glorot_uniform", seed=self.seed)
        if train.task == "multiclass":
            return keras.layers.Dense(
                train.num_classes, activation="softmax", kernel_initializer=init,
                name="probabilities", dtype="float32",  # float32 head under mixed precision
            )(x)
        if train.task == "binary":
            return keras.layers.Dense(
                1, activation="sigmoid", kernel_initializer=init, name="probability",
                dtype="float32",
            )(x)
        return self.scaled_target_head(x, train, init)

    def scaled_target_head(self, x: Any, train: Dataset, init: Any = None) -> Any:
        """A regression head that learns the target scaled, answering in its units.

        A `Dense` layer predicts the target standardized with the training
        split's mean and standard deviation; a `Normalization(invert=True)`
        layer named "value" maps it back, so the model, its loss and every
        exported artifact work in the target's units while the network's
        last layer sees values around 0 with spread 1 (as for its inputs).
        """
        import keras
        import numpy as np

        y = np.asarray(train.y, dtype="float64").reshape(len(train.y), -1)
        std = y.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x = keras.layers.Dense(y.shape[1], kernel_initializer=init, name="value_scaled",
                               dtype="float32")(x)  # float32 head under mixed precision
        return keras.layers.Normalization(axis=-1, mean=y.mean(axis=0), variance=np.square(std),
                                          invert=True, name="value", dtype="float32")(x)

    def build_model(self, train: Dataset) -> keras.Model:
        """Input -> preprocessing (fitted on `train`) -> backbone -> head.

        Tabular data (`train.x` a dict of columns) gets one named input per column.
        """
        import keras

        if isinstance(train.x, dict):
            from kflow.data.preprocessing import column_inputs

            inputs = column_inputs(train)
        else:
            inputs = keras.Input(shape=train.x.shape[1:], name="features", dtype="float32")
        x = self.build_preprocessing(inputs, train)
        x = self.build_backbone(x)
        outputs = self.build_head(x, train)
        model_name = (self.name or type(self).__name__).replace("-", "_")
        return keras.Model(inputs, outputs, name=model_name)

    def loss(self, task: str) -> Any:
        return {
            "multiclass": "sparse_categorical_crossentropy",
            "binary": "binary_crossentropy",
            "regression": "mean_squared_error",
        }[task]

    def metrics(self, task: str) -> list[Any]:
        import keras

        if task == "multiclass":
            return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if task == "binary":
            return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def reference_metrics(self, splits: Any) -> dict[str, Any]:
        """Baselines to record in `metrics.json` next to the model's (e.g. a naive forecast).

        Args:
            splits: The run's `Splits` (train/val/test `Dataset`s).

        Returns:
            `{key: value}` merged into `metrics.json`. Defaults to `{}`.
        """
        return {}

    def monitor(self, task: str) -> tuple[str, str]:
        """The metric early stopping and checkpoints watch, and its mode."""
        return "val_loss", "min"


class LayerChoices:
    """Mixin declaring the lecture's layer choices under the same names in every recipe.

    Recipes change the defaults with their `defaults` dict, e.g.
    `defaults = {"batch_norm": "none", "dropout": 0.2}`.
    """

    activation = Choice(
        "relu", registry=ACTIVATIONS,
        doc="Hidden-layer activation.", search=["relu", "elu", "gelu", "swish", "tanh"],
    )
    initializer = Choice(
        "he_normal", registry=INITIALIZERS,
        doc="Kernel initializer (uniform_fan_in, glorot_*/xavier_*, he_*, lecun_*, ...).",
        search=["he_normal", "glorot_uniform", "lecun_normal"],
    )
    dropout = Float(
        0.0, low=0.0, high=1.0, high_inclusive=False,
        doc="Dropout rate after each hidden block.", search=(0.0, 0.5),
    )
    batch_norm = Choice(
        "before", ["before", "after", "none"],
        doc="BatchNorm placement: before the activation (linear -> BN -> act), after, or none.",
        search=True,
    )
    regularizer = Choice(
        "none", registry=REGULARIZERS,
        doc="Kernel weight penalty added to the loss (none, l1, l2, l1_l2).",
        search=["none", "l2"],
    )
    regularizer_strength = Float(
        1e-4, low=0.0,
        doc="Strength lambda of the L1/L2 penalty.", search=(1e-6, 1e-2, "log"),
        requires={"regularizer": ("l1", "l1_l2", "l2")}, strict_requires=False,
    )
