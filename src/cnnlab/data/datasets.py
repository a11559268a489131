"""Datasets as validated numpy arrays, and their preparation into model-ready splits.

`load_dataset` reads Fashion-MNIST, MNIST, an `.npz` file or a folder of images into one
`Dataset`; `prepare` scales it, adds the channel axis and holds out a validation split.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data import sources
from cnnlab.data.folders import IMAGE_SUFFIXES, stratified_split
from cnnlab.data.idx import read_idx
from cnnlab.errors import ConfigError, DataError, ImageError

__all__ = ["IMAGE_SUFFIXES", "Dataset", "Splits", "describe", "load_dataset", "prepare"]

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "fashion_mnist"
DEFAULT_IMAGE_SIZE = (28, 28)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Raw images (uint8, N,H,W or N,H,W,C) and int64 labels, as read from disk."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str


@dataclass(frozen=True, eq=False)
class Splits:
    """Model-ready arrays: x float32 in [0, 1] shaped N,H,W,C; y int32 class indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one image, as a model's `Input` wants it (H, W, C)."""
        return tuple(self.x_train.shape[1:])


def load_dataset(
    spec: str | os.PathLike[str] = DEFAULT_DATASET,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
) -> Dataset:
    """Load a named IDX dataset, an `.npz` file or an image folder, checked for consistency.

    `image_size` (height, width) applies to image folders only; None keeps the first image's size.
    """
    if isinstance(spec, str) and sources.normalize_name(spec) in sources.DATASETS:
        return _load_idx(spec, data_dir, download=download)
    path = Path(spec).expanduser()
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path)
    if path.is_dir():
        return _load_image_folder(path, image_size)
    known = ", ".join(sorted(sources.DATASETS))
    raise DataError(
        f"{spec}: not a known dataset ({known}), an existing .npz file or an image folder"
    )


def prepare(
    dataset: Dataset,
    *,
    validation_split: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> Splits:
    """Scale to [0, 1], add the channel axis and hold out a stratified validation split.

    The split comes from the training set only and depends on `seed` alone; `limit` keeps
    the first `limit` training images first, for quick runs.
    """
    if not 0 <= validation_split < 1:
        raise ConfigError(f"validation_split={validation_split}: must be in [0, 1)")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit}: must be a positive number of images")
    x, y = dataset.x_train[:limit], dataset.y_train[:limit]
    n_val = round(len(y) * validation_split)
    if n_val >= len(y):
        raise ConfigError(
            f"validation_split={validation_split} leaves no training images out of {len(y)}"
        )
    train, val = stratified_split(y, n_val, seed)
    return Splits(
        x_train=_scale(x[train]),
        y_train=y[train].astype(np.int32),
        x_val=_scale(x[val]),
        y_val=y[val].astype(np.int32),
        x_test=_scale(dataset.x_test),
        y_test=dataset.y_test.astype(np.int32),
        class_names=dataset.class_names,
    )


def describe(
    name: str = DEFAULT_DATASET,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> list[dict[str, Any]]:
    """One row per file of a dataset (role, path, origin, count, shape, checksum, problem).

    Every IDX file is read in full, so a truncated or corrupt file is reported here rather
    than at training time. Every file gets its row even when another fails: `checksum` is
    "ok", "unknown" (no digest recorded), "mismatch" or "FAILED" (not found, not fetched or not
    readable), and `problem` says what is wrong ("" for a file that checks). An `.npz` file
    or an image folder gets one row per split.
    """
    if sources.normalize_name(name) not in sources.DATASETS and Path(name).expanduser().is_dir():
        return _describe_folder(Path(name).expanduser())
    if sources.normalize_name(name) not in sources.DATASETS:
        dataset = load_dataset(name, data_dir, download=download)
        return [
            {
                "role": split,
                "path": str(name),
                "origin": "given",
                "count": len(images),
                "shape": tuple(images.shape[1:]),
                "checksum": "n/a",
                "problem": "",
            }
            for split, images in (("train", dataset.x_train), ("test", dataset.x_test))
        ]
    rows = []
    for role, found in sources.locate_each(name, data_dir, download=download).items():
        if isinstance(found, DataError):
            rows.append(_failed_row(role, "-", "-", found))
            continue
        try:
            array = read_idx(found.path)
        except DataError as exc:
            rows.append(_failed_row(role, str(found.path), found.origin, exc))
            continue
        problem = ""
        if found.checksum == "mismatch":
            problem = f"{found.path}: content does not match the recorded {name} digest"
        rows.append(
            {
                "role": role,
                "path": str(found.path),
                "origin": found.origin,
                "count": array.shape[0],
                "shape": array.shape[1:],
                "checksum": found.checksum,
                "problem": problem,
            }
        )
    return rows


def _describe_folder(root: Path) -> list[dict[str, Any]]:
    """An image folder's splits from the files' headers alone (nothing is decoded): counts,
    the range of sizes, and the files that cannot be read."""
    from cnnlab.data.folders import inspect, scan

    dataset = scan(root)
    rows = []
    for role, split in (
        ("train", dataset.train),
        ("validation", dataset.val),
        ("test", dataset.test),
    ):
        if not len(split):
            continue
        inspection = inspect(split.paths, warn=False)
        sizes = inspection.sizes[inspection.readable]
        shape = (
            f"{sizes[:, 0].min()}x{sizes[:, 1].min()}..{sizes[:, 0].max()}x{sizes[:, 1].max()}"
            if len(sizes)
            else "-"
        )
        problems = inspection.problems
        rows.append(
            {
                "role": role,
                "path": str(root),
                "origin": "given",
                "count": len(split) - len(problems),
                "shape": shape,
                "checksum": "n/a",
                "problem": f"{len(problems)} unreadable: {next(iter(problems.values()))}"
                if problems
                else "",
            }
        )
    return rows


def _failed_row(role: str, path: str, origin: str, error: DataError) -> dict[str, Any]:
    return {
        "role": role,
        "path": path,
        "origin": origin,
        "count": "-",
        "shape": "-",
        "checksum": "FAILED",
        "problem": str(error),
    }


def _load_idx(name: str, data_dir: str | os.PathLike[str] | None, *, download: bool) -> Dataset:
    located = sources.locate(name, data_dir, download=download)
    arrays = {role: read_idx(file.path) for role, file in located.files.items()}
    spec, paths = located.spec, {role: file.path for role, file in located.files.items()}
    n_classes = len(spec.class_names)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check_pair(images, labels, paths[f"{split}_images"], paths[f"{split}_labels"], n_classes)
    _check_same_image_shape(arrays["train_images"], arrays["test_images"], paths["test_images"])
    origins = sorted({f"{file.path.parent} ({file.origin})" for file in located.files.values()})
    checks = sorted({file.checksum for file in located.files.values()})
    return Dataset(
        name=spec.name,
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
        class_names=spec.class_names,
        source=f"{spec.name} from {', '.join(origins)}; checksums {'/'.join(checks)}",
    )


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing arrays {', '.join(missing)}; an .npz dataset needs "
                    f"{', '.join(NPZ_KEYS)} (and optionally class_names)"
                )
            arrays = {key: archive[key] for key in NPZ_KEYS}
            names = archive["class_names"] if "class_names" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc

    labels = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DataError(
                f"{path}: x_{split} has dtype {x.dtype}; expected uint8 pixels 0..255 "
                "(save it with x.astype('uint8'))"
            )
        if y.ndim == 2 and y.shape[1] == 1:  # Keras' CIFAR style: labels shaped (N, 1)
            y = y[:, 0]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{path}: y_{split} must be a 1-D array of integer class indices, "
                f"got {y.dtype} {y.shape}"
            )
        labels.append(y.astype(np.int64))
    y_train, y_test = labels
    if names is not None:
        class_names = tuple(str(name) for name in names.reshape(-1))
    else:
        top = max(int(y.max(initial=-1)) for y in labels)
        class_names = tuple(str(index) for index in range(top + 1))
    where = f"{path}[x_train]", f"{path}[y_train]", f"{path}[x_test]", f"{path}[y_test]"
    _check_pair(arrays["x_train"], y_train, where[0], where[1], len(class_names))
    _check_pair(arrays["x_test"], y_test, where[2], where[3], len(class_names))
    _check_same_image_shape(arrays["x_train"], arrays["x_test"], where[2])
    return Dataset(
        name=path.stem,
        x_train=arrays["x_train"],
        y_train=y_train,
        x_test=arrays["x_test"],
        y_test=y_test,
        class_names=class_names,
        source=f"{path} (npz)",
    )


def _load_image_folder(root: Path, image_size: tuple[int, int] | None) -> Dataset:
    """An image folder read whole into memory as grey pictures at `image_size` (None: the first
    readable picture's size), for small folders in Python. Training streams a folder instead,
    in colour where it has colour (`cnnlab.data.feed`); the listing, splitting and decoding
    rules are `cnnlab.data.folders`' either way."""
    from cnnlab.data.folders import Recipe, inspect, scan

    dataset = scan(root, validation_fraction=0.0)
    inspection = inspect(dataset)  # names every unreadable file once
    readable = [p for p, ok in zip(inspection.paths, inspection.readable, strict=True) if ok]
    if not readable:
        raise DataError(f"{root}: no readable images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if image_size is None:
        height, width = inspection.sizes[inspection.readable][0]
        image_size = (int(height), int(width))
    recipe = Recipe(image_size, "grayscale", "squash")
    train = _decoded(dataset.train.without(inspection.problems), recipe)
    test = _decoded(dataset.test.without(inspection.problems), recipe)
    return Dataset(
        name=root.name,
        x_train=train[0],
        y_train=train[1],
        x_test=test[0],
        y_test=test[1],
        class_names=dataset.class_names,
        source=dataset.source,
    )


def _decoded(split: Any, recipe: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every readable picture of `split` as uint8 (N, H, W), and its labels."""
    images, labels = [], []
    for path, label in zip(split.paths, split.labels, strict=True):
        try:
            images.append(recipe.load(path)[..., 0])
        except ImageError as exc:
            logger.warning("skipping %s", exc)
            continue
        labels.append(int(label))
    height, width = recipe.size
    stacked = np.stack(images) if images else np.zeros((0, height, width), np.uint8)
    return stacked, np.asarray(labels, dtype=np.int64)


def _check_pair(
    images: np.ndarray, labels: np.ndarray, images_name: object, labels_name: object, n_classes: int
) -> None:
    """Images and labels agree in count, shapes are image-like, labels index a class."""
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise DataError(
            f"{images_name}: expected uint8 images shaped N,H,W or N,H,W,C, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_name}: expected a 1-D array of labels, got {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_name} holds {len(images):,} images but {labels_name} holds "
            f"{len(labels):,} labels; they must come from the same dataset"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{labels_name}: labels range {labels.min()}..{labels.max()}, outside the "
            f"{n_classes} classes 0..{n_classes - 1}"
        )


def _check_same_image_shape(train: np.ndarray, test: np.ndarray, test_name: object) -> None:
    if train.shape[1:] != test.shape[1:]:
        raise DataError(
            f"{test_name}: test images are {test.shape[1:]} but training images are "
            f"{train.shape[1:]}"
        )


def _scale(images: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1], with a channel axis for grayscale."""
    scaled = images.astype(np.float32) / np.float32(255)
    return scaled[..., np.newaxis] if scaled.ndim == 3 else scaled
