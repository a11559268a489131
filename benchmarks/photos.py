"""Accuracy on photo-like pictures: a seeded set made from the 10,000 Fashion-MNIST test images.

Every condition of `photoset` (sensor noise, JPEG artefacts, paper, fabric and wood-grain
backgrounds, a gradient or vignette, a shadow, dust, a second object, a coloured background, a
light garment on a dark one, a garment cut by the edge, a tilted garment, low contrast) at each
severity, plus a clean background: each picture is a distinct test image drawn at a random size
and place on a 320x320 RGB canvas and written to disk as a real JPEG (Pillow). The files are
predicted exactly as `cnnlab predict RUN FILE...` does (`load_predictor(run).predict(paths)`),
and the table shows the accuracy per condition and severity beside the same model's accuracy
on the raw 28x28 test images, with how often the found box was right (every side within 8 px of
the garment's known box).

    python benchmarks/photos.py /work/runs/default-seed2             # the table (3,200 photos)
    python benchmarks/photos.py RUN --compare 30                    # + the candidate methods
    python benchmarks/photos.py RUN --per-cell 20 --keep photos/    # fewer photos, kept on disk
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from photoset import CONDITIONS, make_photo

from cnnlab.prediction.preprocess import BORDER_FINDER, Finder, prepare_image

BOX_TOLERANCE = 8  # pixels: a found box whose every side is this close counts as right
BATCH = 200

CANDIDATES: dict[str, Finder] = {
    "old: border median, 5%, keep all": BORDER_FINDER,
    "border median, spread, group": Finder(background="border"),
    "surface, fixed 5%, group": Finder(threshold="fixed"),
    "surface, Otsu, group": Finder(threshold="otsu"),
    "surface, spread without the Otsu cap, group": Finder(threshold="spread-only"),
    "surface, spread, largest region": Finder(keep="largest"),
    "surface, spread, group, not straightened": Finder(straighten=False),
    "surface, spread, group (default)": Finder(),
}
"""The methods `--compare` measures: the old one, the default, and one change at a time."""


@dataclass(frozen=True)
class Cell:
    condition: str
    severity: int
    paths: list[Path]
    labels: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    indices: np.ndarray  # which test images, to compare with the same images raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder (or .keras / .onnx file) to predict with")
    parser.add_argument(
        "--per-cell", type=int, default=100, help="photos per condition and severity"
    )
    parser.add_argument("--seed", type=int, default=0, help="for the choice and drawing of photos")
    parser.add_argument("--keep", type=Path, help="write the photos here and keep them")
    parser.add_argument(
        "--compare",
        type=int,
        metavar="N",
        default=0,
        help="also measure the candidate methods on the first N photos of each cell",
    )
    parser.add_argument("--data-dir", help="where the Fashion-MNIST files are")
    args = parser.parse_args()

    from cnnlab.data import load_dataset
    from cnnlab.prediction.inference import load_predictor

    predictor = load_predictor(args.run)
    data = load_dataset("fashion_mnist", args.data_dir)
    x, y = data.x_test, np.asarray(data.y_test).ravel()
    raw = predictor.probabilities(x[..., np.newaxis].astype(np.float32) / 255).argmax(axis=1)

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        cells = _write_photos(x, y, folder, args.per_cell, args.seed)
        made = time.perf_counter() - start
        total = sum(len(cell.paths) for cell in cells)
        print(f"{total:,} photos (320x320 JPEG, seed {args.seed}) written in {made:.0f} s")

        start = time.perf_counter()
        rows = [_measure(predictor, cell) for cell in cells]
        took = time.perf_counter() - start
        print(
            f"predicted like `cnnlab predict` in {took:.0f} s ({1000 * took / total:.1f} ms each)"
        )
        print()
        _print_table(rows, raw == y, args.run)
        if args.compare:
            print()
            _compare(predictor, cells, args.compare)


def _write_photos(
    x: np.ndarray, y: np.ndarray, folder: Path, per_cell: int, seed: int
) -> list[Cell]:
    """Every condition and severity, `per_cell` distinct test images each, as JPEG files."""
    rng = np.random.default_rng(seed)
    wanted = [(c, s) for c, names in CONDITIONS.items() for s in range(1, len(names) + 1)]
    if per_cell * len(wanted) > len(x):
        raise SystemExit(f"--per-cell {per_cell} needs more than the {len(x):,} test images")
    order = rng.permutation(len(x))
    cells = []
    for number, (condition, severity) in enumerate(wanted):
        chosen = order[number * per_cell : (number + 1) * per_cell]
        paths, boxes = [], []
        for index in chosen:
            photo = make_photo(x[index], condition, severity, rng)
            path = folder / f"{condition}-{severity}-{index:05d}.jpg"
            path.write_bytes(photo.jpeg())
            paths.append(path)
            boxes.append(photo.box)
        cells.append(Cell(condition, severity, paths, y[chosen], boxes, chosen))
    return cells


def _measure(predictor: object, cell: Cell) -> tuple[Cell, float, float]:
    """Accuracy and right-box rate of `cnnlab predict`'s path on one cell's files."""
    from cnnlab.prediction.predictor import Predictor

    assert isinstance(predictor, Predictor)
    names = predictor.class_names
    right = boxes_right = 0
    for start in range(0, len(cell.paths), BATCH):
        paths = cell.paths[start : start + BATCH]
        for offset, prediction in enumerate(predictor.predict(paths, top_k=1)):
            index = start + offset
            right += prediction.label == names[cell.labels[index]]
            boxes_right += _box_right(prediction.box, cell.boxes[index])
    return cell, right / len(cell.paths), boxes_right / len(cell.paths)


def _box_right(found: tuple[int, int, int, int] | None, known: tuple[int, int, int, int]) -> bool:
    return found is not None and max(abs(a - b) for a, b in zip(found, known, strict=True)) <= (
        BOX_TOLERANCE
    )


def _print_table(rows: list[tuple[Cell, float, float]], raw_right: np.ndarray, run: str) -> None:
    """The table; "same images raw" is the model on the very test images each row drew, as
    28x28 originals, so a row's difficulty is told apart from what the photo path loses."""
    raw_accuracy = float(raw_right.mean())
    print(f"model: {run}; raw 28x28 test images: {100 * raw_accuracy:.2f}%")
    print()
    print(
        "| condition | severity | photos | accuracy | 95% interval | same images raw | box right |"
    )
    print("|---|---|---|---|---|---|---|")
    for cell, accuracy, boxes in rows:
        what = CONDITIONS[cell.condition][cell.severity - 1]
        low, high = _wilson(accuracy, len(cell.paths))
        print(
            f"| {cell.condition} | {cell.severity}: {what} | {len(cell.paths)} | "
            f"{100 * accuracy:.1f}% | {100 * low:.0f}-{100 * high:.0f}% | "
            f"{100 * raw_right[cell.indices].mean():.1f}% | {100 * boxes:.0f}% |"
        )
    counts = np.array([len(cell.paths) for cell, _, _ in rows])
    accuracies = np.array([accuracy for _, accuracy, _ in rows])
    photo_rows = [i for i, (cell, _, _) in enumerate(rows) if cell.condition != "clean"]
    overall = float(np.average(accuracies[photo_rows], weights=counts[photo_rows]))
    everything = float(np.average(accuracies, weights=counts))
    worst = min(photo_rows, key=lambda i: accuracies[i])
    same = float(np.mean(raw_right[np.concatenate([rows[i][0].indices for i in photo_rows])]))
    low, high = _wilson(overall, int(counts[photo_rows].sum()))
    print()
    print(
        f"overall, every condition: {100 * overall:.1f}% (95% interval {100 * low:.1f}-"
        f"{100 * high:.1f}%, {counts[photo_rows].sum():,} photos); the same images raw: "
        f"{100 * same:.1f}%"
    )
    print(f"overall, with the clean row: {100 * everything:.1f}% ({counts.sum():,} photos)")
    print(
        f"lowest: {rows[worst][0].condition} {rows[worst][0].severity} at "
        f"{100 * accuracies[worst]:.1f}%; raw test images: {100 * raw_accuracy:.2f}%"
    )


def _wilson(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% score interval for an accuracy measured on `n` photos."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _compare(predictor: object, cells: list[Cell], per_cell: int) -> None:
    """The candidate methods on the same files: accuracy per condition (severities pooled),
    each predicted over its framings as `cnnlab predict` does, and the default without them."""
    from cnnlab.prediction.inference import Predictor

    assert isinstance(predictor, Predictor)
    conditions = list(dict.fromkeys(cell.condition for cell in cells))
    print("| method | " + " | ".join(conditions) + " | overall | ms/photo |")
    print("|---|" + "---|" * (len(conditions) + 2))
    rows = [(name, finder, True) for name, finder in CANDIDATES.items()]
    rows.append(("surface, spread, group, found box only (no re-framings)", Finder(), False))
    for name, finder, framed in rows:
        right: dict[str, int] = defaultdict(int)
        seen: dict[str, int] = defaultdict(int)
        start = time.perf_counter()
        for cell in cells:
            paths = cell.paths[:per_cell]
            prepared = [prepare_image(path, predictor.size, finder) for path in paths]
            batch = np.stack([p.inputs if framed else p.array for p in prepared])
            predicted = predictor.probabilities(batch).argmax(axis=1)
            right[cell.condition] += int(np.sum(predicted == cell.labels[: len(paths)]))
            seen[cell.condition] += len(paths)
        per_photo = 1000 * (time.perf_counter() - start) / sum(seen.values())
        shown = [f"{100 * right[c] / seen[c]:.1f}" for c in conditions]
        photos = [c for c in conditions if c != "clean"]
        overall = sum(right[c] for c in photos) / sum(seen[c] for c in photos)
        print(f"| {name} | " + " | ".join(shown) + f" | {100 * overall:.1f}% | {per_photo:.1f} |")


if __name__ == "__main__":
    main()
