"""Train a model from a Config and leave a run folder behind.

The steps read top to bottom: prepare the run folder, prepare the data, build the model,
compile, choose callbacks, train, save. A run folder holds everything later commands need:

    config.toml   exactly what ran (all defaults resolved, the seed drawn), enough to re-run it
    run.json      status, class names, input shape, best epoch, timings
    summary.txt   model.summary()
    model.keras   the best model, written atomically
    history.csv   one row per epoch
    backup/       Keras BackupAndRestore state while training runs; removed at the end

Running the same command again on a finished run does nothing; on an interrupted run it resumes
from the last completed epoch.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab import __version__
from cnnlab._backend import dtype_policy, fastest_precision
from cnnlab._backend import keras as _keras
from cnnlab._io import atomic_write_text
from cnnlab.config import Config, TrainConfig, load_config
from cnnlab.errors import RunError

if TYPE_CHECKING:
    import keras

    from cnnlab.data import Splits

log = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
STATE_FILE = "run.json"
MODEL_FILE = "model.keras"
SUMMARY_FILE = "summary.txt"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"


@dataclass
class TrainResult:
    """What `train` leaves behind: the run folder, the best model, and the epoch history."""

    run_dir: Path
    model: keras.Model
    history: list[dict[str, float]]
    state: dict[str, Any]


def train(
    config: Config | None = None,
    *,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train `config` (default: the seed model with cnnlab's default recipe) into its run folder.

    `callbacks` are extra Keras callbacks, run after cnnlab's own at each epoch's end.
    """
    config = config or load_config()
    run_dir = config.run_dir

    # Prepare the run folder: finished runs are kept, interrupted ones resumed.
    state = read_state(run_dir)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
        state = {}
    if state.get("status") == "finished":
        log.info("%s is already finished; nothing to do (use --overwrite to train again)", run_dir)
        return load_result(run_dir)
    resuming = state.get("status") == "running"
    config = _same_config_or_fail(config, run_dir) if resuming else resolve_defaults(config)
    log.info("configuration:\n%s", config.to_toml().rstrip())

    # Prepare the data.
    splits = _prepare_data(config)

    # Build and compile the model.
    keras = _keras()
    from cnnlab.models import summary_text

    model = build_training_model(config, splits, init_filters=not resuming)

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        atomic_write_text(run_dir / CONFIG_FILE, config.to_toml())
        state = {
            "status": "running",
            "cnnlab_version": __version__,
            "keras_version": keras.__version__,
            "dataset": config.data.dataset,
            "class_names": list(splits.class_names),
            "input_shape": list(splits.input_shape),
            "train_images": len(splits.x_train),
            "validation_images": len(splits.x_val),
            "train_seconds": 0.0,
        }
        write_state(run_dir, state)
    atomic_write_text(run_dir / SUMMARY_FILE, summary_text(model))

    # Train.
    own, checkpoint = make_callbacks(config, run_dir, has_validation=len(splits.x_val) > 0)
    from cnnlab.pipeline import make_dataset

    batch = config.train.batch_size
    train_data = make_dataset(
        splits.x_train, splits.y_train, batch, shuffle=True, seed=config.train.seed
    )
    val_data = make_dataset(splits.x_val, splits.y_val, batch) if len(splits.x_val) else None
    started = time.perf_counter()
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.train.epochs,
        callbacks=[*own, *callbacks],
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=1 if sys.stdout.isatty() else 2,
    )
    state["train_seconds"] = round(state["train_seconds"] + time.perf_counter() - started, 2)

    # Save: the best checkpoint is the run's model; the backup is no longer needed.
    if not (run_dir / MODEL_FILE).is_file():
        raise RunError(
            f"{run_dir}: training produced no usable model (the loss became NaN before any "
            "epoch finished); try a lower --learning-rate, then run again with --overwrite"
        )
    history = read_history(run_dir)
    _rewrite_history(run_dir, history)
    best = _best_row(history, checkpoint.monitor, checkpoint.tie_breaker or "val_loss")
    state.update(
        status="finished",
        epochs_run=len(history),
        best_epoch=None if best is None else int(best["epoch"]) + 1,
        best_metrics={k: v for k, v in (best or {}).items() if k != "epoch"},
    )
    write_state(run_dir, state)
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    best_model = load_model(run_dir)
    log.info(
        "finished %s: best epoch %s of %d, model in %s",
        run_dir,
        state["best_epoch"],
        len(history),
        run_dir / MODEL_FILE,
    )
    return TrainResult(run_dir=run_dir, model=best_model, history=history, state=state)


def build_training_model(
    config: Config, splits: Splits, *, init_filters: bool = True
) -> keras.Model:
    """The compiled model `train` trains: a fresh seeded session, the run's precision policy,
    the first-layer initialisation (unless resuming, when the backup has the kernels)."""
    keras = _keras()
    from cnnlab.kernels import init_first_conv
    from cnnlab.models import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.train.seed)
    with dtype_policy(config.train.precision):
        model = build_model(config.model.architecture, splits.input_shape, len(splits.class_names))
    if init_filters:
        init_first_conv(model, config.model.init_filters, splits.x_train)
    compile_model(model, config.train)
    return model


def compile_model(model: keras.Model, train: TrainConfig) -> None:
    """Compile with the seed's loss and metric and the configured optimiser and execution."""
    keras = _keras()
    optimizer = keras.optimizers.get(
        {"class_name": train.optimizer, "config": {"learning_rate": train.learning_rate}}
    )
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=train.steps_per_execution,
    )


def _prepare_data(config: Config) -> Splits:
    from cnnlab.data import load_dataset, prepare

    dataset = load_dataset(
        config.data.dataset, config.data.data_dir or None, download=config.data.download
    )
    return prepare(
        dataset,
        validation_split=config.data.validation_split,
        seed=config.train.seed,
        limit=config.data.limit or None,
    )


def make_callbacks(config: Config, run_dir: Path, *, has_validation: bool) -> tuple[list[Any], Any]:
    """The callbacks that control training, in the order they must run at an epoch's end."""
    keras = _keras()
    from cnnlab.callbacks import BestModelCheckpoint, EpochTimer, TargetReached

    train = config.train
    monitor = train.monitor
    if monitor.startswith("val_") and not has_validation:
        monitor = monitor[len("val_") :]
    # The seed recipe keeps the last epoch's model, as the notes do; the others keep the best.
    keep_best = train.recipe != "seed"
    tie_breaker = "val_loss" if has_validation else "loss"
    previous = read_history(run_dir)
    best_row = _best_row(previous, monitor, tie_breaker) if keep_best else None
    checkpoint = BestModelCheckpoint(
        run_dir / MODEL_FILE,
        monitor=monitor if keep_best else None,
        initial_best=None if best_row is None else best_row[monitor],
        tie_breaker=tie_breaker,
        initial_tie=math.inf if best_row is None else best_row.get(tie_breaker, math.inf),
    )
    callbacks: list[Any] = [EpochTimer(), keras.callbacks.TerminateOnNaN()]
    if train.target_accuracy:
        callbacks.append(TargetReached(monitor=monitor, target=train.target_accuracy))
    if train.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, patience=train.patience, restore_best_weights=True, verbose=1
            )
        )
    schedule = learning_rate_schedule(train)
    if schedule is not None:
        callbacks.append(keras.callbacks.LearningRateScheduler(schedule))
    if train.reduce_lr_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                factor=train.reduce_lr_factor,
                patience=train.reduce_lr_patience,
                min_lr=1e-6,
                verbose=1,
            )
        )
    callbacks += [
        checkpoint,
        # The CSV row is written before the backup records the epoch, so a kill between the
        # two repeats a row (dropped by read_history) rather than losing one.
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
        keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR), double_checkpoint=True),
    ]
    return callbacks, checkpoint


def learning_rate_schedule(train: TrainConfig) -> Callable[[int], float] | None:
    """The learning rate for each epoch (0-based), or None where it stays constant.

    `exponential` multiplies it by `lr_decay` after every epoch. `cosine` warms up linearly over
    `warmup_epochs`, then follows half a cosine from `learning_rate` towards zero at the end of
    the last epoch (as in Loshchilov & Hutter's SGDR without restarts, stepped once an epoch so
    that a resumed run picks up the same rate).
    """
    peak, epochs, warmup = train.learning_rate, train.epochs, train.warmup_epochs
    if train.lr_schedule == "cosine":

        def cosine(epoch: int) -> float:
            if epoch < warmup:
                return peak * (epoch + 1) / (warmup + 1)
            progress = (epoch - warmup) / (epochs - warmup)
            return peak * 0.5 * (1.0 + math.cos(math.pi * progress))

        return cosine
    if train.lr_decay < 1:
        decay = train.lr_decay
        return lambda epoch: peak * decay**epoch
    return None


def _best_row(
    history: list[dict[str, float]], monitor: str | None, tie_breaker: str = "val_loss"
) -> dict[str, float] | None:
    """The epoch the checkpoint kept: best `monitor`, ties to the lowest `tie_breaker`."""
    if not history:
        return None
    if monitor is None or monitor not in history[0]:
        return history[-1]
    from cnnlab.callbacks import _mode_for

    sign = 1.0 if _mode_for(monitor) == "max" else -1.0
    return max(history, key=lambda row: (sign * row[monitor], -row.get(tie_breaker, math.inf)))


def resolve_defaults(config: Config) -> Config:
    """Turn "choose for me" settings into the concrete values that config.toml records."""
    changes: dict[str, Any] = {}
    if config.train.seed == -1:
        changes["seed"] = random.SystemRandom().randrange(2**31)
    if config.train.precision == "auto":
        changes["precision"] = fastest_precision()
    return config.replace(train=changes) if changes else config


def _same_config_or_fail(config: Config, run_dir: Path) -> Config:
    """An interrupted run resumes only with the configuration it started with."""
    saved = load_config(run_dir / CONFIG_FILE)
    adopted = {
        key: getattr(saved.train, key)
        for key, unresolved in (("seed", -1), ("precision", "auto"))
        if getattr(config.train, key) == unresolved
    }
    candidate = config.replace(train=adopted)
    if candidate != saved:
        raise RunError(
            f"{run_dir} was started with a different configuration ({run_dir / CONFIG_FILE}); "
            "re-run with the same settings to resume, or add --overwrite (or --name NEW) "
            "to start over"
        )
    log.info("resuming the interrupted run in %s", run_dir)
    return saved


def read_state(run_dir: Path) -> dict[str, Any]:
    """The run's run.json, or {} where there is none yet."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(
            f"{path}: unreadable run state ({exc}); add --overwrite to start over"
        ) from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: unreadable run state; add --overwrite to start over")
    return data


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(state, indent=2) + "\n")


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """history.csv as rows of floats, one per epoch (a repeated epoch keeps its last row)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    rows: dict[int, dict[str, float]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                values = {k: float(v) for k, v in row.items() if k and v not in (None, "")}
            except ValueError:
                continue  # a line cut short by a kill mid-write
            if "epoch" in values:
                rows[int(values["epoch"])] = values
    return [rows[e] for e in sorted(rows)]


def _rewrite_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    fields = list(history[0])
    lines = [",".join(fields)]
    for row in history:
        lines.append(",".join(_format_number(row.get(f, float("nan")), f) for f in fields))
    atomic_write_text(Path(run_dir) / HISTORY_FILE, "\n".join(lines) + "\n")


def _format_number(value: float, field: str) -> str:
    return str(int(value)) if field == "epoch" else repr(value)


def run_config(run_dir: str | Path) -> Config:
    """The configuration a run folder was trained with."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(
            f"{run_dir}: not a run folder (no {CONFIG_FILE}); train one with `cnnlab train`"
        )
    return load_config(run_dir / CONFIG_FILE)


def run_data(run_dir: str | Path, data_dir: str | None = None) -> Splits:
    """A run's dataset (its training and test sets, no validation hold-out), as it trained on.

    `data_dir` overrides where the files are looked for (the run may come from another machine).
    """
    from cnnlab.data import load_dataset, prepare

    config = run_config(run_dir)
    dataset = load_dataset(
        config.data.dataset,
        data_dir or config.data.data_dir or None,
        download=config.data.download,
    )
    return prepare(dataset, validation_split=0.0, seed=0)


def load_result(run_dir: str | Path) -> TrainResult:
    """Open a finished run folder: its model, history and state."""
    run_dir = Path(run_dir)
    model = load_model(run_dir)
    return TrainResult(run_dir, model, read_history(run_dir), read_state(run_dir))


def load_model(path: str | Path) -> keras.Model:
    """Load the model of a run folder, or a `.keras` file, with a clear error if it is unusable."""
    path = Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        hint = "train it first with `cnnlab train`" if path.is_dir() else "check the path"
        raise RunError(f"{model_path}: no model found; {hint}")
    keras = _keras()
    from cnnlab.layers import custom_layers

    custom_layers()  # registers cnnlab's own layers, so models that use them load
    try:
        return keras.saving.load_model(model_path)
    except Exception as exc:  # Keras raises many types for a damaged archive
        raise RunError(
            f"{model_path}: cannot load the model ({type(exc).__name__}: {exc})"
        ) from None
