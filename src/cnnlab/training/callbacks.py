"""Small Keras callbacks, one job each, for what Keras' own set does not cover.

Keras supplies early stopping, NaN termination and CSV logging; cnnlab adds: stopping at a
target metric value, an atomically written best-model checkpoint that survives a resume, the
wall-clock time of each epoch in the logs, and the complete training state saved every epoch
so that a resumed run ends exactly as an uninterrupted one (`TrainingState`). Two watch a run
from outside: Keras' TensorBoard callback fitted to a run folder that may resume
(`TensorBoardLog`), and `MlflowLog`.

Importing them imports no Keras: each is a `KerasCallback`, whose first instance mixes in
`keras.callbacks.Callback` (`cnnlab._backend.LazyKerasClass`). So `from cnnlab import
TargetReached` leaves the Keras backend open until something trains (and a later
`train.backend = "jax"` still takes effect).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab._backend import LazyKerasClass
from cnnlab._backend import keras as _keras
from cnnlab._io import atomic_path
from cnnlab.monitoring import mode_for
from cnnlab.tracking import events, mlflow_runs

if TYPE_CHECKING:
    from cnnlab.config import Config
    from cnnlab.runs import Run

log = logging.getLogger(__name__)


class KerasCallback(LazyKerasClass):
    """A Keras callback class that imports no Keras until its first instance is made (see
    `cnnlab._backend.LazyKerasClass`); `isinstance(callback, keras.callbacks.Callback)` holds."""

    keras_base = "callbacks.Callback"


class TargetReached(KerasCallback):
    """Stop training as soon as a monitored metric reaches a target value.

    Keras' `EarlyStopping` stops when a metric stops improving; this stops when it is good
    enough, which saves the epochs that would only confirm it.

    Args:
        monitor: the metric to watch, e.g. `"val_accuracy"`.
        target: the value that ends training.
        mode: `"max"` (stop when `monitor >= target`) or `"min"` (`<=`); by default `"min"`
            for losses and `"max"` otherwise.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> stop = TargetReached(monitor="loss", target=1e9)
    >>> history = model.fit(np.ones((8, 1)), np.ones(8), epochs=10, callbacks=[stop], verbose=0)
    >>> len(history.epoch)
    1
    """

    def __init__(self, monitor: str = "val_accuracy", target: float = 0.9, mode: str = "auto"):
        super().__init__()
        self.monitor = monitor
        self.target = target
        self.mode = mode_for(monitor) if mode == "auto" else mode
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.reached_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            log.warning("TargetReached: metric %r is not in the logs", self.monitor)
            return
        reached = value >= self.target if self.mode == "max" else value <= self.target
        if reached:
            self.reached_epoch = epoch
            log.info(
                "%s = %.4f reached the target %.4f at epoch %d: stopping",
                self.monitor,
                value,
                self.target,
                epoch + 1,
            )
            self.model.stop_training = True


class BestModelCheckpoint(KerasCallback):
    """Save the whole model whenever `monitor` improves, atomically (temp file + rename).

    A reader, or a process killed mid-save, never sees half a file. `initial_best` lets a
    resumed run keep the best value from before the interruption instead of overwriting a
    good checkpoint with the first epoch after it. With `monitor=None` every epoch is saved;
    an epoch whose training loss is not finite never is.
    `tie_breaker` (a loss, lower is better) decides between epochs whose `monitor` is equal,
    which happens often with accuracy on a small validation set.

    Example:

    >>> checkpoint = BestModelCheckpoint("runs/demo/model.keras", monitor="val_accuracy")
    """

    def __init__(
        self,
        filepath: str | Path,
        monitor: str | None = "val_accuracy",
        mode: str = "auto",
        initial_best: float | None = None,
        tie_breaker: str | None = None,
        initial_tie: float = math.inf,
    ):
        super().__init__()
        self.filepath = Path(filepath)
        self.monitor = monitor
        self.mode = mode_for(monitor or "") if mode == "auto" else mode
        default = -math.inf if self.mode == "max" else math.inf
        self.best = default if initial_best is None else initial_best
        self.tie_breaker = tie_breaker
        self.best_tie = initial_tie
        self.best_epoch: int | None = None

    def _improved(self, value: float, tie: float) -> bool:
        if value == self.best:
            return tie < self.best_tie
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if not math.isfinite(logs.get("loss", 0.0)):
            return  # weights that gave a NaN or infinite loss are never worth keeping
        if self.monitor is not None:
            value = logs.get(self.monitor)
            tie = logs.get(self.tie_breaker, math.inf) if self.tie_breaker else math.inf
            if value is None or not math.isfinite(value) or not self._improved(value, tie):
                return
            self.best, self.best_tie = float(value), float(tie)
        self.best_epoch = epoch
        with atomic_path(self.filepath) as tmp:
            self.model.save(tmp)


class EpochTimer(KerasCallback):
    """Add `epoch_seconds` (wall-clock time of the epoch) to the logs, so history.csv has it."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class TensorBoardLog(LazyKerasClass):
    """Keras' `TensorBoard` callback for a run folder: one point per epoch, whose 0-based
    number is the step (as in history.csv), going on where a resumed run goes on.

    Before it writes, the event files keep only the epochs before `first_epoch`, so an epoch a
    killed run logged but did not finish appears once. For the same reason it leaves out the
    validation metrics Keras also logs against the optimizer's iterations, and writes the
    model's graph only when the log starts (not again on a resume or a second `fit`).

    Args:
        log_dir: the run's `logs/` folder (`train/` and `validation/` go inside).
        first_epoch: the epoch training starts from (a resumed run's finished epochs).
        histograms: a histogram of every weight at the end of each epoch.

    >>> board = TensorBoardLog("runs/demo/logs", histograms=True)
    """

    keras_base = "callbacks.TensorBoard"

    def __init__(self, log_dir: str | Path, first_epoch: int = 0, histograms: bool = False):
        super().__init__(
            log_dir=str(log_dir), histogram_freq=int(histograms), write_graph=first_epoch == 0
        )
        self.first_epoch = first_epoch
        self._started = False

    def set_model(self, model: Any) -> None:
        if not self._started:
            events.keep_epochs_before(self.log_dir, self.first_epoch)
            self._started = True
        super().set_model(model)
        self.write_graph = False

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._pop_writer()  # Keras' own also logs against iterations first: see above


def tensorboard_callbacks(log_dir: str | Path, first_epoch: int, histograms: bool) -> list[Any]:
    """`[TensorBoardLog(...)]`, or none, with one warning, where `tf.summary` is missing (a
    machine training on JAX or PyTorch without TensorFlow): the run trains all the same."""
    problem = events.missing()
    if problem:
        log.warning("no TensorBoard files for this run: %s", problem)
        return []
    return [TensorBoardLog(log_dir, first_epoch=first_epoch, histograms=histograms)]


class MlflowLog(KerasCallback):
    """Mirror a training run to MLflow as it trains (`cnnlab.tracking.mlflow_runs`): the
    configuration as params at the start, then each epoch's row of history.csv as metrics.

    Put it after `TrainingState`: an epoch reaches MLflow once it is safe in the backup, so a
    resumed run never logs an epoch twice, and any an interrupted run missed are logged then.
    A tracker that cannot be reached costs one warning; training goes on.

    >>> track = MlflowLog(Run("runs/demo"), config)  # doctest: +SKIP
    """

    def __init__(self, run: Run, config: Config) -> None:
        super().__init__()
        self.run = run
        self.config = config
        self.session: mlflow_runs.Session | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.session is None:  # once: fine-tuning's second `fit` goes on in the same run
            self.session = mlflow_runs.start(self.run, self.config)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.session is not None:  # with those a killed run recorded but did not log
            self.session.log_history(self.run.history(), through=epoch)


# What each callback must carry over a resume to decide as an uninterrupted run would; Keras'
# callbacks reset these in `on_train_begin`.
_CALLBACK_STATE: dict[str, tuple[str, ...]] = {
    "EarlyStopping": ("wait", "stopped_epoch", "best", "best_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "BestModelCheckpoint": ("best", "best_tie", "best_epoch"),
}


class TrainingState(KerasCallback):
    """Save everything a resumed run needs after every epoch, atomically; restore it on resume.

    Keras' `BackupAndRestore` saves the weights and the optimizer, then the epoch, as two files
    (a kill between them resumes with mismatched halves), and leaves out the random generators'
    states and the other callbacks' counters. This saves, in one file replaced atomically: the
    number of finished epochs, every model variable (the random generators of dropout and
    augmentation layers included), every optimizer variable (Adam's moments, its step, the
    learning rate) and the state of the callbacks that decide when to stop or slow down
    (`EarlyStopping` with its best weights, `ReduceLROnPlateau`, `BestModelCheckpoint`).
    Together with a data order that depends only on the seed and the epoch
    (`cnnlab.data.pipeline.make_dataset(skip_epochs=...)`), a run killed at any moment and resumed
    with `fit(initial_epoch=TrainingState.finished_epochs(path))` ends as an uninterrupted one.

    Put it last in the callback list: it restores after the others have reset themselves.

    >>> state = TrainingState("runs/demo/backup/state.npz")
    """

    def __init__(self, path: str | Path, callbacks: list[Any] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.callbacks = [c for c in callbacks or [] if _has_state(c)]
        self._begun = False  # a second `fit` in this process goes on; only the first resumes

    @staticmethod
    def finished_epochs(path: str | Path) -> int:
        """How many epochs the saved state has finished (0 when there is none)."""
        import numpy as np

        path = Path(path)
        if not path.is_file():
            return 0
        with np.load(path) as saved:
            return int(saved["epoch"])

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.path.is_file() and not self._begun:
            self._restore()
        self._begun = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import numpy as np

        keras = _keras()
        arrays: dict[str, Any] = {"epoch": np.asarray(epoch + 1)}
        for prefix, variables in self._variables().items():
            for i, variable in enumerate(variables):
                arrays[f"{prefix}/{i}"] = keras.ops.convert_to_numpy(variable)
        for index, callback in enumerate(self.callbacks):
            for name in _CALLBACK_STATE[_base_kind(callback)]:
                value = getattr(callback, name, None)  # None (not seen yet) is kept as NaN
                arrays[f"callback{index}/{name}"] = np.asarray(np.nan if value is None else value)
            weights = getattr(callback, "best_weights", None)
            if weights is not None:
                for i, weight in enumerate(weights):
                    arrays[f"callback{index}/best_weights/{i}"] = np.asarray(weight)
        with atomic_path(self.path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def _variables(self) -> dict[str, list[Any]]:
        model = self.model
        return {"model": list(model.variables), "optimizer": list(model.optimizer.variables)}

    def _restore(self) -> None:
        import numpy as np

        model = self.model
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        with np.load(self.path) as saved:
            current = self._variables()
            if not _same_shapes(saved, "optimizer", current["optimizer"]):
                # Saved in another phase of training (fine-tuning's head epochs, whose
                # optimizer held the head's variables only): the next phase starts, as in an
                # uninterrupted run, with a new optimizer and fresh callbacks.
                for i, variable in enumerate(current["model"]):
                    variable.assign(saved[f"model/{i}"])
                log.info("resumed from %s at the start of a new phase", self.path)
                return
            for prefix, variables in current.items():
                for i, variable in enumerate(variables):
                    variable.assign(saved[f"{prefix}/{i}"])
            for index, callback in enumerate(self.callbacks):
                kind = _base_kind(callback)
                for name in _CALLBACK_STATE[kind]:
                    value = saved[f"callback{index}/{name}"].item()
                    is_nan = isinstance(value, float) and math.isnan(value)
                    setattr(callback, name, None if is_nan else value)
                prefix = f"callback{index}/best_weights/"
                keys = [k for k in saved.files if k.startswith(prefix)]
                keys.sort(key=lambda k: int(k.rsplit("/", 1)[1]))
                weights = [saved[key] for key in keys]
                if hasattr(callback, "best_weights"):
                    callback.best_weights = weights or None
        log.info("resumed from %s: every variable, generator and counter as it was", self.path)


def _same_shapes(saved: Any, prefix: str, variables: list[Any]) -> bool:
    """Whether `saved` holds exactly `variables`' count and shapes under `prefix`."""
    keys = [key for key in saved.files if key.startswith(prefix + "/")]
    return len(keys) == len(variables) and all(
        tuple(saved[f"{prefix}/{i}"].shape) == tuple(v.shape) for i, v in enumerate(variables)
    )


def _has_state(callback: Any) -> bool:
    return any(cls.__name__ in _CALLBACK_STATE for cls in type(callback).__mro__)


def _base_kind(callback: Any) -> str:
    """The `_CALLBACK_STATE` entry for `callback` (its class or the nearest base class)."""
    for cls in type(callback).__mro__:
        if cls.__name__ in _CALLBACK_STATE:
            return cls.__name__
    raise KeyError(type(callback).__name__)
