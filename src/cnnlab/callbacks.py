"""Small Keras callbacks, one job each, for what Keras' own set does not cover.

Keras supplies early stopping, NaN termination, CSV logging and backup/restore; cnnlab adds:
stopping at a target metric value, an atomically written best-model checkpoint that survives
a resume, and the wall-clock time of each epoch in the logs.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from cnnlab._backend import keras as _keras
from cnnlab._io import atomic_path
from cnnlab.monitoring import mode_for

log = logging.getLogger(__name__)

_Callback: Any = _keras().callbacks.Callback


class TargetReached(_Callback):
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


class BestModelCheckpoint(_Callback):
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


class EpochTimer(_Callback):
    """Add `epoch_seconds` (wall-clock time of the epoch) to the logs, so history.csv has it."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
