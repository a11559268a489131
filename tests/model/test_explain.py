"""`summary --explain` arithmetic, checked against Keras' own shapes and parameter counts."""

from __future__ import annotations

import keras
import pytest

from cnnlab.model.builder import build_model, parse_architecture
from cnnlab.model.explain import explain_model, format_explanation

STRIDED = {
    "name": "strided",
    "layers": [
        {"type": "Conv2D", "filters": 16, "kernel_size": [5, 3], "strides": 2,
         "padding": "same", "use_bias": False},
        {"type": "BatchNormalization"},
        {"type": "Activation", "activation": "relu"},
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "dilation_rate": 2},
        {"type": "AveragePooling2D", "pool_size": 3, "strides": 2, "padding": "same"},
        {"type": "Dropout", "rate": 0.25},
        {"type": "Conv2D", "filters": 10, "kernel_size": 1},
        {"type": "GlobalAveragePooling2D"},
        {"type": "Dense", "units": "num_classes", "activation": "softmax"},
    ],
}  # fmt: skip

RESIDUAL = {
    "name": "residual",
    "layers": [
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "padding": "same", "name": "stem"},
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "padding": "same", "name": "a"},
        {"type": "Add", "inputs": ["a", "stem"], "name": "sum"},
        {"type": "Concatenate", "inputs": ["sum", "stem"]},
        {"type": "MaxPool2D", "pool_size": 2},
        {"type": "Flatten"},
        {"type": "Dense", "units": "num_classes"},
    ],
}


@pytest.mark.parametrize(
    ("architecture", "input_shape"),
    [
        ("basic_cnn", (28, 28, 1)),
        ("fcn", (28, 28, 1)),
        (STRIDED, (28, 27, 1)),
        (RESIDUAL, (13, 13, 3)),
    ],
    ids=["seed", "fcn", "strided", "residual"],
)
def test_explanation_matches_keras(architecture: object, input_shape: tuple[int, ...]) -> None:
    if isinstance(architecture, dict):
        architecture = parse_architecture(architecture)
    model = build_model(architecture, input_shape, 7)  # type: ignore[arg-type]
    explained = explain_model(model)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    assert [e.name for e in explained] == [layer.name for layer in layers]
    for e, layer in zip(explained, layers, strict=True):
        assert e.output_shape == tuple(layer.output.shape[1:]), e.text
        assert e.params == layer.count_params(), e.text
        assert "as Keras reports them" not in e.text  # real arithmetic, not a copy
    assert sum(e.params for e in explained) == model.count_params()


def test_seed_explanation_reads_like_the_issue() -> None:
    keras.backend.clear_session()
    text = format_explanation(build_model("basic_cnn"))
    assert "64 filters of 3x3x1 + 64 biases = 64*(3*3*1) + 64 = 640 parameters" in text
    assert "'same' padding keeps 28x28" in text
    assert "14 - 3 + 1 = 12" in text
    assert "2*2*32 = 128 values" in text
    assert text.count("= 73,834") == 1
    assert "3x3x32 is 288" in text  # the notes' mistake, explained


def test_unknown_layer_falls_back_to_keras_numbers() -> None:
    spec = {"layers": [{"type": "LayerNormalization"}, {"type": "Flatten"}]}
    model = build_model(parse_architecture(spec), (4, 4, 2), 3)
    first = explain_model(model)[0]
    assert first.params == 4 and "as Keras reports them" in first.text
