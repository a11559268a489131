"""A seeded folder of coloured signs where colour is half of the class (issue 27's test folder).

Eight classes, red or green x circle, triangle, square, cross, drawn at a random place, scale
and rotation on a varied background (flat, gradient or speckled, never red or green), with
sensor noise, sometimes a blue or yellow distractor, on pictures of 40..220 px a side (any
aspect), written in mixed formats and modes: JPEG, PNG, RGBA PNG (a translucent background),
palette PNG, WebP, and a few JPEGs stored turned with an EXIF orientation that puts them
upright. The sign lies in the picture's central square. A grey model cannot tell red from
green, so it tops out near 50%; the shapes are easy for a small CNN at 64 px and up.

    python benchmarks/signs.py signs/                        # 3,200 pictures, class folders
    python benchmarks/signs.py signs/ --count 1000 --layout splits    # train/ and test/
    python benchmarks/signs.py signs/ --count 1000 --throughput       # + decoding images/s

From Python (tests): `make_signs(root, count, seed, layout)`.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

COLOURS = ("red", "green")
SHAPES = ("circle", "triangle", "square", "cross")
CLASSES = tuple(f"{colour}_{shape}" for colour in COLOURS for shape in SHAPES)
SIZE_RANGE = (40, 220)
TEST_EVERY = 6  # one picture in six of each class goes to test/ in the "splits" layout
FORMATS = {  # share of pictures written in each format
    "jpeg": 0.40,
    "png": 0.20,
    "rgba-png": 0.10,
    "palette-png": 0.10,
    "webp": 0.15,
    "rotated-jpeg": 0.05,
}
_SUFFIX = {
    "jpeg": ".jpg",
    "png": ".png",
    "rgba-png": ".png",
    "palette-png": ".png",
    "webp": ".webp",
    "rotated-jpeg": ".jpg",
}
_STORED_TURN = {  # EXIF orientation -> how the upright picture is stored so viewers undo it
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def make_signs(
    root: str | Path,
    count: int = 3200,
    seed: int = 0,
    layout: Literal["flat", "splits"] = "flat",
) -> dict[str, Counter[str]]:
    """Write `count` pictures under `root` (class folders, or train/ and test/ holding them).

    The same seed and count give the same files. Returns counts by class, format and split.
    """
    if layout not in ("flat", "splits"):
        raise ValueError(f"layout={layout!r}: must be 'flat' or 'splits'")
    root = Path(root)
    rng = np.random.default_rng(seed)
    kinds, shares = list(FORMATS), np.array(list(FORMATS.values()))
    summary: dict[str, Counter[str]] = {"class": Counter(), "format": Counter(), "split": Counter()}
    for index in range(count):
        label = index % len(CLASSES)
        picture = draw_sign(rng, label)
        kind = str(rng.choice(kinds, p=shares / shares.sum()))
        split = "test" if (index // len(CLASSES)) % TEST_EVERY == 0 else "train"
        folder = root / (split if layout == "splits" else "") / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        _save(picture, folder / f"{index:05d}{_SUFFIX[kind]}", kind, rng)
        summary["class"][CLASSES[label]] += 1
        summary["format"][kind] += 1
        summary["split"][split if layout == "splits" else "all"] += 1
    return summary


def draw_sign(rng: np.random.Generator, label: int) -> Image.Image:
    """One upright RGB picture of class `label`, drawn at twice its size and shrunk (smooth)."""
    width, height = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, 2))
    big = (width * 2, height * 2)
    canvas = _background(rng, big)
    draw = ImageDraw.Draw(canvas)
    short = min(big)
    if rng.random() < 0.3:  # a distractor: a blue or yellow blob that is not the sign
        colour = (40, 70, 200) if rng.random() < 0.5 else (220, 200, 40)
        radius = short * rng.uniform(0.06, 0.14)
        cx, cy = rng.uniform(radius, big[0] - radius), rng.uniform(radius, big[1] - radius)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    # The sign lies inside the central square, as a photo's subject does, so cropping to a
    # square (--resize crop) never cuts it off; the distractor may be anywhere.
    radius = short * rng.uniform(0.18, 0.42)
    left, top = (big[0] - short) / 2, (big[1] - short) / 2
    cx = rng.uniform(left + radius, left + short - radius)
    cy = rng.uniform(top + radius, top + short - radius)
    colour = _sign_colour(rng, COLOURS[label // len(SHAPES)])
    _draw_shape(
        draw, SHAPES[label % len(SHAPES)], cx, cy, radius, rng.uniform(0, 2 * math.pi), colour
    )
    picture = canvas.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(picture, dtype=np.float32)
    pixels += rng.normal(0, rng.uniform(0, 12), pixels.shape)  # sensor noise
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Flat, gradient or speckled, in greys, blues, yellows and browns: never red or green."""
    width, height = size

    def tone() -> np.ndarray:
        grey = rng.uniform(60, 235)
        tint = rng.choice([(0, 0, 0), (-20, -5, 25), (20, 15, -25), (15, 0, -20)])
        return np.clip(grey + np.asarray(tint) * rng.uniform(0.5, 1.5), 0, 255)

    style = rng.integers(3)
    if style == 0:
        pixels = np.broadcast_to(tone(), (height, width, 3)).astype(np.float32)
    elif style == 1:
        start, end = tone(), tone()
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width]
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        pixels = start + (end - start) * t[..., np.newaxis]
    else:
        base = tone()
        speckle = rng.normal(0, rng.uniform(8, 30), (height // 8 + 1, width // 8 + 1, 1))
        coarse = np.kron(speckle, np.ones((8, 8, 1)))[:height, :width]
        pixels = base + coarse
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _sign_colour(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    strong, weak1, weak2 = rng.uniform(150, 245), rng.uniform(0, 90), rng.uniform(0, 90)
    if colour == "red":
        return int(strong), int(weak1), int(weak2)
    return int(weak1), int(strong * 0.9), int(weak2)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    colour: tuple[int, int, int],
) -> None:
    def turned(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]

    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif shape == "triangle":
        corners = [2 * math.pi * k / 3 - math.pi / 2 for k in range(3)]
        draw.polygon(
            turned([(radius * math.cos(a), radius * math.sin(a)) for a in corners]), fill=colour
        )
    elif shape == "square":
        side = radius / math.sqrt(2)
        draw.polygon(
            turned([(-side, -side), (side, -side), (side, side), (-side, side)]), fill=colour
        )
    else:  # a plus-shaped cross, arms a third of its span wide
        a, b = radius, radius / 3
        arms = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b),
                (-a, b), (-a, -b), (-b, -b)]  # fmt: skip
        draw.polygon(turned(arms), fill=colour)


def _save(picture: Image.Image, path: Path, kind: str, rng: np.random.Generator) -> None:
    quality = int(rng.integers(70, 96))
    if kind == "jpeg":
        picture.save(path, "JPEG", quality=quality)
    elif kind == "png":
        picture.save(path, "PNG")
    elif kind == "rgba-png":  # the background made translucent: composited on white it pales
        rgba = picture.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3].copy()
        alpha[:] = int(rng.integers(120, 256))
        rgba.putalpha(Image.fromarray(alpha, "L"))
        rgba.save(path, "PNG")
    elif kind == "palette-png":
        picture.quantize(64, method=Image.Quantize.MEDIANCUT).save(path, "PNG")
    elif kind == "webp":
        picture.save(path, "WEBP", quality=quality)
    else:
        orientation = int(rng.choice(list(_STORED_TURN)))
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = picture.transpose(_STORED_TURN[orientation])
        stored.save(path, "JPEG", quality=quality, exif=exif.tobytes())


def _throughput(root: Path, size: int) -> None:
    """Decoding images/s through the folder stream, the best of three epochs with 1 and 2
    threads (batches of 64, shuffled, no cache), and the process's peak RSS."""
    from cnnlab.data.folders import FolderBatches, Recipe, scan

    data = scan(root, validation_fraction=0, test_fraction=0)
    recipe = Recipe((size, size), "rgb", "squash")
    for threads in (1, 2):
        batches = FolderBatches(data.train, recipe, 64, shuffle=True, seed=0, threads=threads)
        rates = []
        for _ in range(3):  # the best of three epochs: the machine may be shared
            start = time.perf_counter()
            images = sum(len(batches[i][1]) for i in range(len(batches)))
            rates.append(images / (time.perf_counter() - start))
            batches.on_epoch_end()
        batches.close()
        print(f"  stream {size}x{size} rgb, {threads} thread(s): {max(rates):,.0f} images/s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"  peak RSS of this process: {peak:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to write (created)")
    parser.add_argument("--count", type=int, default=3200, help="pictures (default 3,200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=("flat", "splits"), default="flat")
    parser.add_argument(
        "--throughput", type=int, nargs="?", const=128, metavar="SIZE",
        help="then time decoding one epoch at SIZExSIZE (default 128) with 1 and 2 threads",
    )  # fmt: skip
    args = parser.parse_args()
    if args.root.exists() and any(args.root.iterdir()):
        sys.exit(f"{args.root}: exists and is not empty; pick a new folder")
    start = time.perf_counter()
    summary = make_signs(args.root, args.count, args.seed, args.layout)
    seconds = time.perf_counter() - start
    print(f"{args.root}: {args.count:,} pictures in {seconds:.1f} s ({args.layout} layout)")
    for key in ("class", "format", "split"):
        print(f"  {key + ':':8} " + ", ".join(f"{k} {v}" for k, v in sorted(summary[key].items())))
    if args.throughput:
        _throughput(args.root, args.throughput)


if __name__ == "__main__":
    main()
