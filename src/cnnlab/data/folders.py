"""Image folders streamed from disk: any size, any colour, any mode Pillow reads.

A folder dataset is class sub-folders (`root/<class>/*.jpg`), or `train/` and `test/` (and
optionally `val/`, `valid/` or `validation/`) each holding the same class sub-folders.

- `scan` lists the files and their labels, and splits them (seeded, stratified) where the folder
  does not: nothing is decoded.
- `inspect` reads only the headers (size, mode) of every file, so the defaults can come from the
  data (`choose_image_size`, `choose_color`) and most unreadable files are found up front.
- `Recipe` is how one picture becomes a model input (size, colour, resize mode). Training and
  prediction both call `Recipe.load`, so a new photo is prepared exactly as the training images
  were; `to_dict`/`from_dict` let a run record it.
- `stream` is a `keras.utils.PyDataset` that decodes each batch in parallel threads (Pillow
  releases the GIL while decoding and resizing), reshuffles per epoch by seed, resumes like
  `cnnlab.pipeline` (`skip_epochs`), and holds only a few batches in memory, however large the
  folder. An unreadable file is skipped, named once in a warning and counted in `skipped`.

Backend-neutral: numpy and Pillow only; Keras is imported when `stream` builds its dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias, cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.data.images import MAX_PIXELS  # the limit only; its locked decoding is not used here
from cnnlab.errors import ConfigError, DataError, ImageError

__all__ = [
    "COLORS",
    "IMAGE_SUFFIXES",
    "RESIZE_MODES",
    "FolderBatches",
    "FolderDataset",
    "Inspection",
    "Recipe",
    "Split",
    "choose_color",
    "choose_image_size",
    "inspect",
    "scan",
    "stratified_split",
    "stream",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File suffixes read as images (compared lower-case); every other file is ignored."""
VALIDATION_NAMES = ("val", "valid", "validation")
SPLIT_NAMES = frozenset({"train", "test", *VALIDATION_NAMES})
TEST_FRACTION = 1 / 6
"""Held out for testing when the folder has no test/: Fashion-MNIST's own ratio."""
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 0
"""The test hold-out's seed: fixed, so runs with different training seeds share one test set."""

COLORS = ("rgb", "grayscale")
RESIZE_MODES = ("squash", "crop", "pad")
AUTO_SIZE_MULTIPLE = 8
AUTO_SIZE_RANGE = (32, 128)
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
"""Modes that cannot hold colour; any other mode (RGB, RGBA, P, CMYK, YCbCr...) may."""
COLOR_SAMPLE = 256
COLOR_SPREAD = 24
"""A pixel is coloured when its channels differ by more than this (of 255): JPEG's chroma noise
on a grey picture stays well below it."""
COLOR_FRACTION = 0.01
"""A picture is coloured when more than this fraction of its pixels is."""

Color: TypeAlias = Literal["rgb", "grayscale"]
Resize: TypeAlias = Literal["squash", "crop", "pad"]
Source: TypeAlias = str | os.PathLike[str] | bytes | BinaryIO
_Box: TypeAlias = tuple[float, float, float, float]
_ORIENTATION = 0x0112
_SWAPPING = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the picture by 90 degrees
_TRANSPOSES = {  # EXIF orientation -> what puts the stored picture upright (as ImageOps does)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# -- listing and splitting ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Split:
    """Files and their class indices, in a deterministic order."""

    paths: tuple[Path, ...]
    labels: np.ndarray  # int32, one per path

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Iterable[int]) -> Split:
        rows = np.asarray(list(indices), dtype=np.int64)
        return Split(tuple(self.paths[i] for i in rows), self.labels[rows])

    def without(self, paths: Iterable[str | os.PathLike[str]]) -> Split:
        """This split less `paths` (e.g. `Inspection.problems`, found unreadable up front)."""
        drop = {os.fspath(path) for path in paths}
        return self.subset(i for i, path in enumerate(self.paths) if os.fspath(path) not in drop)

    def counts(self, n_classes: int) -> np.ndarray:
        """Files per class."""
        return np.bincount(self.labels, minlength=n_classes)


@dataclass(frozen=True, eq=False)
class FolderDataset:
    """A scanned image folder: class names from its sub-folders, and three splits of files."""

    root: Path
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    layout: Literal["classes", "splits"]
    source: str  # how the splits were made, for messages and run.json
    ignored: int = 0  # files that are not images (README, .DS_Store, hidden files)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file of every split."""
        return self.train.paths + self.val.paths + self.test.paths


def scan(
    root: str | os.PathLike[str],
    *,
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    split_seed: int = SPLIT_SEED,
) -> FolderDataset:
    """List an image folder's files and labels and split them; nothing is decoded.

    Without a test/ folder, `test_fraction` of the files is held out for testing (stratified,
    by `split_seed`); without a validation folder, `validation_fraction` of the training files is
    held out for validation (stratified, by `seed`, as `cnnlab.data.prepare` does).
    """
    if not 0 <= validation_fraction < 1:
        raise ConfigError(f"validation_split={validation_fraction}: must be in [0, 1)")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction={test_fraction}: must be in [0, 1)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass a folder of class sub-folders")
    folders = _subfolders(root)
    splits = {name.lower(): path for name, path in folders.items() if name.lower() in SPLIT_NAMES}
    if not splits:
        class_names = _class_names(root, folders)
        files, ignored = _list_files(root, class_names)
        train, test = _hold_out(files, test_fraction, split_seed)
        train, val = _hold_out(train, validation_fraction, seed)
        how = f"{len(test)} of {len(files)} images held out for testing"
        _check_every_class_trains(train, class_names, root)
        return FolderDataset(
            root, class_names, train, val, test, "classes", _describe(root, how, val), ignored
        )

    others = sorted(name for name in folders if name.lower() not in SPLIT_NAMES)
    if others:
        raise DataError(
            f"{root}: mixes split folders ({', '.join(sorted(splits))}) with other folders "
            f"({', '.join(others)}); put every class folder inside train/ (and test/)"
        )
    if "train" not in splits:
        raise DataError(f"{root}: has {', '.join(sorted(splits))}/ but no train/ folder; add one")
    validation = [name for name in VALIDATION_NAMES if name in splits]
    if len(validation) > 1:
        raise DataError(
            f"{root}: has {' and '.join(n + '/' for n in validation)}; keep one validation folder"
        )
    class_names = _class_names(splits["train"], _subfolders(splits["train"]))
    for name, path in splits.items():
        if name != "train":
            _check_same_classes(path, class_names, splits["train"])
    train, ignored = _list_files(splits["train"], class_names)
    parts = ["train/"]
    if "test" in splits:
        test, more = _list_files(splits["test"], class_names, every_class=False)
        ignored += more
        parts.append("test/")
    else:
        train, test = _hold_out(train, test_fraction, split_seed)
    if validation:
        val, more = _list_files(splits[validation[0]], class_names, every_class=False)
        ignored += more
        parts.append(f"{validation[0]}/")
    else:
        train, val = _hold_out(train, validation_fraction, seed)
    how = " + ".join(parts) + " folders"
    if "test" not in splits:
        how += f", {len(test)} training images held out for testing"
    _check_every_class_trains(train, class_names, splits["train"])
    return FolderDataset(
        root, class_names, train, val, test, "splits", _describe(root, how, val), ignored
    )


def _describe(root: Path, how: str, val: Split) -> str:
    return f"{root} (image folder, {how}; {len(val)} for validation)"


def _subfolders(directory: Path) -> dict[str, Path]:
    """Visible sub-folders by name: hidden ones (.git, .ipynb_checkpoints) are not classes."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise DataError(
            f"{directory}: cannot list the folder ({exc}); check its permissions"
        ) from None
    return {
        p.name: p
        for p in entries
        if p.is_dir() and not p.name.startswith((".", "__")) and not _holds_runs(p)
    }


RUN_MARKER = "run.json"
"""The file every cnnlab run folder holds (`cnnlab.runs.STATE_FILE`): a folder with one, or
whose sub-folders have one, is cnnlab's output, never a class of pictures."""


def _holds_runs(folder: Path) -> bool:
    """Whether `folder` is a run folder, or a runs folder: run folders and no pictures of its
    own (`cnnlab train --dataset .` from inside the picture folder writes runs/ there, with PNG
    pictures in its run folders). A class folder with a run folder inside stays a class; the
    run folder itself is skipped when its pictures are listed."""
    if (folder / RUN_MARKER).is_file():
        return True
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    pictures = any(e.suffix.lower() in IMAGE_SUFFIXES and e.is_file() for e in entries)
    return not pictures and any((e / RUN_MARKER).is_file() for e in entries if e.is_dir())


def _class_names(directory: Path, folders: Mapping[str, Path]) -> tuple[str, ...]:
    if not folders:
        raise DataError(
            f"{directory}: no class sub-folders; put each class's images in a folder named "
            "after the class (or use train/ and test/ folders that hold them)"
        )
    if len(folders) < 2:
        raise DataError(
            f"{directory}: only one class folder ({next(iter(folders))}); a classifier needs "
            "at least two"
        )
    return tuple(sorted(folders))


def _check_same_classes(directory: Path, class_names: tuple[str, ...], train_dir: Path) -> None:
    found = tuple(sorted(_subfolders(directory)))
    if found == class_names:
        return
    missing = sorted(set(class_names) - set(found))
    extra = sorted(set(found) - set(class_names))
    said = "; ".join(
        part
        for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"not in train/: {', '.join(extra)}" if extra else "",
        )
        if part
    )
    raise DataError(
        f"{directory}: class folders differ from {train_dir}'s ({said}); every split needs the "
        "same class sub-folders"
    )


def _list_files(
    directory: Path, class_names: tuple[str, ...], *, every_class: bool = True
) -> tuple[Split, int]:
    """Image files under `directory/<class>/` (sub-folders included), sorted; and how many
    other files were ignored."""
    paths: list[Path] = []
    labels: list[int] = []
    ignored = 0
    for label, name in enumerate(class_names):
        found, skipped = _images_under(directory / name)
        ignored += skipped
        if not found and every_class:
            raise DataError(
                f"{directory / name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "add some or remove the folder"
            )
        paths.extend(found)
        labels.extend([label] * len(found))
    if not paths:
        raise DataError(
            f"{directory}: no images in its class folders "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder"
        )
    return Split(tuple(paths), np.asarray(labels, dtype=np.int32)), ignored


def _images_under(directory: Path) -> tuple[list[Path], int]:
    """Image files below `directory`, in sorted relative-path order, and the count of others."""
    found: list[tuple[str, Path]] = []
    ignored = 0
    for folder, dirs, files in os.walk(directory):
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith((".", "__")) and not (Path(folder, d) / RUN_MARKER).is_file()
        ]
        for name in files:
            path = Path(folder, name)
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored += 1
                continue
            found.append((path.relative_to(directory).as_posix(), path))
    found.sort()
    return [path for _, path in found], ignored


def stratified_split(labels: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, ...]:
    """Indices (kept, held out), sorted, with `n_holdout` held out in class proportion.

    The same rule as `cnnlab.data.datasets`: each sample is ranked by its position within its
    class in a seeded shuffle, and the lowest ranks are held out.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[order]
    rank = np.empty(len(labels))
    for label in np.unique(shuffled):
        members = shuffled == label
        count = int(members.sum())
        rank[members] = (np.arange(count) + 0.5) / count
    by_rank = order[np.argsort(rank, kind="stable")]
    return np.sort(by_rank[n_holdout:]), np.sort(by_rank[:n_holdout])


def _hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    n_holdout = round(len(split) * fraction)
    if n_holdout and n_holdout >= len(split):
        raise DataError(
            f"holding out {fraction:.0%} of {len(split)} images leaves none to train on; "
            "add images or lower the fraction"
        )
    kept, held = stratified_split(split.labels, n_holdout, seed)
    return split.subset(kept), split.subset(held)


def _check_every_class_trains(train: Split, class_names: tuple[str, ...], directory: Path) -> None:
    """A class whose images were all held out could never be learned: say which, and why."""
    counts = train.counts(len(class_names))
    empty = [name for name, count in zip(class_names, counts, strict=True) if not count]
    if empty:
        raise DataError(
            f"{directory / empty[0]}: too few images to hold some out for testing and "
            "validation and still train on one; add images or lower the fractions"
        )


# -- headers: sizes, modes, defaults -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Inspection:
    """What the headers say, one row per file; decoding nothing.

    `sizes` holds (height, width) as the picture is seen upright (EXIF rotation applied, except
    a PNG's EXIF stored after its pixels, which only decoding reaches), (0, 0) for a file in
    `problems` (path -> why it cannot be read).
    """

    paths: tuple[Path, ...]
    sizes: np.ndarray  # (N, 2) int64
    modes: tuple[str, ...]
    formats: tuple[str, ...]
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def readable(self) -> np.ndarray:
        """A mask of the files whose header was read and within the pixel limit."""
        return np.asarray([os.fspath(p) not in self.problems for p in self.paths], dtype=bool)


def inspect(
    source: FolderDataset | Iterable[str | os.PathLike[str]],
    *,
    max_pixels: int = MAX_PIXELS,
    warn: bool = True,
) -> Inspection:
    """Read every file's header (Pillow's `Image.open` decodes no pixel): size, mode, format.

    Empty files, files that are not images, and pictures over `max_pixels` land in `problems`, each
    named once in a warning (unless `warn` is False: a look that is not the one reading). Truncated
    pixel data is only found when decoding (`stream`).
    """
    paths = tuple(Path(p) for p in (source.paths if isinstance(source, FolderDataset) else source))
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    modes: list[str] = []
    formats: list[str] = []
    problems: dict[str, str] = {}
    for row, path in enumerate(paths):
        try:
            with _open(path, os.fspath(path)) as image:
                _check_pixels(image, os.fspath(path), max_pixels)
                width, height = image.size
                if _orientation(image) in _SWAPPING:
                    width, height = height, width
                sizes[row] = height, width
                modes.append(image.mode)
                formats.append(image.format or "")
        except ImageError as exc:
            problems[os.fspath(path)] = str(exc)
            if warn:
                logger.warning("skipping %s", exc)
            modes.append("")
            formats.append("")
    return Inspection(paths, sizes, tuple(modes), tuple(formats), problems)


def choose_image_size(
    inspection: Inspection,
    *,
    multiple: int = AUTO_SIZE_MULTIPLE,
    limits: tuple[int, int] = AUTO_SIZE_RANGE,
) -> tuple[int, int]:
    """The default input size (height, width): square, the median short side of the pictures,
    rounded to a multiple of 8 and clamped to [32, 128].

    The median short side: enlarging most pictures adds pixels but no detail, and shrinking
    most loses detail, so the typical picture's own resolution is the natural size; the short
    side, because crop and squash both keep it. Square, because pictures of one folder rarely
    share an aspect ratio and every resize mode handles the difference. A multiple of 8, so
    three 2x poolings divide it evenly. At least 32, so a few poolings leave a feature map; at
    most 128, because the cost of a CNN's early layers grows with the pixel count and a few
    thousand pictures at 128x128 already train in minutes, not hours, on a 2-core CPU: larger
    is for `--image-size`.
    """
    ok = inspection.readable
    if not ok.any():
        raise DataError("no readable images to choose a size from; check the folder's files")
    short = float(np.median(inspection.sizes[ok].min(axis=1)))
    side = round(short / multiple) * multiple
    side = min(max(side, limits[0]), limits[1])
    return side, side


def choose_color(inspection: Inspection, *, sample: int = COLOR_SAMPLE, seed: int = 0) -> Color:
    """ "rgb" when any picture has colour, else "grayscale" (what `--color auto` means).

    Grey modes (L, LA, 1, I;16, I, F) cannot hold colour, so a folder of only those is grey
    without decoding anything. Pictures in a colour mode (RGB, RGBA, P, CMYK...) are often grey
    all the same (scans, black-and-white photos saved as JPEG), so up to `sample` of them
    (seeded choice) are decoded as small thumbnails (JPEG `draft`: 1/8-scale decoding) and
    the answer is "rgb" as soon as one has more than 1% of pixels whose channels differ by more
    than 24 of 255.
    """
    candidates = [
        path
        for path, mode, ok in zip(
            inspection.paths, inspection.modes, inspection.readable, strict=True
        )
        if ok and mode not in GREY_MODES
    ]
    if len(candidates) > sample:
        chosen = np.sort(np.random.default_rng(seed).choice(len(candidates), sample, replace=False))
        candidates = [candidates[i] for i in chosen]
    for path in candidates:
        try:
            thumbnail = _thumbnail(path)
        except ImageError as exc:
            logger.warning("skipping %s", exc)
            continue
        if has_color(thumbnail):
            return "rgb"
    return "grayscale"


def has_color(pixels: np.ndarray) -> bool:
    """Whether an (H, W, 3) uint8 picture has colour: see `choose_color`."""
    wide = pixels.astype(np.int16)
    spread = wide.max(axis=-1) - wide.min(axis=-1)
    return bool(np.mean(spread > COLOR_SPREAD) > COLOR_FRACTION)


def _thumbnail(path: Path, side: int = 64) -> np.ndarray:
    name = os.fspath(path)
    with _open(path, name) as image:
        _check_pixels(image, name, MAX_PIXELS)
        with _decoder_errors(name):
            image.draft("RGB", (side, side))
            image.load()
            rgb = _to_mode(image, "RGB")
            rgb.thumbnail((side, side), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)


# -- the recipe: one picture in, one model input out -------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How a picture becomes a model input: its size (height, width), colour and resize mode.

    - squash: resize to exactly the size, ignoring the aspect ratio (nothing is lost; shapes
      stretch), as `keras.utils.image_dataset_from_directory` does by default.
    - crop: scale so the picture covers the size, then keep the centre (no stretching; the
      edges of a picture of another aspect are lost).
    - pad: scale so the picture fits inside, then fill the rest with the mean colour of the
      picture's own edge pixels (no stretching, nothing lost). Not black: a black band is a
      strong, artificial edge whose position tells the model the aspect ratio, while the edge
      colour continues the background the way most photos' backgrounds already run.

    The EXIF orientation is honoured (the turn `ImageOps.exif_transpose` makes, done on the
    resized picture). Transparency is composited on white, as a browser shows it on a white
    page; 16-bit grey (I;16, I) is scaled from 0..65535, float (F) from 0..1; the first frame of
    an animation is used. Pixels are quantised to uint8 before scaling to [0, 1], so a cached
    picture equals a freshly decoded one.
    """

    size: tuple[int, int]
    color: Color = "rgb"
    resize: Resize = "squash"

    def __post_init__(self) -> None:
        size = tuple(self.size)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise ConfigError(
                f"image size {self.size!r}: must be two positive whole numbers (height, width)"
            )
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if self.color not in COLORS:
            raise ConfigError(f"color={self.color!r}: must be one of {', '.join(COLORS)}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize={self.resize!r}: must be one of {', '.join(RESIZE_MODES)}")

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C), as a model's `Input` wants it."""
        return self.size[0], self.size[1], self.channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for run.json: {"size": [H, W], "color": ..., "resize": ...}."""
        return {"size": list(self.size), "color": self.color, "resize": self.resize}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The recipe `to_dict` recorded; a clear ConfigError for anything else."""
        try:
            size = data["size"]
            return cls((size[0], size[1]), data["color"], data["resize"])
        except (KeyError, TypeError, IndexError) as exc:
            raise ConfigError(
                f"recipe {data!r}: expected size [H, W], color and resize ({exc!r})"
            ) from None

    def load(self, source: Source, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """Decode a file (path, bytes or binary file) into uint8 (H, W, C) pixels.

        The declared size is checked against `max_pixels` before decoding; JPEGs are decoded
        at the smallest DCT scale that still covers the size (`Image.draft`), so a 12-megapixel
        photo costs a fraction of a full decode. Raises ImageError naming the file.
        """
        name = _name(source)
        with _open(source, name) as image:
            _check_pixels(image, name, max_pixels)
            return self.pixels(image, name=name)

    def apply(self, image: Image.Image) -> np.ndarray:
        """The model input for a Pillow image: float32 (H, W, C) in [0, 1].

        For the same result as training, give the image as `Image.open` returned it (not yet
        loaded), or use `load` on the file: a JPEG is then decoded at the same reduced scale.
        """
        return scale(self.pixels(image))

    def pixels(self, image: Image.Image, *, name: str | None = None) -> np.ndarray:
        """`apply` before scaling to [0, 1]: uint8 (H, W, C).

        The picture is resized as stored and turned upright afterwards (an exact pixel
        permutation, on the small result), and every size and box is computed from the stored
        size, so a JPEG decoded at a reduced DCT scale gets the same geometry as a full decode.
        """
        name = name or _name(image)
        height, width = self.size
        with _decoder_errors(name):
            orientation = _orientation(image)
            target = (width, height) if orientation not in _SWAPPING else (height, width)
            original = image.size
            drafted = image.draft(
                "L" if self.color == "grayscale" else "RGB", self._draft_size(original, target)
            )
            image.load()
            if orientation == 1:  # a PNG may keep its EXIF after the pixels
                orientation = _orientation(image)
                target = (width, height) if orientation not in _SWAPPING else (height, width)
            # The region of the (drafted) pixels that holds the whole stored picture.
            region = drafted[1] if drafted else (0.0, 0.0, *map(float, image.size))
            image = _to_mode(image, "RGB" if self.color == "rgb" else "L")
            image = self._resize(image, original, region, target)
            if orientation in _TRANSPOSES:
                image = image.transpose(_TRANSPOSES[orientation])
            pixels = np.asarray(image, dtype=np.uint8)
        return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels

    def _draft_size(self, original: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
        """The smallest (width, height) the stored picture may be decoded at (JPEG draft)."""
        (w, h), (width, height) = original, target
        if self.resize == "squash":
            return width, height
        ratio = (max if self.resize == "crop" else min)(width / w, height / h)
        return max(1, math.ceil(w * ratio)), max(1, math.ceil(h * ratio))

    def _resize(
        self,
        image: Image.Image,
        original: tuple[int, int],
        region: Sequence[float],
        target: tuple[int, int],
    ) -> Image.Image:
        """Resize to `target` (width, height), deciding on the `original` stored size; `region`
        is where the original lies in `image`'s pixels (all of it unless JPEG-drafted)."""
        (w, h), (width, height) = original, target
        to_image = (region[2] - region[0]) / w, (region[3] - region[1]) / h

        def box(left: float, top: float, right: float, bottom: float) -> _Box:
            return left * to_image[0], top * to_image[1], right * to_image[0], bottom * to_image[1]

        if self.resize == "squash":
            return _resized(image, (width, height), box(0, 0, w, h))
        if self.resize == "crop":  # the centred box of the target's aspect ratio, in one step
            if w * height > h * width:  # wider than the target
                kept = h * width / height
                return _resized(image, (width, height), box((w - kept) / 2, 0, (w + kept) / 2, h))
            kept = w * height / width
            return _resized(image, (width, height), box(0, (h - kept) / 2, w, (h + kept) / 2))
        ratio = min(width / w, height / h)
        inner = (min(width, max(1, round(w * ratio))), min(height, max(1, round(h * ratio))))
        fitted = _resized(image, inner, box(0, 0, w, h))
        if inner == (width, height):
            return fitted
        canvas = Image.new(fitted.mode, (width, height), _edge_color(fitted))
        canvas.paste(fitted, ((width - inner[0]) // 2, (height - inner[1]) // 2))
        return canvas


def scale(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1], exactly as training batches are scaled."""
    return pixels.astype(np.float32) / np.float32(255)


def _resized(image: Image.Image, size: tuple[int, int], box: _Box) -> Image.Image:
    if image.size == size and box == (0, 0, *size):
        return image
    # Bicubic with antialiasing (Pillow widens the filter when shrinking); reducing_gap first
    # box-averages by whole factors, which is faster for large shrinks at no visible cost.
    return image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def _edge_color(image: Image.Image) -> int | tuple[int, ...]:
    pixels = np.asarray(image)
    edges = np.concatenate(
        [pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]], axis=0
    ).astype(np.float64)
    mean = np.rint(edges.mean(axis=0)).astype(int)
    return int(mean) if mean.ndim == 0 else tuple(int(v) for v in mean)


def _to_mode(image: Image.Image, target: str) -> Image.Image:
    """Any Pillow mode to "RGB" or "L": transparency on white, 16-bit and float scaled."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        values = np.asarray(image)
        if mode == "F":
            grey = np.rint(np.clip(np.nan_to_num(values), 0, 1) * 255)
        else:
            wide = np.clip(values.astype(np.int64), 0, 65535)
            grey = (wide * 255 + 32767) // 65535
        image = Image.fromarray(grey.astype(np.uint8), "L")
    elif mode == "1":
        image = image.convert("L")
    elif "transparency" in image.info and mode in ("L", "RGB", "P"):
        image = image.convert("RGBA")
    elif mode in ("PA", "RGBa", "La"):
        image = image.convert("RGBA" if mode != "La" else "LA")
    if image.mode in ("RGBA", "LA"):
        image = _on_white(image)
    if image.mode != target:
        if target == "L" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, P: via RGB, as a viewer shows
        image = image.convert(target)
    return image


def _on_white(image: Image.Image) -> Image.Image:
    """Composite an RGBA or LA picture on white."""
    pixels = np.asarray(image).astype(np.uint32)
    color, alpha = pixels[..., :-1], pixels[..., -1:]
    blended = (color * alpha + 255 * (255 - alpha) + 127) // 255
    out = blended.astype(np.uint8)
    return Image.fromarray(out[..., 0] if image.mode == "LA" else out, image.mode[:-1])


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) without decoding: PNG keeps EXIF after its pixels at times,
    and Pillow would decode the picture to find it there, so a PNG's counts only in its header."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # broken EXIF is ignored, as photo viewers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return name if isinstance(name, str) and name else f"<{type(source).__name__}>"


@contextlib.contextmanager
def _open(source: Source | Path, name: str) -> Iterator[Image.Image]:
    """`Image.open` (headers only) whose failures are one ImageError naming the file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    with _decoder_errors(name):
        if isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
            raise ImageError(f"{name}: the file is empty (0 bytes); replace or remove it")
        image = Image.open(cast(Any, source))
    try:
        yield image
    finally:
        image.close()


@contextlib.contextmanager
def _decoder_errors(name: str) -> Iterator[None]:
    """Turn whatever Pillow raises on untrusted bytes into one ImageError naming the file.

    No warning filters are touched: they are process-wide, and decoding runs in threads.
    """
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{name}: too many pixels to decode safely ({_said(exc)}); downscale it"
        ) from None
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file; check the path") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image Pillow can read; re-save it as PNG or JPEG or remove it"
        ) from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode it; downscale it") from None
    except Exception as exc:  # decoders fed untrusted bytes fail in many ways; none escapes
        raise ImageError(
            f"{name}: truncated or corrupt image ({_said(exc)}); re-export it or remove it"
        ) from None


def _said(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,} (a decompression-bomb guard); downscale it or raise the limit"
        )


# -- streaming batches -------------------------------------------------------------------------


class FolderBatches:
    """Batches of (x float32 NHWC in [0, 1], y int32) decoded from files as they are asked for.

    Shuffled, each epoch's order depends only on `seed` and the epoch's number, exactly as in
    `cnnlab.pipeline`: a run resumed after `skip_epochs` finished epochs sees the orders an
    uninterrupted run would. Each batch's files are decoded by `threads` threads. Memory holds
    only the batches being made, unless `cache` is "memory" (every decoded picture kept, uint8)
    or a folder (a uint8 memory-mapped file there, keyed by the recipe and the files' sizes and
    times, reused by later runs; the operating system pages it in and out).

    An unreadable file is skipped: named once in a warning, recorded in `skipped` (path ->
    reason, for run.json) and left out of its batch, which is one smaller; later epochs leave
    it out without trying again. Should every file of a batch fail, the batch takes the next
    readable file in the epoch's order instead, so no batch is empty.

    This class needs no Keras; `stream` makes the `keras.utils.PyDataset` that `fit` takes.
    """

    def __init__(
        self,
        split: Split,
        recipe: Recipe,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        skip_epochs: int = 0,
        threads: int | None = None,
        cache: Literal["memory"] | str | os.PathLike[str] | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: must be a positive number of images")
        if not len(split):
            raise DataError("no images to stream; check the folder and its split")
        self.paths = split.paths
        self.labels = np.asarray(split.labels, dtype=np.int32)
        self.recipe = recipe
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.skipped: dict[str, str] = {}
        self._shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        n = len(self.paths)
        self._order = self._rng.permutation(n) if shuffle else np.arange(n)
        for _ in range(skip_epochs if shuffle else 0):  # the orders of finished epochs
            self._order = self._rng.permutation(n)
        self._threads = max(1, threads if threads is not None else min(4, os.cpu_count() or 1))
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # guards `skipped` and the pool's creation, not decoding
        self._cache = _make_cache(cache, self.paths, recipe)
        self._part: tuple[int, int, int] | None = None  # (index, count, devices): `take_part`

    def take_part(self, index: int, count: int, devices: int) -> None:
        """From now on decode only one process's part of every batch (data-parallel training):
        of each batch cut to a multiple of `devices`, the `index`-th of `count` equal slices;
        a last batch smaller than `devices` is left out. A picture that cannot be read is
        replaced by the next readable one in the epoch's order, so that every process feeds a
        slice of the same size, which a data-parallel step needs, and none decodes the
        others' pictures."""
        if not 0 <= index < count or devices < count or devices % count:
            raise ConfigError(
                f"part {index} of {count} over {devices} devices: need 0 <= index < count "
                "and devices a multiple of count"
            )
        self._part = (index, count, devices)

    @property
    def order(self) -> np.ndarray:
        """This epoch's order of file indices (a copy)."""
        return self._order.copy()

    def __len__(self) -> int:
        batches = math.ceil(len(self.paths) / self.batch_size)
        if self._part is not None and batches:
            last = len(self.paths) - (batches - 1) * self.batch_size
            batches -= last < self._part[2]  # too small to give every device a picture
        return batches

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if self._part is not None:
            return self._part_of(index, rows)
        decoded = self._decode([int(row) for row in rows])
        kept = [
            (row, pixels) for row, pixels in zip(rows, decoded, strict=True) if pixels is not None
        ]
        if not kept:
            kept = [self._next_readable(index)]
        return self._stacked(kept)

    def _part_of(self, index: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This process's slice of batch `index` (`take_part`), each unreadable picture
        replaced by the next readable one after the batch."""
        part, count, devices = self._part or (0, 1, 1)
        per_process = (len(rows) - len(rows) % devices) // count
        mine = [int(row) for row in rows[part * per_process : (part + 1) * per_process]]
        decoded = self._decode(mine)
        kept = [
            (row, pixels) if pixels is not None else self._next_readable(index)
            for row, pixels in zip(mine, decoded, strict=True)
        ]
        return self._stacked(kept)

    def _stacked(self, kept: Sequence[tuple[Any, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((len(kept), *self.recipe.input_shape), dtype=np.float32)
        for i, (_, pixels) in enumerate(kept):
            x[i] = pixels
        x /= np.float32(255)  # the same float32 division as `scale`
        y = self.labels[[row for row, _ in kept]]
        return x, y

    def on_epoch_end(self) -> None:
        if self._shuffle:
            self._order = self._rng.permutation(len(self.paths))

    def close(self) -> None:
        """Stop the decoding threads (they also stop when the object is collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _decode(self, rows: Sequence[int]) -> list[np.ndarray | None]:
        if self._threads == 1 or len(rows) == 1:
            return [self._load(row) for row in rows]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="cnnlab-decode")
            pool = self._pool
        return list(pool.map(self._load, rows))

    def _load(self, row: int) -> np.ndarray | None:
        path = os.fspath(self.paths[row])
        if path in self.skipped:
            return None
        if self._cache is not None:
            cached = self._cache.get(row)
            if cached is not None:
                return cached
        try:
            pixels = self.recipe.load(path, max_pixels=self.max_pixels)
        except ImageError as exc:
            with self._lock:
                if path not in self.skipped:
                    self.skipped[path] = str(exc)
                    logger.warning("skipping %s", exc)
            return None
        if self._cache is not None:
            self._cache.put(row, pixels)
        return pixels

    def _next_readable(self, index: int) -> tuple[int, np.ndarray]:
        order = self._order
        start = (index + 1) * self.batch_size
        for step in range(len(order)):
            row = int(order[(start + step) % len(order)])
            pixels = self._load(row)
            if pixels is not None:
                return row, pixels
        raise DataError(
            f"none of the {len(order)} images could be read (first: "
            f"{next(iter(self.skipped.values()), '?')}); check the folder's files"
        )


def stream(
    split: Split,
    recipe: Recipe,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    skip_epochs: int = 0,
    threads: int | None = None,
    cache: Literal["memory"] | str | os.PathLike[str] | None = None,
    max_pixels: int = MAX_PIXELS,
    workers: int = 1,
    max_queue_size: int = 4,
) -> Any:
    """A `keras.utils.PyDataset` of `FolderBatches`, for `model.fit(..., shuffle=False)`.

    `threads` decode each batch's files in parallel. `workers` > 1 also has Keras prepare that
    many batches at once in threads, up to `max_queue_size` ahead of the model, which overlaps
    decoding with the training step; memory then holds at most `workers + max_queue_size`
    batches. Multiprocessing is not used: the threads already decode in parallel, and
    `skipped` stays in this process where run.json is written. Pass `shuffle=False` to `fit`:
    the dataset shuffles itself, by seed.
    """
    from cnnlab._backend import keras as _keras

    keras = _keras()

    class _FolderStream(FolderBatches, keras.utils.PyDataset):  # type: ignore[name-defined]
        def __init__(self) -> None:
            keras.utils.PyDataset.__init__(
                self, workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size
            )
            FolderBatches.__init__(
                self,
                split,
                recipe,
                batch_size,
                shuffle=shuffle,
                seed=seed,
                skip_epochs=skip_epochs,
                threads=threads,
                cache=cache,
                max_pixels=max_pixels,
            )

    return _FolderStream()


# -- caches of decoded pictures ----------------------------------------------------------------


class _MemoryCache:
    def __init__(self) -> None:
        self._arrays: dict[int, np.ndarray] = {}

    def get(self, row: int) -> np.ndarray | None:
        return self._arrays.get(row)

    def put(self, row: int, pixels: np.ndarray) -> None:
        self._arrays[row] = pixels


class _DiskCache:
    """uint8 pictures in one memory-mapped file, and a byte per picture saying it is there."""

    def __init__(self, folder: Path, paths: Sequence[Path], recipe: Recipe) -> None:
        digest = hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode())
        for path in paths:
            info = os.stat(path) if os.path.exists(path) else None
            stamp = f"{info.st_size}:{info.st_mtime_ns}" if info else "-"
            digest.update(f"\0{os.fspath(path)}\0{stamp}".encode())
        key = digest.hexdigest()[:20]
        folder.mkdir(parents=True, exist_ok=True)
        shape = (len(paths), *recipe.input_shape)
        pixels_file, flags_file = folder / f"{key}.pixels", folder / f"{key}.done"
        fresh = not (pixels_file.exists() and flags_file.exists())
        mode: Literal["r+", "w+"] = "w+" if fresh else "r+"
        self._flags = np.memmap(flags_file, dtype=np.uint8, mode=mode, shape=(len(paths),))
        self._pixels = np.memmap(pixels_file, dtype=np.uint8, mode=mode, shape=shape)

    def get(self, row: int) -> np.ndarray | None:
        return np.array(self._pixels[row]) if self._flags[row] else None

    def put(self, row: int, pixels: np.ndarray) -> None:
        self._pixels[row] = pixels
        self._flags[row] = 1  # after the pixels: a crash between the two only costs a decode


def _make_cache(
    cache: Literal["memory"] | str | os.PathLike[str] | None, paths: Sequence[Path], recipe: Recipe
) -> _MemoryCache | _DiskCache | None:
    if cache is None:
        return None
    if cache == "memory":
        return _MemoryCache()
    try:
        return _DiskCache(Path(cache), paths, recipe)
    except OSError as exc:
        raise DataError(
            f"{cache}: cannot keep the image cache there ({exc}); pick another folder"
        ) from None
