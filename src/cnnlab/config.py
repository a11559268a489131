"""Every setting of a run in one place: recipe defaults, then a TOML file, then command-line flags.

A `Config` is frozen. Some settings may still say "choose for me" (`train.seed = -1`, `precision`,
`backend` and `steps_per_execution` "auto" or 0); training resolves them
(`cnnlab.training.trainer.resolve_defaults`) before it writes `runs/<name>/config.toml`, so that
file is exactly what ran, and loading it again re-runs it.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from cnnlab._backend import BACKENDS as _KERAS_BACKENDS
from cnnlab._backend import PRECISIONS
from cnnlab.errors import ConfigError

RECIPES = ("default", "seed", "photos")
INIT_FILTERS = ("random", "classic", "whitening")
COLORS = ("auto", "rgb", "grayscale")
RESIZE_MODES = ("squash", "crop", "pad")
CLASS_WEIGHTS = ("", "auto")
BACKENDS = ("auto", *_KERAS_BACKENDS)
LR_SCHEDULES = ("exponential", "cosine")
CHOICES: dict[str, tuple[str, ...]] = {
    "train.recipe": RECIPES,
    "model.init_filters": INIT_FILTERS,
    "train.precision": PRECISIONS,
    "train.backend": BACKENDS,
    "train.lr_schedule": LR_SCHEDULES,
    "train.class_weight": CLASS_WEIGHTS,
    "data.color": COLORS,
    "data.resize": RESIZE_MODES,
}
"""The settings that take one of a few names, by dotted key (the CLI offers them as choices)."""
_MAX_INT = 2**63  # integer settings fit a signed 64-bit integer (TOML's own range)


@dataclass(frozen=True)
class DataConfig:
    """Which data, where it lives, and how much of the training set is held out."""

    dataset: str = "fashion_mnist"
    data_dir: str = ""  # empty: the usual look-up order ($CNNLAB_DATA, cache, system, download)
    validation_split: float = 0.1
    limit: int = 0  # use only the first `limit` training images (0: all)
    download: bool = True
    # An image folder's pictures as the model takes them (the IDX and .npz datasets keep their
    # own 28x28 grey): size "N" or "HxW" (auto: from the data), colour (auto: rgb when any
    # picture has colour), and how a picture of another shape is fitted.
    image_size: str = "auto"
    color: str = "auto"
    resize: str = "squash"  # squash (stretch), crop (centre), pad (fit inside)
    cache: str = ""  # decoded pictures kept: "" (none, streamed), "memory", or a folder

    def __post_init__(self) -> None:
        _check(0.0 <= self.validation_split < 1.0, "data.validation_split must be in [0, 1)")
        _check(self.limit >= 0, "data.limit must be >= 0 (0 means all images)")
        image_size(self.image_size)  # a ConfigError for anything but auto, N or HxW
        _check(self.color in COLORS, f"data.color must be one of {', '.join(COLORS)}")
        _check(self.resize in RESIZE_MODES, f"data.resize must be one of {', '.join(RESIZE_MODES)}")

    @property
    def is_folder(self) -> bool:
        """Whether the dataset is a folder of images (streamed, any size and colour)."""
        return is_image_folder(self.dataset)


def image_size(text: str) -> tuple[int, int] | None:
    """`data.image_size` as (height, width): "N" is NxN, "HxW" is H by W; None for "auto"."""
    if text.strip().lower() == "auto":
        return None
    height, sep, width = text.lower().replace(" ", "").partition("x")
    try:
        size = (int(height), int(width) if sep else int(height))
    except ValueError:
        size = (0, 0)
    if not min(size) >= 8 or max(size) > 1024:
        raise ConfigError(
            f"data.image_size={text!r}: give N or HxW in pixels, each 8..1024 (e.g. 96 or "
            "96x128), or auto"
        )
    return size


def is_image_folder(dataset: str) -> bool:
    """Whether `dataset` names a folder on disk (not a named dataset such as fashion_mnist)."""
    return Path(dataset).expanduser().is_dir()


@dataclass(frozen=True)
class ModelConfig:
    """The architecture: a built-in name (`basic_cnn` is the seed model) or a spec file."""

    architecture: str = "basic_cnn"
    init_filters: str = "whitening"  # first conv layer: whitening (of the data), random, classic
    # Fine-tuning: start from a trained run's model (a run folder or .keras file) instead of
    # random weights; its classifier head is replaced when the classes differ. The layers up to
    # `freeze_until` (default: all but the head) first train frozen for `head_epochs`, then
    # everything trains at the learning rate times `fine_tune_factor`.
    init: str = ""
    freeze_until: str = ""
    head_epochs: int = 2
    fine_tune_factor: float = 0.1

    def __post_init__(self) -> None:
        _check(
            self.init_filters in INIT_FILTERS,
            f"model.init_filters must be one of {', '.join(INIT_FILTERS)}",
        )
        _check(self.head_epochs >= 0, "model.head_epochs must be >= 0 (0: no frozen phase)")
        _check(0 < self.fine_tune_factor <= 1, "model.fine_tune_factor must be in (0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe and the callbacks that control training."""

    recipe: str = "default"
    epochs: int = 15
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 0.002
    lr_schedule: str = "exponential"  # or cosine: warm up, then follow a half cosine to zero
    lr_decay: float = 0.5  # exponential: multiply the rate by this after every epoch (1: constant)
    warmup_epochs: int = 0  # cosine: epochs of linear warm-up to learning_rate first
    patience: int = 3  # early stopping on `monitor`, best weights restored (0: off)
    reduce_lr_patience: int = 0  # cut the rate by reduce_lr_factor after this many flat epochs
    reduce_lr_factor: float = 0.3  # (a plateau schedule; patience 0: off)
    monitor: str = "val_accuracy"
    target_accuracy: float = 0.0  # stop once `monitor` reaches it (0: off)
    seed: int = -1  # -1: draw one at start and record it here
    steps_per_execution: int = 0  # 0: auto, 16 (1 on torch, where Keras allows only 1)
    precision: str = (
        "auto"  # float32, mixed_bfloat16, mixed_float16; auto: what the hardware runs fastest
    )
    backend: str = "auto"  # tensorflow, jax, torch; auto: $KERAS_BACKEND, else tensorflow
    class_weight: str = ""  # "" (every image counts the same) or auto (inverse class frequency)

    def __post_init__(self) -> None:
        _check(self.recipe in RECIPES, f"train.recipe must be one of {', '.join(RECIPES)}")
        _check(self.epochs >= 1, "train.epochs must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size must be >= 1")
        _check(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            "train.learning_rate must be a positive number",
        )
        _check(0 < self.lr_decay <= 1, "train.lr_decay must be in (0, 1] (1: constant)")
        _check(
            self.lr_schedule in LR_SCHEDULES,
            f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}",
        )
        _check(
            0 <= self.warmup_epochs < self.epochs or self.warmup_epochs == 0,
            "train.warmup_epochs must be >= 0 and fewer than train.epochs",
        )
        _check(self.patience >= 0, "train.patience must be >= 0 (0 turns early stopping off)")
        _check(self.reduce_lr_patience >= 0, "train.reduce_lr_patience must be >= 0 (0: off)")
        _check(0 < self.reduce_lr_factor < 1, "train.reduce_lr_factor must be in (0, 1)")
        _check(0.0 <= self.target_accuracy <= 1.0, "train.target_accuracy must be in [0, 1]")
        _check(-1 <= self.seed < 2**32, "train.seed must be in 0..4294967295 (or -1 to draw one)")
        _check(self.steps_per_execution >= 0, "train.steps_per_execution must be >= 1 (0: auto)")
        _check(
            self.precision in PRECISIONS,
            f"train.precision must be one of {', '.join(PRECISIONS)}",
        )
        _check(self.backend in BACKENDS, f"train.backend must be one of {', '.join(BACKENDS)}")
        _check(
            self.class_weight in CLASS_WEIGHTS,
            "train.class_weight must be auto (inverse class frequency) or empty (none)",
        )


@dataclass(frozen=True)
class RunConfig:
    """Where the run folder goes."""

    name: str = ""  # empty: derived from architecture, dataset and recipe
    runs_dir: str = "runs"


@dataclass(frozen=True)
class LogConfig:
    """What watches a run besides its folder: TensorBoard event files are always written
    (`RUN/logs/`); MLflow is one more tracker, written from the run folder (docs/training.md)."""

    tensorboard_histograms: bool = False  # a histogram of every weight, every epoch
    mlflow: bool = False  # log params, epoch and test metrics, and artifacts to MLflow
    mlflow_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else MLflow's own default
    mlflow_experiment: str = "cnnlab"

    def __post_init__(self) -> None:
        _check(bool(self.mlflow_experiment.strip()), "log.mlflow_experiment must not be empty")


@dataclass(frozen=True)
class Config:
    """A whole run: data, model, training and output settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_name(self) -> str:
        """The run folder's name: given, or `<architecture>-<dataset>[-seed]`."""
        if self.run.name:
            return self.run.name
        arch = Path(self.model.architecture).stem
        suffix = "-seed" if self.train.recipe == "seed" else ""
        data = self.data.dataset
        if "/" in data or "\\" in data or data.endswith(".npz"):  # a folder or a file: its name
            data = Path(data.rstrip("/\\")).expanduser().resolve().stem or "data"
        return f"{arch}-{data}{suffix}"

    @property
    def run_dir(self) -> Path:
        return Path(self.run.runs_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def dotted(self) -> dict[str, Any]:
        """Every setting by its dotted key (`"train.seed"`), the form `load_config`'s
        overrides take: what `cnnlab compare` compares and MLflow records as params."""
        return {
            f"{section}.{key}": value
            for section, table in self.to_dict().items()
            for key, value in table.items()
        }

    @classmethod
    def from_toml(cls, text: str) -> Config:
        """The Config that `to_toml` wrote (settings it leaves out keep their defaults)."""
        return cls().replace(**tomllib.loads(text))

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """Return a copy with some fields of some sections changed, e.g. replace(train={...})."""
        return _merge(self, {k: dict(v) for k, v in sections.items()}, source="replace()")


# The seed notes' recipe, exactly: all 60,000 training images, 50 epochs, batch 32, adam,
# and no callback that changes training.
_SEED_RECIPE: dict[str, dict[str, Any]] = {
    "data": {"validation_split": 0.0},
    "model": {"init_filters": "random"},
    "train": {
        "recipe": "seed",
        "epochs": 50,
        "patience": 0,
        "reduce_lr_patience": 0,
        "lr_decay": 1.0,
        "learning_rate": 0.001,
        "monitor": "accuracy",
        "precision": "float32",  # the notes' arithmetic, whatever the hardware
    },
}


# A few thousand photos of any size, in colour: the recipe `cnnlab train --dataset DIR` takes
# unless told otherwise. A batch-normalised CNN with global pooling and augmentation for
# natural images (architectures/photo_cnn.toml), a constant rate cut on plateaus (a few thousand
# images give too few steps an epoch for the default recipe's halving every epoch), and enough
# patience for a small, noisy validation split. Measured: docs/training.md, "Your own images".
_PHOTOS_RECIPE: dict[str, dict[str, Any]] = {
    "model": {"architecture": "photo_cnn", "init_filters": "random"},
    "train": {
        "recipe": "photos",
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 0.002,
        "lr_decay": 1.0,
        "patience": 8,
        "reduce_lr_patience": 3,
        "reduce_lr_factor": 0.3,
    },
}
_RECIPES = {"seed": _SEED_RECIPE, "photos": _PHOTOS_RECIPE}


def recipe(name: str) -> Config:
    """The defaults of a named recipe: `default` (early stopping, for Fashion-MNIST-sized
    data), `seed` (the notes, exactly) or `photos` (an image folder's default)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    base = Config()
    return _merge(base, _RECIPES[name], source=f"recipe {name}") if name in _RECIPES else base


def presets() -> list[str]:
    """Names of the presets shipped with cnnlab: architecture plus training recipe, as TOML."""
    folder = resources.files("cnnlab") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_values(name: str) -> dict[str, Any]:
    """The settings a preset file holds (a partial config: only what differs from defaults)."""
    if name not in presets():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(presets())}")
    text = (resources.files("cnnlab") / "presets" / f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def load_config(
    path: str | Path | None = None,
    *,
    recipe_name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    preset: str | None = None,
) -> Config:
    """Resolve a Config: recipe defaults, a preset, the TOML file at `path`, then `overrides`.

    Each layer overrides the one before it. `overrides` maps dotted keys (`"train.epochs"`) to
    values; None values are ignored, so the CLI can pass every flag and only those the user gave
    take effect.
    """
    file_values: dict[str, Any] = {}
    if path is not None:
        file_values = read_toml(path)
    preset_table = preset_values(preset) if preset else {}
    flat = {k: v for k, v in (overrides or {}).items() if v is not None}
    candidates = [
        (recipe_name or flat.pop("train.recipe", None), "command line"),
        (_table(file_values, "train").get("recipe"), str(path)),
        (_table(preset_table, "train").get("recipe"), f"preset {preset}"),
    ]
    dataset = next(
        (
            d
            for d in (
                flat.get("data.dataset"),
                _table(file_values, "data").get("dataset"),
                _table(preset_table, "data").get("dataset"),
            )
            if d
        ),
        DataConfig.dataset,
    )
    # An image folder takes the photo recipe unless a recipe is named.
    fallback = "photos" if isinstance(dataset, str) and is_image_folder(dataset) else "default"
    name, where = next(((n, w) for n, w in candidates if n), (fallback, fallback))
    try:
        base = recipe(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    config = _merge(base, preset_table, source=f"preset {preset}")
    config = _merge(config, file_values, source=str(path))
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        nested.setdefault(section, {})[key] = value
    return _merge(config, nested, source="command line")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, with one clear error for a missing or malformed file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a .toml file") from None
    except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError, an integer too long
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    except OSError as exc:  # permission denied, a device, a name too long...
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None


def _table(values: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    """values[section] when it is a table, else empty (`_merge` then says what is wrong)."""
    table = values.get(section, {})
    return table if isinstance(table, Mapping) else {}


def _merge(config: Config, values: Mapping[str, Any], *, source: str) -> Config:
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for section, table in values.items():
        if section not in sections:
            raise ConfigError(
                f"{source}: unknown section [{section}]; known: {', '.join(sections)}"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
        current = sections[section]
        allowed = {f.name: f for f in dataclasses.fields(current)}
        changes = {}
        for key, value in table.items():
            if key not in allowed:
                raise ConfigError(
                    f"{source}: unknown setting {section}.{key}; known: {', '.join(allowed)}"
                )
            changes[key] = _coerce(value, getattr(current, key), f"{source}: {section}.{key}")
        try:
            sections[section] = dataclasses.replace(current, **changes)
        except ConfigError as exc:  # a value out of range: say where it came from
            raise ConfigError(f"{source}: {exc}") from None
    return Config(**sections)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check a value against the type of the field's default (int accepted for a float)."""
    expected = type(default)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _MAX_INT:
        raise ConfigError(f"{where} is too large ({value.bit_length()}-bit integer)")
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool or isinstance(value, bool):
        if isinstance(value, bool) and expected is bool:
            return value
    elif isinstance(value, expected):
        return value
    raise ConfigError(f"{where} must be {expected.__name__}, got {_short(value)}")


def _short(value: Any, limit: int = 60) -> str:
    """A value as the message shows it: its repr, cut to `limit` characters."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge int"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
