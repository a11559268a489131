from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest

from cnnlab.errors import ConfigError
from cnnlab.model.builder import (
    build_model,
    builtin_architectures,
    load_architecture,
    parse_architecture,
    summary_text,
)

# The seed notes' summary: output shapes (without the batch axis) and parameters per layer.
SEED_SUMMARY = [
    ("conv2d", (28, 28, 64), 640),
    ("max_pooling2d", (14, 14, 64), 0),
    ("conv2d_1", (12, 12, 64), 36928),
    ("max_pooling2d_1", (6, 6, 64), 0),
    ("conv2d_2", (4, 4, 32), 18464),
    ("max_pooling2d_2", (2, 2, 32), 0),
    ("flatten", (128,), 0),
    ("dense", (128,), 16512),
    ("dense_1", (10,), 1290),
]


def test_basic_cnn_is_the_seed_model() -> None:
    keras.backend.clear_session()  # as the notes do: layer names count from zero again
    model = build_model("basic_cnn", (28, 28, 1), 10)
    assert model.name == "Basic_CNN_model"
    assert model.count_params() == 73_834
    got = [
        (layer.name, tuple(layer.output.shape[1:]), layer.count_params()) for layer in model.layers
    ]
    assert got == SEED_SUMMARY


def test_summary_text_matches_the_notes() -> None:
    text = summary_text(build_model("basic_cnn"))
    assert 'Model: "Basic_CNN_model"' in text
    assert "Total params: 73,834" in text
    assert "(None, 2, 2, 32)" in text and "(None, 28, 28, 64)" in text
    assert "\x1b[" not in text  # plain text, no terminal colours


def test_num_classes_placeholder_follows_the_data() -> None:
    model = build_model("basic_cnn", (28, 28, 1), 4)
    assert model.output_shape == (None, 4)
    assert model.count_params() == 73_834 - 6 * 129


def test_builtin_list_contains_the_seed() -> None:
    assert "basic_cnn" in builtin_architectures()


def test_residual_connection_builds_a_functional_model(tmp_path: Path) -> None:
    conv = {"type": "Conv2D", "filters": 8, "kernel_size": 3, "padding": "same"}
    spec = {
        "name": "tiny_resnet",
        "layers": [
            {**conv, "name": "stem"},
            {**conv, "activation": "relu"},
            {**conv, "name": "conv_out"},
            {"type": "Add", "inputs": ["conv_out", "stem"], "name": "sum"},
            {"type": "GlobalAveragePooling2D"},
            {"type": "Dense", "units": "num_classes", "activation": "softmax"},
        ],
    }
    path = tmp_path / "res.json"
    path.write_text(json.dumps(spec))
    arch = load_architecture(path)
    assert not arch.is_sequential
    model = build_model(arch, (28, 28, 1), 3)
    add = model.get_layer("sum")
    inbound = {t._keras_history.operation.name for t in add.input}
    assert inbound == {"conv_out", "stem"}
    assert model.count_params() == (9 * 1 * 8 + 8) + 2 * (9 * 8 * 8 + 8) + (8 * 3 + 3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"layers": []}, "non-empty list"),
        ({"layers": [{"filters": 3}]}, "needs a `type`"),
        ({"layers": [{"type": "Conv2d", "filters": 3, "kernel_size": 3}]}, "did you mean Conv2D"),
        ({"layers": [{"type": "Dense", "units": 3, "inputs": ["nope"]}]}, "no earlier layer"),
        ({"layers": [{"type": "Dense"}]}, "layer 1 (Dense)"),
        ({"layers": [{"type": "Dense", "units": 2}], "colour": "red"}, "unknown key"),
    ],
)
def test_bad_specs_raise_config_error(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        build_model(parse_architecture(spec, source="spec.toml"), (28, 28, 1), 10)
    assert message in str(info.value)


def test_unknown_architecture_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean basic_cnn"):
        load_architecture("basic_cn")
    with pytest.raises(ConfigError, match="not found"):
        load_architecture(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[layers]\ntype=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_architecture(broken)


def test_mixed_precision_keeps_the_output_layer_float32() -> None:
    from cnnlab._backend import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = build_model("basic_cnn")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert model.layers[0].compute_dtype == "bfloat16"
    assert model.layers[-1].compute_dtype == "float32"
    assert model.count_params() == 73_834


def test_fully_convolutional_model_predicts_at_any_size() -> None:
    import numpy as np

    model = build_model("fcn", (28, 28, 1), 10)
    assert model.input_shape == (None, None, None, 1)
    assert not any(type(layer).__name__ in ("Flatten", "Dense") for layer in model.layers)
    assert type(model.layers[0]).__name__ == "RandomCanvas"  # training only
    assert type(model.layers[-2]).__name__ == "GlobalMaxPooling2D"
    assert model.count_params() == 73_834  # the seed's weights, as convolutions
    rng = np.random.default_rng(0)
    for size in (28, 56):
        probabilities = model.predict(rng.random((2, size, size, 1)), verbose=0)
        assert probabilities.shape == (2, 10)
        # Ten float32 probabilities sum to 1 within 10 x 6e-8 on any CPU: 1e-5 is safe.
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_fcn_is_the_seed_model_at_28x28() -> None:
    """With the seed's Dense weights reshaped into its 2x2 and 1x1 convolutions, the fcn
    computes what the seed model computes on a 28x28 image."""
    import numpy as np

    seed = build_model("basic_cnn", (28, 28, 1), 10)
    fcn = build_model("fcn", (28, 28, 1), 10)
    seed_weights = [w for layer in seed.layers for w in layer.get_weights()]
    dense_128, bias_128, dense_10, bias_10 = seed_weights[-4:]
    fcn.set_weights(
        [
            *seed_weights[:-4],
            dense_128.reshape(2, 2, 32, 128),  # Flatten reads (row, column, channel) in order
            bias_128,
            dense_10.reshape(1, 1, 128, 10),
            bias_10,
        ]
    )
    x = np.random.default_rng(1).random((16, 28, 28, 1)).astype(np.float32)
    expected, got = seed.predict(x, verbose=0), fcn.predict(x, verbose=0)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(got, expected, atol=1e-4)  # float32 sums in another order
