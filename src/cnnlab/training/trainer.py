"""Train a model from a Config and leave a run folder behind.

`train` reads top to bottom as its steps: decide what to train, prepare the data, build and compile
the model, record the start in the run folder, fit with cnnlab's callbacks, save. Every file is
written through `cnnlab.runs.Run`, which owns the run folder's layout (see that module).
Distribution is one object, `cnnlab.training.distributed.Processes` (`team` below), whose hooks do
nothing for one process on one device.

Running the same command again on a finished run does nothing; on an interrupted run it resumes
from the last completed epoch.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab._backend import DEFAULT_BACKEND, auto_precision, dtype_policy, select_backend
from cnnlab._backend import keras as _keras
from cnnlab._cpu import cpu_info
from cnnlab._version import __version__
from cnnlab.config import Config, TrainConfig, load_config
from cnnlab.data.feed import (
    Feed,
    balanced_class_weights,
    describe_recipe,
    load_feed,
    resolve_folder_recipe,
)
from cnnlab.errors import ConfigError, RunError
from cnnlab.model.builder import build_model, summary_text
from cnnlab.model.kernels import init_first_conv
from cnnlab.monitoring import best_row, recorded_monitor
from cnnlab.runs import History, Run, RunState
from cnnlab.tracking import mlflow_runs
from cnnlab.training.callbacks import (
    BestModelCheckpoint,
    EpochTimer,
    MlflowLog,
    TargetReached,
    TrainingState,
    tensorboard_callbacks,
)
from cnnlab.training.distributed import ONE_PROCESS, Cluster, Processes, join

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train` leaves behind: the run folder, the best model, and the epoch history."""

    run_dir: Path
    model: keras.Model
    history: History
    state: RunState
    writer: bool = True  # False in a data-parallel process other than 0 (it wrote nothing)


@dataclass(frozen=True)
class Plan:
    """What to train, as process 0 decided it from the run folder (`_decide`)."""

    config: Config  # every "choose for me" setting resolved, as config.toml records it
    resuming: bool = False  # an interrupted run goes on from its backup
    first_epoch: int = 0  # the epochs its backup has finished (0: from the start)
    precision_reason: str = "set in the configuration"  # or why "auto" chose the policy

    def to_text(self) -> str:
        """The plan as one line of text, for the other processes (`from_text` reads it)."""
        return json.dumps(
            {
                "config": self.config.to_toml(),
                "resuming": self.resuming,
                "first_epoch": self.first_epoch,
                "precision_reason": self.precision_reason,
            }
        )

    @classmethod
    def from_text(cls, text: str) -> Plan:
        values = json.loads(text)
        return cls(Config.from_toml(values.pop("config")), **values)


def train(
    config: Config | None = None,
    *,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    cluster: Cluster | None = None,
) -> TrainResult:
    """Train `config` (default: the seed model with cnnlab's default recipe) into its run folder.

    `callbacks` are extra Keras callbacks, run after cnnlab's own at each epoch's end.
    `cluster`: train data-parallel with other processes or on several devices (JAX backend;
    see `cnnlab.training.distributed`); process 0 writes the run folder, the others nothing.
    """
    config = config or load_config()
    mlflow_runs.require(config.log)
    backend = select_backend(config.train.backend)  # before anything imports Keras
    team = join(cluster)
    run = team.open_run(config.run_dir)

    # Decide: a finished run is kept, an interrupted one resumed (process 0 decides, and every
    # process trains what it decided).
    plan = team.agree(
        lambda: _decide(config, run, team, overwrite=overwrite),
        encode=Plan.to_text,
        decode=Plan.from_text,
    )
    if plan is None:
        log.info("%s is already finished; nothing to do (use --overwrite to train again)", run.dir)
        return load_result(run.dir)
    _log_plan(plan, backend)
    run.check_writable()  # a read-only or full disk fails here, before any work

    # Held until the run is saved: a run that says "running" without it was interrupted.
    with run.training():
        feed = load_feed(plan.config)
        model = build_training_model(
            plan.config, feed, first_epoch=plan.first_epoch, processes=team
        )
        state = _start_run(run, plan, feed, model, backend, team)
        own, checkpoint = make_callbacks(
            plan.config, run, has_validation=feed.count("val") > 0, first_epoch=plan.first_epoch
        )
        fitted = _fit(model, plan, feed, [*own, *callbacks], team, state)
        team.finish()
        if not team.writes:  # the run folder is process 0's; this one keeps its model in memory
            return TrainResult(run.dir, model, _history_of(fitted), state, writer=False)
        result = _save(run, state, checkpoint)
    if plan.config.log.mlflow:  # the finished folder's files, copied to its MLflow run
        mlflow_runs.finish(run)
    return result


def _decide(config: Config, run: Run, team: Processes, *, overwrite: bool = False) -> Plan | None:
    """What to train, as process 0 sees the run folder (after removing it, if `overwrite`):
    None when the run is finished already; else a new run's resolved config, or an
    interrupted run's own (then only with the same settings, and in one process)."""
    if overwrite:
        run.remove()
    state = run.state()
    if state.finished:
        return None
    reason = auto_precision()[1] if config.train.precision == "auto" else Plan.precision_reason
    if not state.running:
        return Plan(resolve_defaults(config), precision_reason=reason)
    if team.count > 1:
        raise RunError(
            f"{run.dir} was interrupted; resuming is not supported with several processes: "
            "add --overwrite to start over"
        )
    # The backup holds every variable after the last finished epoch (TrainingState); a run
    # killed before its first epoch ended starts as a new one would.
    finished = TrainingState.finished_epochs(run.state_backup)
    return Plan(_same_config_or_fail(config, run), True, finished, precision_reason=reason)


def _log_plan(plan: Plan, backend: str) -> None:
    train = plan.config.train
    log.info(
        "Keras backend: %s; precision: %s (%s)", backend, train.precision, plan.precision_reason
    )
    log.info("configuration:\n%s", plan.config.to_toml().rstrip())


def _start_run(
    run: Run, plan: Plan, feed: Feed, model: keras.Model, backend: str, team: Processes
) -> RunState:
    """Create the run folder and say what runs there: config.toml and run.json ("running")
    for a new run, whose state is returned (a resumed run keeps its own), and summary.txt."""
    run.make_dir()
    if plan.resuming:
        state = run.state()
    else:
        state = RunState(
            status="running",
            cnnlab_version=__version__,
            keras_version=_keras().__version__,
            backend=backend,
            cpu=cpu_info().to_dict(),
            precision={"policy": plan.config.train.precision, "reason": plan.precision_reason},
            dataset=plan.config.data.dataset,
            class_names=list(feed.class_names),
            input_shape=list(feed.input_shape),
            train_images=feed.count("train"),
            validation_images=feed.count("val"),
            input_recipe=feed.recipe.to_dict() if feed.recipe else {},
            unreadable_images=feed.unreadable,
            class_weights=list(class_weights(plan.config, feed).values()),
            started_from=_started_from(plan.config),
            started_at=_now(),
        )
        if team.describe():
            state.extra["data_parallel"] = team.describe()
        run.write_config(plan.config)
        run.write_state(state)
    run.write_summary(summary_text(model))
    return state


def _fit(
    model: keras.Model,
    plan: Plan,
    feed: Feed,
    callbacks: list[Any],
    team: Processes,
    state: RunState,
) -> Any:
    """Train from `plan.first_epoch` on, each process on its shard of every batch; the time it
    takes is added to `state.train_seconds`, and the files that could not be read to
    `state.unreadable_images`. Returns Keras' History."""
    train = plan.config.train
    train_data = feed.batches(
        "train", train.batch_size, shuffle=True, seed=train.seed, skip_epochs=plan.first_epoch
    )
    val_data = feed.batches("val", train.batch_size) if feed.count("val") else None
    started = time.perf_counter()
    chosen = team.choose_callbacks(callbacks)

    def fit(first: int, last: int) -> Any:
        return model.fit(
            team.shard(train_data),
            validation_data=team.shard(val_data),
            class_weight=class_weights(plan.config, feed) or None,
            epochs=last,
            initial_epoch=first,
            callbacks=chosen,
            shuffle=False,  # the dataset reshuffles itself each epoch
            verbose=1 if _is_terminal(sys.stdout) else 2,
        )

    head_epochs = plan.config.model.head_epochs if plan.config.model.init else 0
    if plan.first_epoch < head_epochs < train.epochs:  # fine-tuning: the head first, frozen
        fit(plan.first_epoch, head_epochs)
        log.info("unfreezing every layer; learning rate %g", _phase_rate(plan.config, head_epochs))
        freeze(model, None)
        compile_model(model, train, learning_rate=_phase_rate(plan.config, head_epochs))
        fitted = fit(head_epochs, train.epochs)
    else:
        fitted = fit(plan.first_epoch, train.epochs)
    state.train_seconds = round(state.train_seconds + time.perf_counter() - started, 2)
    state.unreadable_images = {**state.unreadable_images, **feed.unreadable}
    return fitted


def _started_from(config: Config) -> dict[str, Any]:
    """What run.json says about a fine-tuned run's start (empty: new weights)."""
    model = config.model
    if not model.init:
        return {}
    source = Run.open(model.init)
    return {
        "run": str(source.dir.resolve()),
        "model_file": str(source.model_file.resolve()),
        "class_names": source.class_names() or [],
        "frozen_until": model.freeze_until or "all but the head",
        "head_epochs": model.head_epochs,
        "fine_tune_factor": model.fine_tune_factor,
    }


def class_weights(config: Config, feed: Feed) -> dict[int, float]:
    """Each class's loss weight (`train.class_weight = "auto"`: inverse frequency), or {}."""
    if config.train.class_weight != "auto":
        return {}
    return balanced_class_weights(feed.class_counts("train"))


def _save(run: Run, state: RunState, checkpoint: Any) -> TrainResult:
    """Finish the run folder: the best checkpoint is the run's model, history.csv is rewritten
    clean, run.json says "finished" with the best epoch; the backup is no longer needed."""
    if not run.model_file.is_file():
        raise RunError(
            f"{run.dir}: training produced no usable model (the loss became NaN before any "
            "epoch finished); try a lower --learning-rate, then run again with --overwrite"
        )
    history = run.history()
    run.write_history(history)
    best = best_row(history, checkpoint.monitor, checkpoint.tie_breaker)
    state.status = "finished"
    state.epochs_run = len(history)
    state.best_epoch = None if best is None else int(best["epoch"]) + 1
    state.best_metrics = {k: v for k, v in (best or {}).items() if k != "epoch"}
    state.finished_at = _now()
    run.write_state(state)
    run.remove_backup()
    best_model = run.load_model()
    log.info(
        "finished %s: best epoch %s of %d, model in %s",
        run.dir,
        state.best_epoch,
        len(history),
        run.model_file,
    )
    return TrainResult(run_dir=run.dir, model=best_model, history=history, state=state)


def _now() -> str:
    """The time now as run.json records it: ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _is_terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal (a stand-in such as Ray's has no isatty: it is not)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def _history_of(fitted: Any) -> History:
    """Keras' History callback as history.csv's rows."""
    logs = fitted.history
    epochs = len(next(iter(logs.values()), []))
    return [{"epoch": float(e), **{k: float(v[e]) for k, v in logs.items()}} for e in range(epochs)]


def build_training_model(
    config: Config,
    feed: Feed,
    *,
    first_epoch: int = 0,
    processes: Processes = ONE_PROCESS,
) -> keras.Model:
    """The compiled model `train` trains from `first_epoch` on: a fresh seeded session, the
    run's precision policy, and replicas on every device of `processes`; new weights (the
    first layer initialised as configured) or a trained run's (`model.init`: fine-tuning,
    frozen but for the head during its first `head_epochs`). A resumed run's backup then
    restores every variable, so only the shapes and the phase matter then."""
    keras = _keras()
    keras.backend.clear_session()
    processes.distribute(config.train.batch_size)  # after clear_session, which forgets it
    keras.utils.set_random_seed(config.train.seed)
    with dtype_policy(config.train.precision):
        if config.model.init:
            model = start_from(config.model.init, feed)
        else:
            model = build_model(config.model.architecture, feed.input_shape, len(feed.class_names))
    if first_epoch == 0 and not config.model.init and config.model.init_filters != "random":
        init_first_conv(model, config.model.init_filters, feed.sample())
    head_phase = bool(config.model.init) and first_epoch < config.model.head_epochs
    freeze(model, config.model.freeze_until if head_phase else None)
    compile_model(model, config.train, learning_rate=_phase_rate(config, first_epoch))
    return model


def start_from(path: str, feed: Feed) -> keras.Model:
    """A trained run's model (a run folder or .keras file) for `feed`'s data: as it is when it
    was trained on the same classes, else with its classifier head (the last Dense layer)
    replaced by a new one for `feed`'s classes. Its input must be the data's shape."""
    keras = _keras()
    source_run = Run.open(path)
    source = source_run.load_model()
    shape = tuple(source.input_shape[1:])
    if shape != tuple(feed.input_shape):
        raise ConfigError(
            f"{path}: its model takes {_shape_words(shape)} pictures but this data gives "
            f"{_shape_words(feed.input_shape)}; train with --image-size and --color matching "
            "the run's, or start from another run"
        )
    names = list(feed.class_names)
    if source_run.class_names() == names and source.output_shape[-1] == len(names):
        return source
    head = source.layers[-1]
    if type(head).__name__ != "Dense":
        raise ConfigError(
            f"{path}: its model ends in a {type(head).__name__} layer, not a Dense classifier, so "
            "its head cannot be replaced for other classes; start from a run whose model ends in "
            "Dense"
        )
    new_head = keras.layers.Dense(len(names), activation="softmax", name="head")
    if isinstance(source, keras.Sequential):
        body = [keras.Input(shape), *source.layers[:-1], new_head]
        return keras.Sequential(body, name=source.name)
    return keras.Model(source.inputs, new_head(source.layers[-2].output), name=source.name)


def freeze(model: keras.Model, until: str | None) -> None:
    """Freeze the layers up to `until` (a layer name; "": all but the last), or none (None)."""
    layers = model.layers
    if until is None:
        stop = 0
    elif not until:
        stop = len(layers) - 1
    else:
        names = [layer.name for layer in layers]
        if until not in names:
            raise ConfigError(
                f"--freeze-until {until}: the model has no such layer; choose one of "
                f"{', '.join(names)}"
            )
        stop = names.index(until) + 1
    for index, layer in enumerate(layers):
        layer.trainable = index >= stop


def _phase_rate(config: Config, epoch: int) -> float:
    """The learning rate at `epoch`: the configured one, times `fine_tune_factor` once a
    fine-tuned model trains whole (after its head epochs)."""
    model = config.model
    if model.init and epoch >= model.head_epochs:
        return config.train.learning_rate * model.fine_tune_factor
    return config.train.learning_rate


def _shape_words(shape: Sequence[Any]) -> str:
    height, width, channels = [*shape, None, None, None][:3]
    colour = {1: "grayscale", 3: "rgb"}.get(channels, f"{channels}-channel")
    return f"{height}x{width} {colour}"


def compile_model(
    model: keras.Model, train: TrainConfig, *, learning_rate: float | None = None
) -> None:
    """Compile with the seed's loss and metric and the configured optimiser and execution
    (at `learning_rate`, default the configured one)."""
    keras = _keras()
    rate = train.learning_rate if learning_rate is None else learning_rate
    optimizer = keras.optimizers.get(
        {"class_name": train.optimizer, "config": {"learning_rate": rate}}
    )
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=train.steps_per_execution,
    )


def make_callbacks(
    config: Config, run: Run, *, has_validation: bool, first_epoch: int = 0
) -> tuple[list[Any], Any]:
    """The callbacks that control and record training, in the order they must run at an
    epoch's end (training starts at `first_epoch`: a resumed run's finished epochs)."""
    keras = _keras()
    train = config.train
    monitor = recorded_monitor(train.monitor, has_validation=has_validation)
    # The seed recipe keeps the last epoch's model, as the notes do; the others keep the best.
    keep_best = train.recipe != "seed"
    tie_breaker = "val_loss" if has_validation else "loss"
    previous = run.history()
    kept = best_row(previous, monitor, tie_breaker) if keep_best else None
    checkpoint = BestModelCheckpoint(
        run.model_file,
        monitor=monitor if keep_best else None,
        initial_best=None if kept is None else kept[monitor],
        tie_breaker=tie_breaker,
        initial_tie=math.inf if kept is None else kept.get(tie_breaker, math.inf),
    )
    callbacks: list[Any] = [EpochTimer(), keras.callbacks.TerminateOnNaN()]
    # After the timer (its epoch_seconds is logged) and before ReduceLROnPlateau changes the
    # rate at an epoch's end, so the learning rate logged is the one history.csv records.
    callbacks += tensorboard_callbacks(
        run.logs_dir, first_epoch, histograms=config.log.tensorboard_histograms
    )
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
        if config.model.init:  # fine-tuning: the whole model trains at a lower rate
            base, rate = schedule, train.learning_rate

            def schedule(epoch: int) -> float:
                return base(epoch) * _phase_rate(config, epoch) / rate

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
        # two repeats a row (dropped by Run.history) rather than losing one.
        keras.callbacks.CSVLogger(str(run.history_file), append=True),
    ]
    # Last: it restores the others' counters after they reset themselves at the start.
    callbacks.append(TrainingState(run.state_backup, callbacks))
    if config.log.mlflow:  # after the backup: an epoch is logged once it cannot be repeated
        callbacks.append(MlflowLog(run, config))
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


def resolve_defaults(config: Config) -> Config:
    """Turn "choose for me" settings into the concrete values that config.toml records.

    The backend is chosen first (it must be set before Keras is imported), then what depends
    on it: the precision, and steps_per_execution (Keras' torch backend allows only 1).
    """
    train = config.train
    changes: dict[str, Any] = {"backend": select_backend(train.backend)}
    if train.seed == -1:
        changes["seed"] = random.SystemRandom().randrange(2**31)
    if train.precision == "auto":
        changes["precision"] = auto_precision()[0]
    if changes["backend"] == "torch" and train.steps_per_execution > 1:
        log.warning(
            "train.steps_per_execution=%d lowered to 1: Keras' torch backend runs one step "
            "per call",
            train.steps_per_execution,
        )
        changes["steps_per_execution"] = 1
    elif train.steps_per_execution == 0:
        changes["steps_per_execution"] = 1 if changes["backend"] == "torch" else 16
    return config.replace(train=changes, data=_resolved_folder(config))


def _resolved_folder(config: Config) -> dict[str, Any]:
    """An image folder's "auto" size and colour, chosen from its pictures and said once."""
    data = config.data
    if not data.is_folder or "auto" not in (data.image_size, data.color):
        return {}
    recipe = resolve_folder_recipe(data)
    height, width = recipe.size
    log.info(
        "%s (chosen from the data where auto: the median short side of the pictures, and rgb "
        "when any picture has colour; set --image-size, --color or --resize to change)",
        describe_recipe(recipe),
    )
    return {"image_size": f"{height}x{width}", "color": recipe.color}


def _same_config_or_fail(config: Config, run: Run) -> Config:
    """An interrupted run resumes only with the configuration it started with."""
    saved = run.config()
    if saved.train.backend == "auto":  # written before cnnlab recorded the backend: TensorFlow
        saved = saved.replace(train={"backend": DEFAULT_BACKEND})
    adopted_data = {
        key: getattr(saved.data, key)
        for key in ("image_size", "color")
        if getattr(config.data, key) == "auto"
    }
    config = config.replace(data=adopted_data)
    adopted = {
        key: getattr(saved.train, key)
        for key, unresolved in (("seed", -1), ("precision", "auto"), ("steps_per_execution", 0))
        if getattr(config.train, key) == unresolved
    }
    adopted["backend"] = select_backend(config.train.backend)  # auto: the one running now
    candidate = config.replace(train=adopted)
    if candidate != saved:
        raise RunError(
            f"{run.dir} was started with a different configuration ({run.config_file}); "
            "re-run with the same settings to resume, or add --overwrite (or --name NEW) "
            "to start over"
        )
    log.info("resuming the interrupted run in %s", run.dir)
    return saved


def load_result(run_dir: str | Path) -> TrainResult:
    """Open a finished run folder: its model, history and state."""
    run = Run(run_dir)
    return TrainResult(run.dir, run.load_model(), run.history(), run.state())
