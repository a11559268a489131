"""The explainer against Keras, and its cost: the figures in docs/visualizing.md.

    KERAS_BACKEND=jax python benchmarks/explain_cells.py

Prints, for eight kinds of cell of one-layer float32 models with random weights, how far
`explain_cell`'s float64 arithmetic is from the layer's own output (over the size of the terms
summed), then the median time of one cell of the seed model (random weights) per layer kind.
"""

from __future__ import annotations

import time

import numpy as np

import cnnlab
from cnnlab._backend import dtype_policy, keras
from cnnlab.prediction.arithmetic import explain_cell

REPEATS = 20


def agreement() -> None:
    layers = keras().layers
    cases = {
        "3x3 same conv + relu, edge cell": (
            layers.Conv2D(3, 3, padding="same", activation="relu"),
            (0, 4, 2),
        ),
        "4x4 same conv, corner": (layers.Conv2D(3, 4, padding="same"), (6, 6, 2)),
        "3x3 valid conv, stride 2": (layers.Conv2D(2, 3, strides=2), (2, 1, 1)),
        "3x3 same conv, stride 2": (layers.Conv2D(2, 3, strides=2, padding="same"), (3, 3, 1)),
        "2x2 max pooling": (layers.MaxPooling2D(2), (1, 2, 0)),
        "2x2 same max pooling, edge": (layers.MaxPooling2D(2, padding="same"), (3, 3, 0)),
        "2x2 same average pooling, edge": (layers.AveragePooling2D(2, padding="same"), (3, 3, 1)),
        "3x3 same average pooling, stride 2": (
            layers.AveragePooling2D(3, strides=2, padding="same"),
            (3, 0, 1),
        ),
    }
    rng = np.random.default_rng(6)
    picture = rng.uniform(0, 1, size=(7, 7, 3)).astype(np.float32)
    print(f"{'cell (7x7x3 input)':36} |explained - Keras| / size of the terms")
    for name, (layer, (row, col, channel)) in cases.items():
        with dtype_policy("float32"):
            model = keras().Sequential([keras().Input(picture.shape), layer])
        for weight in model.weights:
            weight.assign(rng.normal(size=weight.shape).astype(np.float32))
        output = keras().ops.convert_to_numpy(model(picture[None]))
        cell = explain_cell(model, picture, layer.name, row, col, channel)
        terms = np.abs(cell.patch * (1 if cell.kernel is None else cell.kernel)).sum()
        error = abs(cell.value - float(output[0, row, col, channel])) / (terms + abs(cell.bias))
        print(f"{name:36} {error:.1e}")


def cost() -> None:
    with dtype_policy("float32"):
        model = cnnlab.build_model("basic_cnn", (28, 28, 1), 10)
    picture = np.random.default_rng(0).uniform(size=(28, 28, 1)).astype(np.float32)
    names = [layer.name for layer in model.layers]
    start = time.perf_counter()
    explain_cell(model, picture, names[0], 0, 0, 0)
    print(f"\nseed model: first call (builds the sub-model) {time.perf_counter() - start:.3f} s")
    for name, cell in [(names[0], (0, 5, 3)), (names[2], (5, 5, 10)), (names[5], (1, 1, 3))]:
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            explained = explain_cell(model, picture, name, *cell)
            times.append(time.perf_counter() - start)
        window = "x".join(str(size) for size in explained.patch.shape)
        print(f"{name:16} window {window:8} median {1000 * np.median(times):.1f} ms")


if __name__ == "__main__":
    print(f"Keras backend: {keras().backend.backend()}")
    agreement()
    cost()
