from __future__ import annotations

import itertools
from pathlib import Path

import keras
import numpy as np

from cnnlab.training.callbacks import BestModelCheckpoint, EpochTimer, TargetReached


def _fit(callbacks: list, epochs: int = 5) -> keras.callbacks.History:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 2)).astype("float32")
    y = x @ np.array([1.0, -2.0], dtype="float32")
    return model.fit(x, y, epochs=epochs, callbacks=callbacks, verbose=0)


def test_target_reached_stops_at_the_first_epoch_that_meets_it() -> None:
    history = _fit([], epochs=8)
    losses = history.history["loss"]
    target = losses[3]  # first reached at epoch index 3 (losses fall monotonically here)
    assert all(a > b for a, b in itertools.pairwise(losses))
    stop = TargetReached(monitor="loss", target=target)
    stopped = _fit([stop], epochs=8)
    assert stop.mode == "min" and stop.reached_epoch == 3
    assert len(stopped.history["loss"]) == 4


def test_target_never_reached_runs_all_epochs() -> None:
    stop = TargetReached(monitor="loss", target=-1.0)
    assert len(_fit([stop], epochs=3).history["loss"]) == 3
    assert stop.reached_epoch is None


def test_checkpoint_saves_only_improvements_atomically(tmp_path: Path) -> None:
    path = tmp_path / "best.keras"
    checkpoint = BestModelCheckpoint(path, monitor="loss")
    _fit([checkpoint], epochs=3)
    assert path.is_file() and checkpoint.best_epoch == 2
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]  # no temporary file left
    loaded = keras.saving.load_model(path)
    assert loaded.count_params() == 3


def test_checkpoint_keeps_a_better_model_from_before_a_resume(tmp_path: Path) -> None:
    path = tmp_path / "best.keras"
    checkpoint = BestModelCheckpoint(path, monitor="loss", initial_best=0.0)
    _fit([checkpoint], epochs=2)
    assert not path.exists() and checkpoint.best_epoch is None


def test_epoch_timer_adds_seconds_to_the_logs() -> None:
    history = _fit([EpochTimer()], epochs=2)
    assert all(s > 0 for s in history.history["epoch_seconds"])


def test_checkpoint_breaks_ties_with_the_lower_loss(tmp_path: Path) -> None:
    checkpoint = BestModelCheckpoint(tmp_path / "m.keras", monitor="acc", tie_breaker="loss")
    checkpoint.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    for epoch, logs in enumerate(
        [{"acc": 0.9, "loss": 0.5}, {"acc": 0.9, "loss": 0.3}, {"acc": 0.9, "loss": 0.4}]
    ):
        checkpoint.on_epoch_end(epoch, logs)
    assert checkpoint.best_epoch == 1 and checkpoint.best_tie == 0.3
