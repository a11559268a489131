"""A fully convolutional model on images larger than it was trained on, without resizing.

Takes trained runs (for example `--preset fcn` and the seed model), places every test image at
a random position on a larger black canvas (28x28 pixels of garment, nothing resized; the same
seeded positions for every run) and prints the test accuracy per canvas size as a Markdown
table. A model with a Flatten layer cannot take the larger canvas at all; it is listed with the
canvas shrunk back to 28x28 instead (the garment then shrinks).

    python benchmarks/larger_canvas.py runs/fcn-fashion_mnist runs/default-seed2
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 42, 56, 84])
    parser.add_argument("--seed", type=int, default=0, help="for the placements")
    parser.add_argument("--data-dir", help="where the dataset files are")
    args = parser.parse_args()

    from cnnlab.prediction.inference import load_predictor
    from cnnlab.runs import Run

    # each canvas size traces the model anew; TensorFlow's warning about it is expected here
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    print("| run | parameters | " + " | ".join(f"{s}x{s}" for s in args.sizes) + " |")
    print("|---|---:|" + "---:|" * len(args.sizes))
    for run in args.runs:
        predictor = load_predictor(run)
        x, y = Run(run).data(args.data_dir).arrays("test")
        y = np.asarray(y).ravel()
        cells = []
        for size in args.sizes:
            canvas = _place(x, size, np.random.default_rng(args.seed))
            if predictor.any_input_size:
                note = ""
            else:  # shrink the canvas back to what the model takes
                canvas, note = _shrink(canvas, predictor.size), "\\*"
            predicted = predictor.model.predict(canvas, batch_size=250, verbose=0).argmax(axis=1)
            cells.append(f"{100 * float(np.mean(predicted == y)):.2f}%{note}")
        params = predictor.model.count_params()
        print(f"| {run} | {params:,} | " + " | ".join(cells) + " |")
    print("\n\\* the canvas resized to the model's fixed input size (the garment shrinks with it)")


def _place(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Each image pasted at a random position on a black size x size canvas."""
    n, height, width = images.shape[:3]
    canvas = np.zeros((n, size, size, 1), images.dtype)
    rows = rng.integers(0, size - height + 1, n)
    cols = rng.integers(0, size - width + 1, n)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        canvas[i, r : r + height, c : c + width] = images[i].reshape(height, width, 1)
    return canvas


def _shrink(canvas: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if canvas.shape[1:3] == size:
        return canvas
    out = np.empty((len(canvas), *size, 1), np.float32)
    for i, image in enumerate(canvas[..., 0]):
        small = Image.fromarray(image.astype(np.float32)).resize(size[::-1], Image.LANCZOS)
        out[i, :, :, 0] = np.clip(np.asarray(small), 0, 1)
    return out


if __name__ == "__main__":
    main()
