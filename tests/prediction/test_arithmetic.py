"""One feature-map cell's arithmetic, redone in float64, against Keras' own layer outputs.

Tiny hand-built float32 models with random weights: every explained cell must equal what the
layer itself output to 1e-5 of the size of its terms (float32 sums in another order), and its
terms must be the ones a reader would pick by hand (the window, the padding, the kernel slice).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.prediction.arithmetic import (
    FLOAT32_TOLERANCE,
    UnknownLayer,
    explain_cell,
    explainable_layers,
)

keras = pytest.importorskip("keras")

TOLERANCE = 1e-5  # relative to the sum of the terms' magnitudes: float32 in any order


def _model(shape: tuple[int, int, int], *layers: Any) -> Any:
    """A float32 Sequential of `layers` with seeded random weights (biases too)."""
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input(shape), *layers])
    for weight in model.weights:
        weight.assign(np.random.default_rng(1).normal(size=weight.shape).astype("float32"))
    return model


def _image(shape: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(2).uniform(0, 1, size=shape).astype(np.float32)


def _layer_output(model: Any, image: np.ndarray, name: str) -> np.ndarray:
    """The layer's output for `image`, through Keras alone (not through the explainer)."""
    tensor = inputs = keras.Input(image.shape)
    for layer in model.layers:  # a chain of layers, Sequential or functional
        if isinstance(layer, keras.layers.InputLayer):
            continue
        tensor = layer(tensor)
        if layer.name == name:
            break
    return np.asarray(keras.Model(inputs, tensor)(image[None]))[0].astype(np.float64)


def _check(model: Any, image: np.ndarray, name: str, cells: list[tuple[int, int, int]]) -> list:
    """Each cell explained, its value equal to Keras' (`keras_value` and an independent run)."""
    expected = _layer_output(model, image, name)
    explained = []
    for row, col, channel in cells:
        cell = explain_cell(model, image, name, row, col, channel)
        scale = np.abs(cell.patch * (1 if cell.kernel is None else cell.kernel)).sum()
        limit = TOLERANCE * (scale + abs(cell.bias))
        assert abs(cell.value - expected[row, col, channel]) <= limit, (row, col, channel)
        assert cell.keras_value == pytest.approx(expected[row, col, channel], abs=limit)
        assert cell.agrees and cell.dtype == "float32"
        explained.append(cell)
    return explained


def test_a_same_conv_at_a_corner_reads_zero_padding() -> None:
    model = _model(
        (6, 7, 1), keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv2d")
    )
    image = _image((6, 7, 1))
    corner, edge, inside = _check(model, image, "conv2d", [(0, 0, 1), (5, 3, 2), (2, 3, 0)])
    assert corner.rows == (-1, 2) and corner.cols == (-1, 2)
    assert corner.padding.tolist() == [[True] * 3, [True, False, False], [True, False, False]]
    assert np.all(corner.patch[corner.padding] == 0)
    assert np.array_equal(corner.patch[1:, 1:, 0], image[:2, :2, 0])
    assert edge.rows == (4, 7) and edge.padding[2].all() and not edge.padding[:2].any()
    assert not inside.padding.any() and np.array_equal(inside.patch[:, :, 0], image[1:4, 2:5, 0])
    # the kernel slice of the output channel, and sum + bias then relu
    assert np.array_equal(corner.kernel, np.asarray(model.layers[0].kernel)[:, :, :, 1])
    assert corner.total == pytest.approx((corner.patch * corner.kernel).sum() + corner.bias)
    assert corner.value == max(corner.total, 0.0) and corner.activation == "relu"


def test_a_valid_conv_over_rgb_sums_every_input_channel() -> None:
    model = _model((7, 7, 3), keras.layers.Conv2D(4, 3, activation="tanh", name="conv2d"))
    image = _image((7, 7, 3))
    (cell,) = _check(model, image, "conv2d", [(4, 2, 3)])
    assert cell.patch.shape == cell.kernel.shape == (3, 3, 3)  # type: ignore[union-attr]
    assert np.array_equal(cell.patch, image[4:7, 2:5, :]) and not cell.padding.any()
    assert cell.channel_sums.shape == (3,)
    assert cell.total == pytest.approx(cell.channel_sums.sum() + cell.bias)
    assert cell.activation == "tanh" and cell.value == pytest.approx(np.tanh(cell.total), abs=1e-6)
    answer = cell.to_dict()
    assert [item["channel"] for item in answer["inputs"]] == [0, 1, 2]
    assert answer["inputs"][2]["sum"] == pytest.approx(cell.channel_sums[2])


@pytest.mark.parametrize(
    ("options", "cells"),
    [
        ({"strides": 2, "padding": "same"}, [(0, 0, 0), (3, 3, 1), (2, 1, 1)]),
        ({"strides": (2, 3), "padding": "valid"}, [(0, 0, 0), (2, 1, 1)]),
        ({"dilation_rate": 2, "padding": "same"}, [(0, 7, 0), (4, 4, 1)]),
    ],
    ids=["strided same", "strided valid", "dilated"],
)
def test_strided_and_dilated_convs(options: dict[str, Any], cells: list) -> None:
    model = _model((8, 8, 2), keras.layers.Conv2D(2, 3, **options, name="conv2d"))
    cells = _check(model, _image((8, 8, 2)), "conv2d", cells)
    assert all(cell.activation == "linear" for cell in cells)


def test_a_max_pooling_window_and_its_maximum() -> None:
    model = _model(
        (8, 8, 1),
        keras.layers.Conv2D(3, 3, activation="relu", name="conv2d"),
        keras.layers.MaxPooling2D(2, name="max_pooling2d"),
    )
    image = _image((8, 8, 1))
    cell, last = _check(model, image, "max_pooling2d", [(1, 2, 2), (2, 2, 0)])
    conv = _layer_output(model, image, "conv2d")
    assert cell.previous == "conv2d" and cell.previous_shape == (6, 6, 3)
    assert cell.rows == (2, 4) and cell.cols == (4, 6) and cell.operation == "max"
    assert np.allclose(cell.patch, conv[2:4, 4:6, 2], rtol=TOLERANCE, atol=TOLERANCE)
    assert cell.value == cell.patch.max() and last.rows == (4, 6)


def test_an_average_pooling_window_with_same_padding_leaves_the_padding_out() -> None:
    model = _model(
        (5, 5, 2), keras.layers.AveragePooling2D(2, padding="same", name="average_pooling2d")
    )
    image = _image((5, 5, 2))
    corner, inside = _check(model, image, "average_pooling2d", [(2, 2, 1), (0, 1, 0)])
    assert corner.padding.tolist() == [[False, True], [True, True]]  # only image[4, 4] counts
    assert corner.value == pytest.approx(image[4, 4, 1]) and corner.operation == "mean"
    assert inside.value == pytest.approx(image[0:2, 2:4, 0].mean())
    assert corner.to_dict()["window"][1] == [None, None]


def test_a_conv_after_batch_normalization_reads_what_keras_fed_it() -> None:
    model = _model(
        (6, 6, 1),
        keras.layers.Conv2D(2, 3, padding="same"),
        keras.layers.BatchNormalization(name="batch_normalization"),
        keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="second"),
    )
    for weight in model.layers[1].weights[-1:]:  # a positive moving variance
        weight.assign(np.abs(np.asarray(weight)) + 0.5)
    image = _image((6, 6, 1))
    (cell,) = _check(model, image, "second", [(0, 5, 1)])
    normalized = _layer_output(model, image, "batch_normalization")
    assert cell.previous == "batch_normalization"
    assert np.allclose(cell.patch[1:, :2], normalized[0:2, 4:6], rtol=TOLERANCE, atol=TOLERANCE)


def test_a_functional_model_with_a_softmax_conv() -> None:
    inputs = keras.Input((5, 5, 1))
    hidden = keras.layers.Conv2D(3, 2, name="first")(inputs)
    outputs = keras.layers.Conv2D(3, 2, activation="softmax", name="scores")(hidden)
    model = keras.Model(inputs, outputs)
    for weight in model.weights:
        weight.assign(np.random.default_rng(1).normal(size=weight.shape).astype("float32"))
    image = _image((5, 5, 1))
    (first,) = _check(model, image, "first", [(0, 0, 0)])
    (scores,) = _check(model, image, "scores", [(1, 2, 2)])
    assert first.previous == "input" and scores.previous == "first"
    assert 0 < scores.value < 1  # softmax over the cell's channels, not of one number
    assert explainable_layers(model) == ["first", "scores"]


def test_bad_requests_are_refused_in_one_line() -> None:
    model = _model(
        (6, 6, 1),
        keras.layers.Conv2D(2, 3, name="conv2d"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, name="dense"),
    )
    image = _image((6, 6, 1))
    with pytest.raises(UnknownLayer, match="no layer 'nope'; layers that can be explained: conv2d"):
        explain_cell(model, image, "nope", 0, 0, 0)
    with pytest.raises(CnnlabError, match="dense is a Dense layer; only Conv2D") as refused:
        explain_cell(model, image, "dense", 0, 0, 0)
    assert "\n" not in str(refused.value)
    for row, col, channel in [(4, 0, 0), (0, 4, 0), (0, 0, 2), (-1, 0, 0)]:
        with pytest.raises(CnnlabError, match="outside conv2d's output of 4x4x2"):
            explain_cell(model, image, "conv2d", row, col, channel)


def test_a_mixed_bfloat16_model_is_explained_at_its_own_rounding() -> None:
    """The layer multiplies bfloat16 values: the terms are rounded so, and the answer agrees
    with Keras' to bfloat16's rounding of the terms' size (not float32's)."""
    from cnnlab._backend import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = _model(
            (6, 6, 3),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2d"),
            keras.layers.MaxPooling2D(2, name="max_pooling2d"),
        )
    image = _image((6, 6, 3))
    conv = explain_cell(model, image, "conv2d", 0, 5, 2)
    pool = explain_cell(model, image, "max_pooling2d", 1, 1, 3)
    assert conv.dtype == pool.dtype == "bfloat16"
    rounded = image.astype(keras.ops.convert_to_numpy(keras.ops.cast(image, "bfloat16")).dtype)
    assert np.array_equal(conv.patch[1:, :2], rounded[0:2, 4:6].astype(np.float64))
    assert conv.agrees and pool.agrees
    assert FLOAT32_TOLERANCE < conv.tolerance / np.abs(conv.products).sum() < 0.05
