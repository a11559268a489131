"""The benchmark's own callback (a `cnnlab.training.callbacks.KerasCallback`: importing it imports
no
Keras)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cnnlab.training.callbacks import KerasCallback


class StopAtTestAccuracy(KerasCallback):
    """Stop training once test accuracy reaches `target`, timing training without the tests.

    After each epoch the model predicts the test set; `epochs` records, per epoch, the seconds
    spent training so far (these evaluations excluded) and the test accuracy.

    Args:
        x_test: test images, as the model takes them.
        y_test: their integer labels.
        target: the test accuracy that ends training, e.g. `0.91`.
        batch_size: batch size of the test predictions.
    """

    def __init__(
        self, x_test: np.ndarray, y_test: np.ndarray, target: float, batch_size: int = 1024
    ):
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.target = target
        self.batch_size = batch_size
        self.epochs: list[dict[str, float]] = []
        self.eval_seconds = 0.0
        self.reached_epoch: int | None = None
        self._started = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        train_seconds = time.perf_counter() - self._started - self.eval_seconds
        started = time.perf_counter()
        scores = self.model.predict(self.x_test, batch_size=self.batch_size, verbose=0)
        accuracy = float(np.mean(np.argmax(scores, axis=-1) == self.y_test))
        self.eval_seconds += time.perf_counter() - started
        self.epochs.append({"train_seconds": train_seconds, "test_accuracy": accuracy})
        if accuracy >= self.target and self.reached_epoch is None:
            self.reached_epoch = epoch + 1
            self.model.stop_training = True
