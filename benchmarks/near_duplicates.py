"""How well `cnnlab.data.check.fingerprint` tells copies from distinct pictures, and how fast
`check_folder` is on a 20,000-image folder.

    python benchmarks/near_duplicates.py            # the threshold table (a minute)
    python benchmarks/near_duplicates.py --timing   # + a 20,000-image folder, timed

The copies: each of `--pictures` sign pictures (benchmarks/signs.py, all different) changed
the ways a folder gets its near duplicates: re-encoded as JPEG (quality 60..95), resized
(50..150%), brightened or darkened (+-10%), and all three at once. A miss is a copy whose hash
is more than the threshold from its original's, or whose thumbnail correlates less than the
similarity. A false match is a pair of distinct pictures within both: counted over every pair
of the distinct pictures, and as the share of pictures that have at least one.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, os.fspath(Path(__file__).parent))

from signs import draw_sign

from cnnlab.data.check import check_folder, fingerprint, hamming

THRESHOLDS = (4, 6, 8, 10, 12)
SIMILARITIES = (-1.0, 0.9, 0.95)  # -1: the hash alone


def reencoded(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def resized(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = rng.uniform(0.5, 1.5)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.BICUBIC)


def brightened(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(picture).enhance(rng.uniform(0.9, 1.1))


def all_three(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    return reencoded(brightened(resized(picture, rng), rng), rng)


CHANGES: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "jpeg 60-95": reencoded,
    "resize 50-150%": resized,
    "brightness +-10%": brightened,
    "all three": all_three,
}


def measure(pictures: int, seed: int = 0) -> list[dict[str, object]]:
    """One row per (hash threshold, similarity): misses per change, false matches among
    distinct pictures."""
    rng = np.random.default_rng(seed)
    originals = [draw_sign(rng, index % 8) for index in range(pictures)]
    prints = [fingerprint(p) for p in originals]
    hashes = np.asarray([p.hash for p in prints], dtype=np.uint64)
    thumbs = np.stack([p.thumbnail for p in prints])
    copies = {name: [fingerprint(change(p, rng)) for p in originals]
              for name, change in CHANGES.items()}  # fmt: skip
    apart = {name: np.asarray([hamming(c.hash, int(h)) for c, h in zip(cs, hashes, strict=True)])
             for name, cs in copies.items()}  # fmt: skip
    alike = {name: np.asarray([float(c.thumbnail @ t) for c, t in zip(cs, thumbs, strict=True)])
             for name, cs in copies.items()}  # fmt: skip
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    correlations = thumbs @ thumbs.T
    others = ~np.eye(pictures, dtype=bool)
    upper = np.triu(others)
    rows: list[dict[str, object]] = []
    for t in THRESHOLDS:
        for similarity in SIMILARITIES:
            row: dict[str, object] = {"bits <=": t, "corr >=": similarity}
            for name in CHANGES:
                missed = (apart[name] > t) | (alike[name] < similarity)
                row[f"miss {name}"] = f"{np.mean(missed):.1%}"
            matched = (distances <= t) & (correlations >= similarity)
            row["false pairs"] = int((matched & upper).sum())
            row["false pair rate"] = f"{(matched & upper).sum() / upper.sum():.5%}"
            row["pictures falsely matched"] = f"{np.mean((matched & others).any(axis=1)):.2%}"
            rows.append(row)
    return rows


def make_folder(root: Path, count: int, seed: int = 0, side: int = 96) -> None:
    """`count` distinct pictures (smooth random colour fields, `side`/2..`side` px square, JPEG
    and PNG by turns) in 10 class folders under train/ and test/ (one in six to test): quick to
    write."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        split = "test" if (index // 10) % 6 == 0 else "train"
        folder = root / split / f"class{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        length = int(rng.integers(side // 2, side + 1))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
        picture = coarse.resize((length, length), Image.Resampling.BILINEAR)
        if index % 2:
            picture.save(folder / f"{index:05d}.jpg", "JPEG", quality=85)
        else:
            picture.save(folder / f"{index:05d}.png", "PNG")


def table(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(str(r[c]).rjust(w) for c, w in zip(columns, widths, strict=True))
              for r in rows]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=1000)
    parser.add_argument("--timing", action="store_true", help="time a 20,000-image check")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--side", type=int, default=96, help="largest picture side, px")
    args = parser.parse_args()
    print(f"pHash + thumbnail on {args.pictures} sign pictures and a changed copy of each\n")
    print(table(measure(args.pictures)))
    if args.timing:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            make_folder(Path(tmp), args.count, side=args.side)
            made = time.perf_counter() - started
            report = check_folder(tmp)
            print(
                f"\n{args.count} pictures of {args.side // 2}..{args.side} px written in "
                f"{made:.1f} s; check_folder: {report.seconds:.1f} s on {os.cpu_count()} CPUs "
                f"({args.count / report.seconds:.0f} images/s), {report.errors} errors, "
                f"{len(report.duplicates)} duplicates found (the pictures are distinct: any "
                "would be false)"
            )


if __name__ == "__main__":
    main()
