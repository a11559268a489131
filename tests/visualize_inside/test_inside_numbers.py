"""The pictures' numbers: hand convolution and pooling agree with Keras; Grad-CAM localises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab._backend import keras as _keras
from cnnlab.errors import CnnlabError
from cnnlab.model.kernels import CLASSIC_FILTERS
from cnnlab.visualize.convpool import convolve2d, max_pool
from cnnlab.visualize.features import feature_maps
from cnnlab.visualize.filters import conv_layers, pick_conv_layer
from cnnlab.visualize.gradcam import gradcam

VERTICAL = CLASSIC_FILTERS["vertical edge"]
HORIZONTAL = CLASSIC_FILTERS["horizontal edge"]


def test_convolve2d_is_valid_cross_correlation() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    kernel = np.array([[1, 0], [0, -1]], dtype=np.float32)  # flipped, this would give +5
    # Each output is image[i, j] - image[i + 1, j + 1] = -5 everywhere.
    np.testing.assert_array_equal(convolve2d(image, kernel), np.full((3, 3), -5.0))
    ones = np.ones((3, 3), dtype=np.float32)
    np.testing.assert_array_equal(convolve2d(image, ones), [[45.0, 54.0], [81.0, 90.0]])


def test_max_pool_drops_the_odd_edge() -> None:
    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    np.testing.assert_array_equal(max_pool(image), [[6.0, 8.0], [16.0, 18.0]])


def test_feature_maps_match_the_hand_computation(image: np.ndarray) -> None:
    keras = _keras()
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(1, 3), keras.layers.MaxPool2D()]
    )
    conv = model.layers[0]
    conv.set_weights([VERTICAL[:, :, None, None], np.zeros(1, dtype=np.float32)])
    (conv_name, convolved), (_, pooled) = feature_maps(model, image)
    assert conv_name == conv.name
    expected = convolve2d(image, VERTICAL)
    np.testing.assert_allclose(convolved[:, :, 0], expected, atol=1e-5)
    np.testing.assert_allclose(pooled[:, :, 0], max_pool(expected), atol=1e-5)


def test_feature_maps_of_a_loaded_model(tiny_model, saved_tiny_model, image) -> None:  # type: ignore[no-untyped-def]
    original = feature_maps(tiny_model, image)
    loaded = feature_maps(saved_tiny_model, image)
    assert [name for name, _ in loaded] == [layer.name for layer in saved_tiny_model.layers[:4]]
    assert [maps.shape for _, maps in loaded] == [(28, 28, 4), (14, 14, 4), (12, 12, 4), (6, 6, 4)]
    for (_, a), (_, b) in zip(original, loaded, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_feature_maps_of_functional_and_unbuilt_models(image: np.ndarray) -> None:
    keras = _keras()
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv2D(3, 3)(inputs)))
    functional = keras.Model(inputs, outputs)
    assert [m.shape for _, m in feature_maps(functional, image)] == [(26, 26, 3)]
    unbuilt = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.AveragePooling2D(2)])
    assert [m.shape for _, m in feature_maps(unbuilt, image)] == [(26, 26, 2), (13, 13, 2)]


def test_pick_conv_layer(tiny_model) -> None:  # type: ignore[no-untyped-def]
    convs = conv_layers(tiny_model)
    assert pick_conv_layer(tiny_model) is convs[0]
    assert pick_conv_layer(tiny_model, -1) is convs[1]
    assert pick_conv_layer(tiny_model, convs[1].name) is convs[1]
    with pytest.raises(CnnlabError, match="no Conv2D layer named"):
        pick_conv_layer(tiny_model, "dense")
    with pytest.raises(CnnlabError, match="out of range"):
        pick_conv_layer(tiny_model, 2)


def test_gradcam_shape_and_range(tiny_model, saved_tiny_model, image) -> None:  # type: ignore[no-untyped-def]
    for model in (tiny_model, saved_tiny_model):
        heat, class_index = gradcam(model, image)
        predicted = int(np.argmax(model.predict(image[None], verbose=0)))
        assert class_index == predicted
        assert heat.shape == (28, 28)
        assert heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0


def quadrant_model():  # type: ignore[no-untyped-def]
    """Class 0 sums a vertical-edge channel, class 1 a horizontal-edge channel, over the image."""
    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(2, 3, activation="relu", padding="same", name="edges"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.layers[0].set_weights([np.stack([VERTICAL, HORIZONTAL], -1)[:, :, None, :], np.zeros(2)])
    weights = np.zeros((28, 28, 2, 2), dtype=np.float32)
    weights[:, :, 0, 0] = weights[:, :, 1, 1] = 1 / 784
    model.layers[2].set_weights([weights.reshape(-1, 2), np.zeros(2)])
    return model


def test_gradcam_finds_the_quadrant_that_decides_the_class(tmp_path: Path) -> None:
    picture = np.zeros((28, 28, 1), dtype=np.float32)
    stripes = (np.arange(14) // 2) % 2 == 0  # 2 pixels on, 2 off
    picture[:14, :14][:, stripes] = 1.0  # vertical stripes, top left
    picture[14:, 14:][stripes, :] = 1.0  # horizontal stripes, bottom right
    model = quadrant_model()
    model.save(tmp_path / "quadrant.keras")
    loaded = _keras().models.load_model(tmp_path / "quadrant.keras")
    for candidate in (model, loaded):
        for class_index, (rows, cols) in [
            (0, (slice(0, 14), slice(0, 14))),
            (1, (slice(14, 28), slice(14, 28))),
        ]:
            heat, _ = gradcam(candidate, picture, class_index)
            inside = heat[rows, cols].mean()
            outside = (heat.sum() - heat[rows, cols].sum()) / (28 * 28 - 14 * 14)
            assert inside > 5 * outside, (class_index, inside, outside)


def test_importing_the_picture_modules_does_not_import_keras() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import cnnlab.visualize.convpool, cnnlab.visualize.features\n"
        "import cnnlab.visualize.filters, cnnlab.visualize.gradcam\n"
        "print(sorted({'keras', 'tensorflow', 'matplotlib.pyplot'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_repeated_feature_maps_do_not_grow_the_model() -> None:
    """A server computes feature maps for every request: the layers must not gain a node each."""
    from cnnlab.model.builder import build_model
    from cnnlab.visualize.features import feature_maps

    model = build_model("basic_cnn")
    image = np.zeros((28, 28, 1), dtype=np.float32)
    first = feature_maps(model, image)
    nodes = len(model.layers[0]._inbound_nodes)
    for _ in range(20):
        again = feature_maps(model, image)
    assert len(model.layers[0]._inbound_nodes) == nodes
    for (name, a), (same, b) in zip(first, again, strict=True):
        assert name == same and np.array_equal(a, b)
