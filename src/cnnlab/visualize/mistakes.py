"""The model's mistakes, opened: the test images of one confusion-matrix cell, or those with the
highest loss, each with its probabilities and the picture the model saw.

`cnnlab evaluate` records every test image's outcome in the run folder (test_predictions.npz,
`cnnlab.evaluation.test_predictions`), so nothing here runs the model: an exported (ONNX) run
opens its mistakes as well. Only the pictures asked for are read from the run's data: rows of
the test arrays (Fashion-MNIST, an .npz file) or single files of an image folder, decoded with
the run's recipe.

    outcomes = Outcomes.load(Run("runs/basic_cnn-fashion_mnist"))
    shirts = outcomes.cell("Shirt", "T-shirt/top")      # positions, highest loss first
    first = [outcomes.image(p) for p in shirts[:24]]
    pixels = outcomes.pictures(shirts[:24])             # uint8 (H, W, C), as the model saw them
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError, DataError, ImageError, RunError
from cnnlab.runs import Run

__all__ = ["MissingTestData", "NoTestPredictions", "Outcome", "Outcomes", "UnknownClass"]

CACHED_PICTURES = 512
"""Decoded folder pictures kept in memory (uint8): a cell opened again costs no decoding."""


class NoTestPredictions(RunError):
    """The run has no recorded test predictions: not evaluated, or evaluated by an older cnnlab."""


class MissingTestData(DataError):
    """The recorded test images cannot be read: the dataset moved, or changed since evaluate."""


class UnknownClass(CnnlabError):
    """A class name (or index) the run does not have."""


@dataclass(frozen=True)
class Outcome:
    """One test image's outcome: its row in the test split, its true and predicted class
    indices, the model's probabilities (float32 from the recorded float16) and its loss."""

    index: int
    label: int
    predicted: int
    probabilities: np.ndarray
    loss: float
    path: str | None = None  # a folder's picture, relative to the folder

    @property
    def correct(self) -> bool:
        return self.label == self.predicted


class Outcomes:
    """A run's recorded test outcomes, and the way to their pictures; safe to share between
    threads (the pictures load under a lock)."""

    def __init__(self, run: Run, arrays: dict[str, np.ndarray]) -> None:
        self.run = run
        try:
            self.index = np.asarray(arrays["index"], np.int64)
            self.labels = np.asarray(arrays["label"], np.int64)
            self.predicted = np.asarray(arrays["predicted"], np.int64)
            self.probabilities = np.asarray(arrays["probabilities"])
            self.losses = np.asarray(arrays["loss"], np.float32)
            self.class_names = tuple(str(name) for name in arrays["class_names"])
        except KeyError as exc:
            raise NoTestPredictions(
                f"{run.test_predictions_file}: incomplete (no {exc}); run `cnnlab evaluate "
                f"{run.dir}` again to open mistakes"
            ) from None
        self.paths = tuple(str(p) for p in arrays["path"]) if "path" in arrays else None
        self.root = Path(str(arrays["root"])) if "root" in arrays else None
        self._lock = threading.Lock()
        self._test_images: np.ndarray | None = None  # the test arrays, once loaded
        self._decoded: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def load(cls, run: Run) -> Outcomes:
        """The outcomes `cnnlab evaluate` recorded; NoTestPredictions where there are none."""
        arrays = run.test_predictions()
        if arrays is None:
            raise NoTestPredictions(
                f"{run.dir}: no test predictions recorded; run `cnnlab evaluate {run.dir}` "
                "again to open mistakes"
            )
        return cls(run, arrays)

    def __len__(self) -> int:
        return len(self.labels)

    # --- Choosing images ------------------------------------------------------------------

    def class_index(self, name: str | int) -> int:
        """A class given by its name, or else by its index (as text or a number)."""
        if isinstance(name, str) and name in self.class_names:
            return self.class_names.index(name)
        text = str(name).strip()
        if text.isdigit() and int(text) < len(self.class_names):
            return int(text)
        shown = ", ".join(self.class_names)
        raise UnknownClass(f"no class {name!r} in this run; its classes are: {shown}")

    def cell(self, true: str | int, predicted: str | int) -> np.ndarray:
        """Positions of the test images of class `true` predicted as `predicted`: mistakes the
        most confident first (the predicted class's probability, highest first); for the same
        class twice, its correct ones, the least sure first (highest loss)."""
        truth, guess = self.class_index(true), self.class_index(predicted)
        chosen = np.flatnonzero((self.labels == truth) & (self.predicted == guess))
        if truth == guess:
            return self._by_loss(chosen)
        confidence = self.probabilities[chosen, guess].astype(np.float32)
        return chosen[np.argsort(-confidence, kind="stable")]

    def top_losses(self) -> np.ndarray:
        """Positions of every test image, highest loss first."""
        return self._by_loss(np.arange(len(self)))

    def _by_loss(self, positions: np.ndarray) -> np.ndarray:
        # A stable sort keeps equal losses in test order, so the choice is reproducible.
        return positions[np.argsort(-self.losses[positions], kind="stable")]

    def image(self, position: int) -> Outcome:
        """The outcome at `position` (of `cell` or `top_losses`)."""
        return Outcome(
            index=int(self.index[position]),
            label=int(self.labels[position]),
            predicted=int(self.predicted[position]),
            probabilities=self.probabilities[position].astype(np.float32),
            loss=float(self.losses[position]),
            path=None if self.paths is None else self.paths[position],
        )

    # --- Their pictures -------------------------------------------------------------------

    def pictures(self, positions: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The pictures at `positions` as the model saw them: uint8 (H, W, C), which divided
        by 255 is the model's input. MissingTestData if the run's data cannot be read."""
        if self.paths is None:
            images = self._test_arrays()
            return [_with_channels(images[self.index[p]]) for p in positions]
        return [self._decode(int(p)) for p in positions]

    def _test_arrays(self) -> np.ndarray:
        """The test split's raw images (uint8), read once from the dataset the run names and
        checked against the recorded labels."""
        with self._lock:
            if self._test_images is None:
                self._test_images = self._read_test_arrays()
            return self._test_images

    def _read_test_arrays(self) -> np.ndarray:
        from cnnlab.data.datasets import load_dataset

        try:
            data = self.run.config().data
            dataset = load_dataset(data.dataset, data.data_dir or None, download=False)
        except CnnlabError as exc:
            raise MissingTestData(
                f"the run's test images cannot be read ({exc}); the mistakes need the dataset "
                "the run was evaluated on"
            ) from None
        labels = np.asarray(dataset.y_test).astype(np.int64).ravel()
        if len(labels) <= self.index.max(initial=-1) or not np.array_equal(
            labels[self.index], self.labels
        ):
            raise MissingTestData(
                f"{data.dataset}: its test set differs from the one evaluated; run `cnnlab "
                f"evaluate {self.run.dir}` again"
            )
        return np.asarray(dataset.x_test)

    def _decode(self, position: int) -> np.ndarray:
        """One folder picture through the run's recipe (kept in a small cache)."""
        with self._lock:
            if position in self._decoded:
                self._decoded.move_to_end(position)
                return self._decoded[position]
        assert self.paths is not None
        path = self._folder() / self.paths[position]
        try:
            pixels = self._recipe.load(path)
        except (ImageError, OSError) as exc:
            raise MissingTestData(
                f"{path}: the test picture cannot be read ({_said(exc)}); put the dataset "
                f"back, or run `cnnlab evaluate {self.run.dir}` again"
            ) from None
        with self._lock:
            self._decoded[position] = pixels
            while len(self._decoded) > CACHED_PICTURES:
                self._decoded.popitem(last=False)
        return pixels

    def _folder(self) -> Path:
        """Where the folder's pictures are: as evaluated, else where config.toml names it."""
        if self.root is not None and self.root.is_dir():
            return self.root
        try:
            configured = Path(self.run.config().data.dataset).expanduser()
        except CnnlabError:
            configured = None
        if configured is not None and configured.is_dir():
            return configured
        raise MissingTestData(
            f"{self.root}: the run's image folder is not there any more; put it back to open "
            "its mistakes"
        )

    @functools.cached_property
    def _recipe(self) -> Any:
        """The run's input recipe, read from run.json once (a finished run's does not change),
        not again for every picture."""
        recipe = self.run.input_recipe()
        if recipe is None:
            raise MissingTestData(
                f"{self.run.dir}: no input recipe recorded for its image folder; train it again"
            )
        return recipe


def _with_channels(image: np.ndarray) -> np.ndarray:
    pixels = np.asarray(image)
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def _said(exc: BaseException) -> str:
    if isinstance(exc, CnnlabError):
        return str(exc)
    return getattr(exc, "strerror", None) or type(exc).__name__
