"""A tiny trained CNN and one image, shared by the picture tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab._backend import keras as _keras


@pytest.fixture(scope="session")
def tiny_model():  # type: ignore[no-untyped-def]
    """Two small conv/pool stages and a softmax, fitted one epoch on 64 random images."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", padding="same"),
            keras.layers.MaxPool2D(),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPool2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="tiny_cnn",
    )
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="session")
def saved_tiny_model(tiny_model, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The tiny model saved to a .keras file and loaded back."""
    path: Path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model.save(path)
    return _keras().models.load_model(path)


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    """A 28x28x1 picture with structure: a bright ring on a dark background, plus a bar."""
    rows, cols = np.mgrid[:28, :28]
    radius = np.hypot(rows - 13.5, cols - 13.5)
    picture = ((radius > 6) & (radius < 10)).astype(np.float32)
    picture[20:24, 4:24] = 0.7
    return picture[:, :, None]
