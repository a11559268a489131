"""Every built-in architecture: builds, trains a step, and saves and loads back exactly."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.models import build_model, builtin_architectures
from cnnlab.training import load_model


@pytest.mark.parametrize("name", builtin_architectures())
def test_preset_trains_one_step_and_round_trips(name: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(name, (28, 28, 1), 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((8, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 8)
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, y)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_augmentation_keeps_range_and_is_off_at_inference() -> None:
    model = build_model("improved", (28, 28, 1), 10)
    augment = [layer for layer in model.layers if type(layer).__name__.startswith("Random")]
    assert [type(layer).__name__ for layer in augment] == [
        "RandomFlip",
        "RandomTranslation",
        "RandomErasing",
    ]
    x = np.random.default_rng(1).random((16, 28, 28, 1)).astype("float32")
    trained = x
    for layer in augment:
        trained = layer(trained, training=True)
    trained = np.asarray(trained)
    assert trained.shape == x.shape  # one output per image: labels stay paired
    assert trained.min() >= 0.0 and trained.max() <= 1.0
    assert not np.allclose(trained, x)  # it does change the images while training
    for layer in augment:
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
