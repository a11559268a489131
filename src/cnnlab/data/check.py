"""`cnnlab data check`: what an image folder holds, and what in it would bias training.

Every image file is decoded through to its end (threads: Pillow releases the GIL while
decoding), because only decoding finds a truncated file, and only the decoded pixels tell two
encodings of one picture apart from two pictures. A large JPEG is decoded at a reduced DCT scale
(`Image.draft`), which still reads the whole file. From each file it keeps its size, mode and
format, an exact hash (sha256 of the upright RGB pixels, as the model would see them at full
size: a PNG and a lossless WebP of one picture match) and a `fingerprint` for near duplicates
(a perceptual hash that survives re-encoding, resizing and a brightness change, to find
candidates fast, and a small thumbnail to confirm them).

The splits are the folder's own: `train/`, `val/` (or `valid/`, `validation/`) and `test/` when
it has them, else one split "all" of its class folders. Nothing is held out, because a check
that invented a split would report leaks between files the user never separated.

Problems that bias training or evaluation are errors (`Report.errors`, exit 1): unreadable
files (training skips them, and the user should know which) and duplicates across splits (a
test picture also seen in training inflates the test score). Duplicates within a split and
class imbalance are warnings: they weigh some pictures more, but measure nothing wrongly.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.data.folders import _SWAPPING, _TRANSPOSES, _orientation, _to_mode, scan
from cnnlab.data.images import MAX_PIXELS
from cnnlab.errors import ConfigError

__all__ = [
    "IMBALANCE_RATIO",
    "NEAR_SIMILARITY",
    "NEAR_THRESHOLD",
    "Duplicate",
    "Fingerprint",
    "Imbalance",
    "Report",
    "SplitSummary",
    "Spread",
    "Unreadable",
    "check_folder",
    "fingerprint",
    "format_report",
    "hamming",
    "near_pairs",
]

NEAR_THRESHOLD = 8
"""Largest Hamming distance (of 64 bits) between two perceptual hashes for a candidate pair."""
NEAR_SIMILARITY = 0.95
"""Smallest correlation of two candidates' 16x16 grey thumbnails for a near duplicate.

Both measured by benchmarks/near_duplicates.py on 1,000 sign pictures (all distinct) and a
copy of each re-encoded (JPEG quality 60..95), resized (50..150%) and brightened or darkened
(+-10%) at once: the hash alone at 8 bits misses 2% of copies but also pairs 0.017% of
distinct pictures (34,000 false pairs in a 20,000-image folder); confirmed by the thumbnails'
correlation >= 0.95 it misses 3.0% and pairs none of the 499,500 distinct pairs."""
IMBALANCE_RATIO = 3.0
"""A training split whose largest class has more than this many times the images of its
smallest is reported (a warning)."""
HASH_SIZE = 8
"""The perceptual hash keeps the 8x8 lowest frequencies: 64 bits."""
PHASH_SIDE = 32
THUMB_SIDE = 16
DRAFT_SIDE = 256
"""A JPEG at least twice this on its short side is decoded at a reduced scale (`_draft`)."""

Reason: TypeAlias = Literal["empty", "truncated", "corrupt", "not an image", "too large", "io"]


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Smallest, median and largest of some integers (pixels)."""

    min: int
    median: float
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Spread | None:
        if not len(values):
            return None
        return cls(int(min(values)), float(np.median(values)), int(max(values)))


@dataclass(frozen=True)
class SplitSummary:
    """One split: readable images per class, their sizes (upright), modes and formats.

    `modes` is the stored mode (RGB, L, P, RGBA, CMYK, I;16...): an odd mode is fine, the
    training recipe converts every one; it is shown so a surprise (a grey folder that is
    half CMYK) is seen.
    """

    name: str
    files: int  # image files, readable or not
    class_counts: dict[str, int]  # readable images per class
    width: Spread | None
    height: Spread | None
    modes: dict[str, int]
    formats: dict[str, int]

    @property
    def images(self) -> int:
        """Readable images."""
        return sum(self.class_counts.values())


@dataclass(frozen=True)
class Unreadable:
    """A file with an image suffix that cannot be used, and why (`reason` is one word,
    `detail` the decoder's own words)."""

    file: Path
    split: str
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Duplicate:
    """Two files holding the same picture: the same pixels (`exact`), or perceptual hashes
    `distance` bits apart whose thumbnails correlate by `similarity` (a re-encoded, resized or
    slightly changed copy)."""

    files: tuple[Path, Path]
    splits: tuple[str, str]
    classes: tuple[str, str]
    exact: bool
    distance: int
    similarity: float = 1.0

    @property
    def cross_split(self) -> bool:
        """A leak: the same picture in two splits (training and evaluation)."""
        return self.splits[0] != self.splits[1]


@dataclass(frozen=True)
class Imbalance:
    """The training split's largest and smallest classes (readable images)."""

    split: str
    largest: tuple[str, int]
    smallest: tuple[str, int]

    @property
    def ratio(self) -> float:
        return self.largest[1] / self.smallest[1] if self.smallest[1] else math.inf

    @property
    def suggestion(self) -> str:
        return (
            f"collect more {self.smallest[0]} images; --class-weight auto weighs the small "
            "classes up, but check its effect with cnnlab evaluate (docs/training.md)"
        )


@dataclass(frozen=True)
class Report:
    """What `check_folder` found. `errors` bias training or evaluation (exit 1); `warnings`
    are worth a look; `ignored` files are not images (README, .DS_Store) and were skipped."""

    root: Path
    layout: Literal["classes", "splits"]
    class_names: tuple[str, ...]
    splits: tuple[SplitSummary, ...]
    unreadable: tuple[Unreadable, ...]
    duplicates: tuple[Duplicate, ...]
    balance: Imbalance
    ignored: tuple[Path, ...]
    near_threshold: int
    imbalance_ratio: float = IMBALANCE_RATIO
    seconds: float = field(default=0.0, compare=False)

    @property
    def imbalanced(self) -> bool:
        return self.balance.ratio > self.imbalance_ratio

    @property
    def errors(self) -> int:
        """Problems that bias training or evaluation: unreadable files, cross-split duplicates."""
        return len(self.unreadable) + sum(d.cross_split for d in self.duplicates)

    @property
    def warnings(self) -> int:
        """Duplicates within a split, and class imbalance."""
        return sum(not d.cross_split for d in self.duplicates) + int(self.imbalanced)

    @property
    def exit_code(self) -> int:
        """1 when there are errors, else 0 (warnings do not fail a check)."""
        return 1 if self.errors else 0

    def problems(self) -> list[dict[str, Any]]:
        """Every problem as a JSON-ready object naming its file(s), errors first."""
        out: list[dict[str, Any]] = [
            {
                "kind": "unreadable",
                "severity": "error",
                "file": os.fspath(u.file),
                "split": u.split,
                "reason": u.reason,
                "detail": u.detail,
            }
            for u in self.unreadable
        ]
        for cross in (True, False):
            out.extend(
                {
                    "kind": "duplicate",
                    "severity": "error" if cross else "warning",
                    "files": [os.fspath(f) for f in d.files],
                    "splits": list(d.splits),
                    "classes": list(d.classes),
                    "exact": d.exact,
                    "distance": d.distance,
                    "similarity": round(d.similarity, 3),
                }
                for d in self.duplicates
                if d.cross_split == cross
            )
        if self.imbalanced:
            b = self.balance
            out.append(
                {
                    "kind": "imbalance",
                    "severity": "warning",
                    "split": b.split,
                    "largest": {"class": b.largest[0], "images": b.largest[1]},
                    "smallest": {"class": b.smallest[0], "images": b.smallest[1]},
                    "ratio": None if math.isinf(b.ratio) else round(b.ratio, 2),
                    "suggestion": b.suggestion,
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary per split, the problems, the ignored files."""

        def spread(s: Spread | None) -> dict[str, float] | None:
            return None if s is None else {"min": s.min, "median": s.median, "max": s.max}

        return {
            "root": os.fspath(self.root),
            "layout": self.layout,
            "classes": list(self.class_names),
            "splits": {
                s.name: {
                    "files": s.files,
                    "images": s.images,
                    "classes": s.class_counts,
                    "width": spread(s.width),
                    "height": spread(s.height),
                    "modes": s.modes,
                    "formats": s.formats,
                }
                for s in self.splits
            },
            "balance": {
                "split": self.balance.split,
                "largest": {"class": self.balance.largest[0], "images": self.balance.largest[1]},
                "smallest": {
                    "class": self.balance.smallest[0],
                    "images": self.balance.smallest[1],
                },
                "ratio": None if math.isinf(self.balance.ratio) else round(self.balance.ratio, 2),
            },
            "near_threshold": self.near_threshold,
            "errors": self.errors,
            "warnings": self.warnings,
            "problems": self.problems(),
            "ignored": [os.fspath(p) for p in self.ignored],
        }


# -- hashing -------------------------------------------------------------------------------------


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `D @ x @ D.T` is the 2-D DCT of an (n, n) block."""
    k = np.arange(n)
    matrix = np.sqrt(2 / n) * np.cos(
        np.pi * (2 * k[np.newaxis, :] + 1) * k[:, np.newaxis] / (2 * n)
    )
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(PHASH_SIDE)


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """What near-duplicate matching keeps of a picture: `hash` (a 64-bit perceptual hash, for
    finding candidates) and `thumbnail` (a 16x16 grey thumbnail, zero mean and unit length, to
    confirm them: the dot product of two is their correlation)."""

    hash: int
    thumbnail: np.ndarray  # float32 (256,)


def fingerprint(image: Image.Image) -> Fingerprint:
    """The perceptual hash (pHash) and confirming thumbnail of an upright picture.

    pHash: the 2-D DCT of a 32x32 grey thumbnail (box-averaged: resizing and noise average
    out); bit k says whether the k-th of the 8x8 lowest frequencies is above their median. A
    brightness change scales the coefficients and keeps their order, re-encoding and resizing
    change mostly the high frequencies left out, and distinct pictures differ in about half the
    bits. A 9x8 difference hash (dHash) was measured first and missed 10% of copies at the
    threshold where it already matched 41% of distinct sign pictures (flat backgrounds make
    its neighbour comparisons noise).
    """
    grey = image.convert("L")
    small = np.asarray(grey.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.BOX), np.float64)
    low = (_DCT @ small @ _DCT.T)[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = low > np.median(low)
    thumb = np.asarray(grey.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX), np.float32)
    centred = thumb.ravel() - thumb.mean()
    norm = float(np.linalg.norm(centred))
    # A flat picture has no shape to compare: a zero vector, which matches nothing.
    unit = centred / norm if norm > 1e-3 else np.zeros_like(centred)
    return Fingerprint(int.from_bytes(np.packbits(bits).tobytes(), "big"), unit)


def hamming(a: int, b: int) -> int:
    """The number of bits in which two hashes differ."""
    return (a ^ b).bit_count()


def near_pairs(hashes: Sequence[int] | np.ndarray, threshold: int) -> np.ndarray:
    """Every pair (i, j, distance), i < j, of 64-bit hashes at most `threshold` bits apart.

    Not all n^2 pairs: by the pigeonhole principle, two hashes that differ in at most t bits
    agree on at least one of t + 1 disjoint chunks of their bits, so only hashes sharing a
    chunk's value are compared (a sort per chunk). Distinct pictures' hashes spread over the
    chunk values, so the comparisons grow about linearly for a fixed threshold.
    """
    if not 0 <= threshold <= 32:
        raise ConfigError(f"near-duplicate threshold {threshold}: must be 0..32 bits of 64")
    values = np.asarray(hashes, dtype=np.uint64)
    n = len(values)
    found: list[np.ndarray] = []
    bounds = np.linspace(0, 64, threshold + 2).round().astype(int)
    for low, high in itertools.pairwise(bounds):
        keys = (values >> np.uint64(low)) & np.uint64((1 << int(high - low)) - 1)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], n]
        for start, end in zip(starts, ends, strict=True):
            if end - start > 1:
                found.extend(_close_pairs(np.sort(order[start:end]), values, threshold))
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0)  # a pair sharing several chunks is found several times


def _close_pairs(members: np.ndarray, values: np.ndarray, threshold: int) -> list[np.ndarray]:
    """(i, j, distance) for members i < j within `threshold`, a block of rows at a time so a
    large group (thousands of near-blank pictures) stays within memory."""
    out = []
    hashes = values[members]
    block = max(1, 4_000_000 // len(members))
    for first in range(0, len(members) - 1, block):
        rows = slice(first, min(first + block, len(members)))
        distance = np.bitwise_count(hashes[rows, np.newaxis] ^ hashes[np.newaxis, :])
        r, c = np.nonzero(distance <= threshold)
        keep = members[rows][r] < members[c]
        r, c = r[keep], c[keep]
        if len(r):
            out.append(
                np.stack([members[rows][r], members[c], distance[r, c].astype(np.int64)], axis=1)
            )
    return out


# -- checking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    """One file, as decoding found it."""

    size: tuple[int, int] = (0, 0)  # (width, height), upright
    mode: str = ""
    format: str = ""
    digest: bytes = b""
    print: Fingerprint | None = None
    reason: Reason | None = None
    detail: str = ""


def check_folder(
    root: str | os.PathLike[str],
    *,
    near_threshold: int = NEAR_THRESHOLD,
    near_similarity: float = NEAR_SIMILARITY,
    imbalance_ratio: float = IMBALANCE_RATIO,
    max_pixels: int = MAX_PIXELS,
    threads: int | None = None,
) -> Report:
    """Decode every image of a folder dataset and report what it holds and what is wrong.

    Near duplicates are pairs whose perceptual hashes differ in at most `near_threshold` bits
    and whose thumbnails correlate by at least `near_similarity` (see NEAR_SIMILARITY for how
    both were measured); `threads` decode in parallel (default: one per CPU).

    Raises DataError when `root` is not a folder dataset (`cnnlab.data.folders.scan`'s rules).
    """
    if not 0 <= near_threshold <= 32:
        raise ConfigError(f"near-duplicate threshold {near_threshold}: must be 0..32 bits of 64")
    started = time.perf_counter()
    dataset = scan(root, validation_fraction=0, test_fraction=0)
    names = ("all",) if dataset.layout == "classes" else ("train", "val", "test")
    splits = [
        (name, split)
        for name, split in zip(names, (dataset.train, dataset.val, dataset.test), strict=False)
        if len(split)
    ]
    files = [(path, name, int(label)) for name, split in splits for path, label in
             zip(split.paths, split.labels, strict=True)]  # fmt: skip
    workers = max(1, threads if threads is not None else os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="cnnlab-check") as pool:
        seen = list(pool.map(lambda f: _examine(f[0], max_pixels), files))

    classes = dataset.class_names
    summaries = []
    for name, _ in splits:
        rows = [i for i, f in enumerate(files) if f[1] == name]
        good = [i for i in rows if seen[i].reason is None]
        counts = Counter(classes[files[i][2]] for i in good)
        summaries.append(
            SplitSummary(
                name,
                len(rows),
                {c: counts.get(c, 0) for c in classes},
                Spread.of([seen[i].size[0] for i in good]),
                Spread.of([seen[i].size[1] for i in good]),
                dict(Counter(seen[i].mode for i in good).most_common()),
                dict(Counter(seen[i].format for i in good).most_common()),
            )
        )
    unreadable = tuple(
        Unreadable(path, split, s.reason, s.detail)
        for (path, split, _), s in zip(files, seen, strict=True)
        if s.reason is not None
    )
    duplicates = _duplicates(files, seen, classes, near_threshold, near_similarity)
    train = summaries[0]  # "train" or "all": what the model learns from
    by_size = sorted(train.class_counts.items(), key=lambda item: (-item[1], item[0]))
    balance = Imbalance(train.name, by_size[0], by_size[-1])
    return Report(
        dataset.root,
        dataset.layout,
        classes,
        tuple(summaries),
        unreadable,
        duplicates,
        balance,
        _ignored(dataset.root, {os.fspath(f[0]) for f in files}),
        near_threshold,
        imbalance_ratio,
        time.perf_counter() - started,
    )


def _examine(path: Path, max_pixels: int) -> _Seen:
    """Decode one file in full; on failure, one word why and the decoder's words."""
    try:
        if os.path.getsize(path) == 0:
            return _Seen(reason="empty", detail="0 bytes")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                return _Seen(
                    reason="too large",
                    detail=f"{width}x{height} = {width * height:,} pixels is over the limit of "
                    f"{max_pixels:,} (a decompression-bomb guard)",
                )
            mode, kind = image.mode, image.format or ""
            orientation = _orientation(image)
            drafted = _draft(image)
            image.load()  # the whole file: a truncated one fails here, drafted or not
            if orientation == 1:  # a PNG may keep its EXIF after the pixels
                orientation = _orientation(image)
            rgb = _to_mode(image, "RGB")
    except UnidentifiedImageError:
        return _Seen(reason="not an image", detail="no image format Pillow reads")
    except Image.DecompressionBombError as exc:
        return _Seen(reason="too large", detail=_said(exc))
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.ENOENT, errno.EISDIR, errno.EIO):
            return _Seen(reason="io", detail=_said(exc))
        said = _said(exc)
        return _Seen(reason="truncated" if "truncated" in said else "corrupt", detail=said)
    except Exception as exc:  # decoders fed untrusted bytes fail in many ways; none escapes
        return _Seen(reason="corrupt", detail=_said(exc))
    if orientation in _TRANSPOSES:
        rgb = rgb.transpose(_TRANSPOSES[orientation])
    # A drafted picture's pixels are not the full picture's: its digest says so, and matches
    # only the same JPEG drafted alike (a copy of it in another format is a near duplicate).
    marker = f"{rgb.size} {drafted}".encode()
    digest = hashlib.sha256(marker + rgb.tobytes()).digest()
    upright = (height, width) if orientation in _SWAPPING else (width, height)
    return _Seen(upright, mode, kind, digest, fingerprint(rgb))


def _draft(image: Image.Image) -> str:
    """Decode a large JPEG at a reduced DCT scale (1/2..1/8, short side >= DRAFT_SIDE): the
    whole file is still read and entropy-decoded, so truncation is still found, at a fraction
    of the cost (2x on a 12-megapixel photo). "" when the picture is decoded whole."""
    width, height = image.size
    if image.format != "JPEG" or min(width, height) < 2 * DRAFT_SIDE:
        return ""
    scale = DRAFT_SIDE / min(width, height)
    done = image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
    return "" if done is None or image.size == (width, height) else f"draft {image.size}"


def _said(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _duplicates(
    files: Sequence[tuple[Path, str, int]],
    seen: Sequence[_Seen],
    classes: Sequence[str],
    threshold: int,
    similarity: float,
) -> tuple[Duplicate, ...]:
    """Exact duplicates: each file paired with the first file of its pixels (train before val
    before test). Near duplicates, among one file per distinct picture: each file paired with
    its closest earlier match in each split, so a test file's match in train is never hidden
    behind a match in test, and a group of n copies gives n - 1 pairs per split, not n^2."""

    def pair(a: int, b: int, exact: bool, distance: int, close: float = 1.0) -> Duplicate:
        return Duplicate(
            (files[a][0], files[b][0]),
            (files[a][1], files[b][1]),
            (classes[files[a][2]], classes[files[b][2]]),
            exact,
            distance,
            close,
        )

    first: dict[bytes, int] = {}
    found = []
    for index, s in enumerate(seen):
        if s.reason is not None:
            continue
        if s.digest in first:
            found.append(pair(first[s.digest], index, True, 0))
        else:
            first[s.digest] = index
    distinct = sorted(first.values())
    prints = [_print_of(seen[i]) for i in distinct]
    candidates = near_pairs([p.hash for p in prints], threshold)
    closeness = np.zeros(len(candidates))
    if len(candidates):  # confirmed in numpy: a folder of near-blank pictures has many
        thumbs = np.stack([p.thumbnail for p in prints])
        i, j = candidates[:, 0], candidates[:, 1]
        close = np.einsum("ij,ij->i", thumbs[i], thumbs[j])
        candidates, closeness = candidates[close >= similarity], close[close >= similarity]
    best: dict[tuple[int, str], tuple[int, float, int]] = {}  # (file, split) -> its best match
    for (i, j, distance), alike in zip(candidates.tolist(), closeness.tolist(), strict=True):
        a, b = distinct[i], distinct[j]
        key = (b, files[a][1])
        if key not in best or (distance, -alike, a) < best[key]:
            best[key] = (distance, -alike, a)
    found.extend(pair(a, b, False, d, -c) for (b, _), (d, c, a) in sorted(best.items()))
    return tuple(found)


def _print_of(seen: _Seen) -> Fingerprint:
    if seen.print is None:  # only readable files are compared, and every one has a print
        raise AssertionError("a readable file without a fingerprint")
    return seen.print


def _ignored(root: Path, images: set[str]) -> tuple[Path, ...]:
    """Files under `root` that are not among the images (not images, hidden), as `scan` skips
    them; hidden folders (.git) are not looked into."""
    out: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        out.extend(
            Path(folder, n) for n in sorted(names) if os.fspath(Path(folder, n)) not in images
        )
    return tuple(out)


# -- the table for people ------------------------------------------------------------------------


def format_report(report: Report) -> str:
    """The report as plain text: counts per class and split, sizes and modes per split, then
    the problems grouped (errors, warnings) and the ignored files. Paths are shown relative to
    the folder; `Report.to_dict` has them whole."""

    def rel(path: Path) -> str:
        try:
            return path.relative_to(report.root).as_posix()
        except ValueError:
            return os.fspath(path)

    def spread(s: Spread | None) -> str:
        return "-" if s is None else f"{s.min} / {s.median:g} / {s.max}"

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k or '?'} {v}" for k, v in values.items()) or "-"

    splits = report.splits
    total = sum(s.images for s in splits)
    lines = [
        f"{report.root}: {total:,} readable images of {len(report.class_names)} classes in "
        f"{', '.join(s.name for s in splits)} ({report.seconds:.1f} s)",
        "",
    ]
    count_rows = [
        {"class": name, **{s.name: str(s.class_counts[name]) for s in splits}}
        for name in report.class_names
    ]
    count_rows.append({"class": "total", **{s.name: str(s.images) for s in splits}})
    lines += [_table(count_rows, right=[s.name for s in splits]), ""]
    lines.append(
        _table(
            [
                {
                    "split": s.name,
                    "width min/median/max": spread(s.width),
                    "height min/median/max": spread(s.height),
                    "modes": counts(s.modes),
                    "formats": counts(s.formats),
                }
                for s in splits
            ]
        )
    )
    cross = [d for d in report.duplicates if d.cross_split]
    within = [d for d in report.duplicates if not d.cross_split]

    def duplicate(d: Duplicate) -> str:
        how = "exact: same pixels"
        if not d.exact:
            how = f"near: {d.distance} bits apart, similarity {d.similarity:.3f}"
        if d.classes[0] != d.classes[1]:
            how += f"; labelled {d.classes[0]} and {d.classes[1]}"
        return f"    {rel(d.files[0])}  =  {rel(d.files[1])}  ({how})"

    sections: list[tuple[str, str, list[str]]] = [
        (
            "errors: unreadable files",
            "training skips them; re-export or remove them",
            [f"    {rel(u.file)}: {u.reason} ({u.detail})" for u in report.unreadable],
        ),
        (
            "errors: duplicates across splits",
            "the test score counts pictures seen in training; remove one of each pair",
            [duplicate(d) for d in cross],
        ),
        (
            "warnings: duplicates within a split",
            "each weighs twice in training",
            [duplicate(d) for d in within],
        ),
    ]
    if report.imbalanced:
        b = report.balance
        ratio = "no readable images" if math.isinf(b.ratio) else f"{b.ratio:.1f}x"
        sections.append(
            (
                "warnings: class imbalance",
                "",
                [
                    f"    {b.split}: {b.largest[0]} has {b.largest[1]} images, {b.smallest[0]} "
                    f"{b.smallest[1]} ({ratio}); {b.suggestion}"
                ],
            )
        )
    sections.append(
        ("ignored: not images", "README, hidden files", [f"    {rel(p)}" for p in report.ignored])
    )
    for title, why, items in sections:
        if items:
            lines += ["", f"{title} ({len(items)}){'; ' + why if why else ''}:", *items]
    verdict = (
        f"{report.errors} error{'s' * (report.errors != 1)}, "
        f"{report.warnings} warning{'s' * (report.warnings != 1)}"
    )
    lines += ["", f"{verdict}: {'fix the errors before training' if report.errors else 'ok'}"]
    return "\n".join(lines)


def _table(rows: list[dict[str, str]], right: Sequence[str] = ()) -> str:
    columns = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]

    def cell(value: str, column: str, width: int) -> str:
        return value.rjust(width) if column in right else value.ljust(width)

    out = [
        "  ".join(cell(c, c, w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        *(
            "  ".join(cell(r[c], c, w) for c, w in zip(columns, widths, strict=True)).rstrip()
            for r in rows
        ),
    ]
    return "\n".join(out)
