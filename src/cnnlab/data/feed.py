"""What training and evaluation are fed, whatever the data is made of.

Two kinds of dataset reach a model: arrays held in memory (Fashion-MNIST, MNIST and `.npz`
files: 28x28 grey, small enough to hold) and a folder of pictures (any size, any colour, any
number, streamed from disk through the run's `Recipe`). `train` and `evaluate` see one
interface, `Feed`: the class names and input shape, how many images each split holds, batches
for `model.fit`, plain NumPy batches for a loop, and a sample of training images (for the
first layer's whitening filters). `load_feed(config)` makes the right one.

    feed = load_feed(config)
    model.fit(feed.batches("train", 32, shuffle=True, seed=1), validation_data=...)
    for x, y in feed.numpy_batches("test", 256): ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from cnnlab.config import Config, DataConfig, image_size
from cnnlab.data.datasets import Splits, load_dataset, prepare
from cnnlab.data.folders import (
    FolderBatches,
    FolderDataset,
    Recipe,
    Split,
    choose_color,
    choose_image_size,
    inspect,
    scan,
    stream,
)
from cnnlab.data.pipeline import make_dataset
from cnnlab.errors import DataError

__all__ = [
    "ArrayFeed",
    "Feed",
    "FolderFeed",
    "SplitName",
    "balanced_class_weights",
    "load_feed",
    "resolve_folder_recipe",
]

log = logging.getLogger(__name__)

SplitName = Literal["train", "val", "test"]
SAMPLE_IMAGES = 2_000
"""Training images the first layer's whitening filters are computed from (a folder's are
decoded for it, so it stays a sample)."""
STREAM_WORKERS = 2
"""Batches Keras prepares at once ahead of the model (threads): decoding overlaps the step."""


class Feed(Protocol):
    """The data of one run, as training and evaluation take it."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def recipe(self) -> Recipe | None:
        """How a picture becomes an input; None: arrays ready as they are."""

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def unreadable(self) -> dict[str, str]: ...

    def count(self, split: SplitName) -> int: ...

    def class_counts(self, split: SplitName) -> np.ndarray: ...

    def batches(
        self,
        split: SplitName,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        skip_epochs: int = 0,
    ) -> Any: ...

    def numpy_batches(
        self, split: SplitName, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def arrays(self, split: SplitName) -> tuple[np.ndarray, np.ndarray]: ...

    def sample(self, count: int = SAMPLE_IMAGES) -> np.ndarray: ...

    def preview(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class ArrayFeed:
    """A dataset held in memory as arrays (`cnnlab.data.Splits`)."""

    splits: Splits
    recipe: Recipe | None = None
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.splits.class_names

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.splits.input_shape

    def count(self, split: SplitName) -> int:
        return len(self.arrays(split)[1])

    def class_counts(self, split: SplitName) -> np.ndarray:
        labels = np.asarray(self.arrays(split)[1]).astype(np.int64).ravel()
        return np.bincount(labels, minlength=len(self.class_names))

    def batches(
        self,
        split: SplitName,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        skip_epochs: int = 0,
    ) -> Any:
        x, y = self.arrays(split)
        return make_dataset(x, y, batch_size, shuffle=shuffle, seed=seed, skip_epochs=skip_epochs)

    def numpy_batches(
        self, split: SplitName, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        x, y = self.arrays(split)
        for start in range(0, len(y), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    def arrays(self, split: SplitName) -> tuple[np.ndarray, np.ndarray]:
        s = self.splits
        return {
            "train": (s.x_train, s.y_train),
            "val": (s.x_val, s.y_val),
            "test": (s.x_test, s.y_test),
        }[split]

    def sample(self, count: int = SAMPLE_IMAGES) -> np.ndarray:
        return self.splits.x_train  # in memory already: whitening takes what it needs

    def preview(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """`count` training pictures and labels, a seeded random choice."""
        x, y = self.arrays("train")
        rows = np.random.default_rng(seed).permutation(len(y))[:count]
        return x[rows], np.asarray(y)[rows]


@dataclass(frozen=True, eq=False)
class FolderFeed:
    """An image folder, streamed from disk: every picture made into an input by `recipe` as a
    batch asks for it, so memory holds a few batches, not the dataset."""

    dataset: FolderDataset
    recipe: Recipe
    cache: str = ""
    problems: dict[str, str] = field(default_factory=dict)  # found unreadable up front
    _streams: list[FolderBatches] = field(default_factory=list, repr=False)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset.class_names

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.recipe.input_shape

    @property
    def unreadable(self) -> dict[str, str]:
        """Every file skipped so far: those found unreadable up front, and those that failed
        to decode while streaming (path -> why)."""
        found = dict(self.problems)
        for batches in self._streams:
            found.update(batches.skipped)
        return found

    def split(self, name: SplitName) -> Split:
        return {"train": self.dataset.train, "val": self.dataset.val, "test": self.dataset.test}[
            name
        ]

    def count(self, split: SplitName) -> int:
        return len(self.split(split))

    def class_counts(self, split: SplitName) -> np.ndarray:
        return self.split(split).counts(len(self.class_names))

    def batches(
        self,
        split: SplitName,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        skip_epochs: int = 0,
    ) -> Any:
        made = stream(
            self.split(split),
            self.recipe,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            skip_epochs=skip_epochs,
            cache=self._cache_for(split),
            workers=STREAM_WORKERS,
        )
        self._streams.append(made)
        return made

    def numpy_batches(
        self, split: SplitName, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self.count(split):
            return
        batches = FolderBatches(
            self.split(split), self.recipe, batch_size, cache=self._cache_for(split)
        )
        self._streams.append(batches)
        try:
            for index in range(len(batches)):
                yield batches[index]
        finally:
            batches.close()

    def arrays(self, split: SplitName) -> tuple[np.ndarray, np.ndarray]:
        """A whole split in memory (for pictures of a few hundred test images, not training)."""
        parts = list(self.numpy_batches(split, 256))
        if not parts:
            return np.zeros((0, *self.input_shape), np.float32), np.zeros(0, np.int32)
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    def sample(self, count: int = SAMPLE_IMAGES) -> np.ndarray:
        """`count` training pictures (all, if fewer), spread evenly over the split."""
        train = self.dataset.train
        rows = np.unique(np.linspace(0, len(train) - 1, min(count, len(train))).round())
        chosen = train.subset(rows.astype(np.int64))
        batches = FolderBatches(chosen, self.recipe, 256)
        try:
            return np.concatenate([batches[i][0] for i in range(len(batches))])
        finally:
            batches.close()

    def preview(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """`count` training pictures and labels as the shuffled stream's first batch gives
        them (unreadable ones left out)."""
        batches = FolderBatches(self.dataset.train, self.recipe, count, shuffle=True, seed=seed)
        try:
            return batches[0]
        finally:
            batches.close()

    def _cache_for(self, split: SplitName) -> str | None:
        if not self.cache:
            return None
        return "memory" if self.cache == "memory" else str(Path(self.cache) / split)


def load_feed(config: Config, *, data_dir: str | None = None) -> ArrayFeed | FolderFeed:
    """The data `config` names: an image folder streamed through its recipe (which must be
    resolved: see `resolve_folder_recipe`), or a named or .npz dataset held in memory.

    `data_dir` overrides where a named dataset's files are looked for.
    """
    data = config.data
    if data.is_folder:
        root = Path(data.dataset).expanduser()
        dataset = scan(root, validation_fraction=data.validation_split, seed=config.train.seed)
        inspection = inspect(dataset)  # names every unreadable file once
        dataset = _without(dataset, inspection.problems, limit=data.limit)
        recipe = resolve_folder_recipe(data, inspection=inspection)
        log.info(
            "%s: %d classes; %d training, %d validation, %d test images; %s",
            dataset.source,
            len(dataset.class_names),
            len(dataset.train),
            len(dataset.val),
            len(dataset.test),
            describe_recipe(recipe),
        )
        return FolderFeed(dataset, recipe, cache=data.cache, problems=dict(inspection.problems))
    arrays = load_dataset(data.dataset, data_dir or data.data_dir or None, download=data.download)
    return ArrayFeed(
        prepare(
            arrays,
            validation_split=data.validation_split,
            seed=config.train.seed,
            limit=data.limit or None,
        )
    )


def resolve_folder_recipe(data: DataConfig, *, inspection: Any = None) -> Recipe:
    """The recipe an image folder's pictures go through: `data.image_size`, `color` and
    `resize`, with "auto" chosen from the pictures themselves (`choose_image_size`,
    `choose_color`: headers, and a sample of small thumbnails for the colour)."""
    size = image_size(data.image_size)
    color = data.color
    if size is None or color == "auto":
        if inspection is None:
            inspection = inspect(scan(Path(data.dataset).expanduser()), warn=False)
        if size is None:
            size = choose_image_size(inspection)
        if color == "auto":
            color = choose_color(inspection)
    return Recipe(size, color, data.resize)  # type: ignore[arg-type]


def describe_recipe(recipe: Recipe) -> str:
    height, width = recipe.size
    return f"pictures as {height}x{width} {recipe.color} ({recipe.resize})"


def _without(dataset: FolderDataset, problems: dict[str, str], *, limit: int = 0) -> FolderDataset:
    """`dataset` less the files found unreadable, and only the first `limit` training files."""
    train = dataset.train.without(problems)
    if limit and limit < len(train):  # a seeded choice: the first files would be one class
        train = train.subset(np.sort(np.random.default_rng(0).permutation(len(train))[:limit]))
    val, test = dataset.val.without(problems), dataset.test.without(problems)
    if not len(train):
        raise DataError(f"{dataset.root}: no readable training images; check the folder's files")
    return FolderDataset(
        dataset.root,
        dataset.class_names,
        train,
        val,
        test,
        dataset.layout,
        dataset.source,
        dataset.ignored,
    )


def balanced_class_weights(counts: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights, `n / (classes * n_c)` over the classes that have images
    (scikit-learn's "balanced"): each class then adds the same total to the loss, and a
    balanced dataset gets 1.0 everywhere. A class with no training image gets 0 (it cannot be
    learned; its weight would be infinite)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {int(c): round(float(w), 6) for c, w in enumerate(weights)}
