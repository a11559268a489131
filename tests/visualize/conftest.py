"""Fixtures for the picture tests: a tiny trained model, its data, a history, a PNG checker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnlab.visualize._common import save_png

TINY_CLASSES = ("circle", "square", "cross", "line")


@pytest.fixture(scope="session")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """64 random 28x28x1 images in [0, 1] with labels of 4 classes."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = np.tile(np.arange(len(TINY_CLASSES)), 16)
    return x, y


@pytest.fixture(scope="session")
def tiny_class_names() -> tuple[str, ...]:
    return TINY_CLASSES


@pytest.fixture(scope="session")
def tiny_model(tiny_data: tuple[np.ndarray, np.ndarray]) -> Any:
    """A small Conv2D/MaxPool Sequential on 28x28x1 with 4 classes, fitted for one epoch."""
    from cnnlab._backend import keras as _keras

    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(len(TINY_CLASSES), activation="softmax"),
        ],
        name="tiny_cnn",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = tiny_data
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return model


@pytest.fixture
def fake_history() -> list[dict[str, float]]:
    """Five epochs as Run.history returns them (0-based `epoch`); best val_accuracy at epoch 4."""
    val_accuracy = [0.70, 0.80, 0.84, 0.88, 0.86]
    val_loss = [0.90, 0.60, 0.45, 0.40, 0.42]
    return [
        {
            "epoch": float(i),
            "accuracy": 0.6 + 0.07 * i,
            "loss": 1.0 - 0.15 * i,
            "val_accuracy": val_accuracy[i],
            "val_loss": val_loss[i],
            "epoch_seconds": 12.0,
            "learning_rate": 0.001,
        }
        for i in range(5)
    ]


@pytest.fixture
def check_png(tmp_path: Path) -> Callable[[Any, str], Image.Image]:
    """Save a Figure or Image with save_png, re-open it and check it is a sensible picture."""

    def check(picture: Any, name: str) -> Image.Image:
        path = save_png(picture, tmp_path / f"{name}.png")
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.load()
        assert 200 <= image.width <= 5000, image.size
        assert 200 <= image.height <= 5000, image.size
        gray = np.asarray(image.convert("L"), dtype=np.float64)
        assert gray.var() > 100, "the picture is (nearly) blank"
        return image

    return check
