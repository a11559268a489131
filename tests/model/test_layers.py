"""cnnlab's own layers: RandomCanvas places each image at a random spot on a larger canvas."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.errors import ConfigError
from cnnlab.model.builder import build_model, parse_architecture
from cnnlab.model.layers import custom_layers
from cnnlab.runs import load_model


def _canvas(size: int, seed: int = 0) -> keras.layers.Layer:
    return custom_layers()["RandomCanvas"](size=size, seed=seed)


def _images(n: int, height: int = 28, width: int = 28) -> np.ndarray:
    """Images with no zero pixel, so where each one landed on a black canvas is unambiguous."""
    rng = np.random.default_rng(7)
    return rng.uniform(0.1, 1.0, (n, height, width, 1)).astype(np.float32)


def _offsets(canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each image's top-left corner on its canvas."""
    ink = canvas[..., 0] > 0
    rows = ink.any(axis=2).argmax(axis=1)
    cols = ink.any(axis=1).argmax(axis=1)
    return rows, cols


def test_each_image_lands_whole_and_unchanged_somewhere_on_the_canvas() -> None:
    x = _images(64, 28, 20)
    out = np.asarray(_canvas(42)(x, training=True))
    assert out.shape == (64, 42, 42, 1)
    rows, cols = _offsets(out)
    for image, canvas, row, col in zip(x, out, rows, cols, strict=True):
        np.testing.assert_array_equal(canvas[row : row + 28, col : col + 20], image)
        assert np.count_nonzero(canvas) == image.size  # the rest is background


def test_the_background_takes_the_fill_value() -> None:
    x = _images(16)
    layer = custom_layers()["RandomCanvas"](size=40, fill_value=0.5, seed=2)
    out = np.asarray(layer(x, training=True))
    assert np.count_nonzero(out == 0.5) == 16 * (40 * 40 - 28 * 28)  # the images hold no 0.5
    assert np.isclose(out.sum(), x.sum() + 0.5 * 16 * (40 * 40 - 28 * 28), rtol=1e-5)


def test_placements_cover_every_offset_about_evenly() -> None:
    # 28x28 on 36x36: 9 possible offsets per axis; 4,000 images give ~444 per offset.
    out = np.asarray(_canvas(36, seed=3)(_images(4000), training=True))
    rows, cols = _offsets(out)
    for offsets in (rows, cols):
        counts = np.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 0  # 0..8, nothing outside
        # a chi-square test of uniformity at 8 degrees of freedom: 26.1 is its 0.1% level
        expected = len(offsets) / 9
        assert ((counts - expected) ** 2 / expected).sum() < 26.1
    assert abs(np.corrcoef(rows, cols)[0, 1]) < 0.1  # rows and columns drawn independently


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_the_canvas_is_off_at_inference_and_the_labels_are_untouched() -> None:
    x = _images(8)
    layer = _canvas(56)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    model = keras.Sequential([keras.Input((None, None, 1)), layer])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    # while training, the next layer sees the canvas; the labels go to the loss untouched (a
    # layer only ever receives the images), and each image keeps its pixels (test above)
    y = np.arange(8)
    seen = []

    class Record(keras.layers.Layer):
        def call(self, inputs: object) -> object:
            seen.append(tuple(inputs.shape[1:3]))
            return keras.ops.mean(inputs, axis=(1, 2))

    recorder = keras.Sequential([keras.Input((None, None, 1)), _canvas(56), Record()])
    recorder.compile("sgd", "mse", run_eagerly=True)
    recorder.fit(x, y.astype("float32"), epochs=1, batch_size=8, verbose=0)
    assert (56, 56) in seen


def test_an_image_larger_than_the_canvas_is_refused() -> None:
    with pytest.raises(ValueError, match=r"40x40 images do not fit a 32x32 canvas"):
        _canvas(32)(_images(2, 40, 40), training=True)
    with pytest.raises(ValueError, match="positive integer"):
        custom_layers()["RandomCanvas"](size=0)


def test_architecture_files_use_it_and_the_saved_model_loads_back(tmp_path: Path) -> None:
    spec = {
        "name": "canvas_fcn",
        "any_input_size": True,
        "layers": [
            {"type": "RandomCanvas", "size": 40},
            {"type": "Conv2D", "filters": 4, "kernel_size": [3, 3]},
            {"type": "GlobalMaxPooling2D"},
        ],
    }
    model = build_model(parse_architecture(spec), (28, 28, 1), 10)
    assert type(model.layers[0]).__name__ == "RandomCanvas"
    model.compile("adam", "mse")
    model.fit(_images(8), np.zeros((8, 4)), epochs=1, verbose=0)  # trains on 40x40
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    assert loaded.layers[0].get_config()["size"] == 40
    x = _images(2, 50, 50)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    bad = {**spec, "layers": [{"type": "RandomCanvas", "size": "big"}]}
    with pytest.raises(ConfigError, match=r"layer 1 \(RandomCanvas\).*positive integer"):
        build_model(parse_architecture(bad), (28, 28, 1), 10)
