from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import ConfigError
from cnnlab.model.builder import build_model, parse_architecture
from cnnlab.model.kernels import (
    CLASSIC_FILTERS,
    classic_kernel_stack,
    init_first_conv,
    patches,
    whitening_filters,
)


def test_whitening_filters_whiten_patches() -> None:
    rng = np.random.default_rng(0)
    # Correlated images: smooth noise, so 3x3 patches are far from white.
    noise = rng.random((200, 30, 30))
    images = (noise[:, 1:-1, 1:-1] + noise[:, :-2, 1:-1] + noise[:, 1:-1, :-2]) / 3
    filters = whitening_filters(images)
    assert filters.shape == (3, 3, 1, 18)
    np.testing.assert_allclose(filters[..., 9:], -filters[..., :9])
    flat = patches(images, limit=50_000, seed=1)
    flat = flat - flat.mean(axis=0)
    responses = flat @ filters[:, :, 0, :9].reshape(9, 9)
    covariance = np.cov(responses, rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(9), atol=0.1)


def test_classic_init_puts_the_known_filters_first() -> None:
    model = build_model("basic_cnn")
    before = np.array(model.layers[0].kernel.numpy())
    name = init_first_conv(model, "classic", np.zeros((4, 28, 28, 1)))
    kernel = model.get_layer(name).kernel.numpy()
    for i, known in enumerate(CLASSIC_FILTERS.values()):
        got = kernel[:, :, 0, i]
        cosine = (got * known).sum() / np.linalg.norm(got) / np.linalg.norm(known)
        assert cosine == pytest.approx(1.0, abs=1e-5)  # the same filter, rescaled
    np.testing.assert_array_equal(kernel[..., 5:], before[..., 5:])  # the rest stay random
    assert classic_kernel_stack().shape == (3, 3, 1, 5)


def test_random_leaves_the_model_alone_and_bad_models_are_refused() -> None:
    model = build_model("basic_cnn")
    assert init_first_conv(model, "random", np.zeros((1, 28, 28, 1))) is None
    dense_only = build_model(parse_architecture({"layers": [{"type": "Flatten"}]}), (28, 28, 1))
    with pytest.raises(ConfigError, match="no Conv2D"):
        init_first_conv(dense_only, "classic", np.zeros((1, 28, 28, 1)))
    five = build_model(
        parse_architecture({"layers": [{"type": "Conv2D", "filters": 2, "kernel_size": 5}]}),
        (28, 28, 1),
    )
    with pytest.raises(ConfigError, match="3x3 kernels"):
        init_first_conv(five, "classic", np.zeros((1, 28, 28, 1)))


def test_whitening_works_for_any_square_kernel_and_channels() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((50, 16, 16, 3)).astype(np.float32)
    assert whitening_filters(images, size=5).shape == (5, 5, 3, 150)
    spec = {"layers": [{"type": "Conv2D", "filters": 8, "kernel_size": 5}]}
    model = build_model(parse_architecture(spec), (16, 16, 3))
    name = init_first_conv(model, "whitening", images)
    kernel = model.get_layer(name).kernel.numpy()
    np.testing.assert_allclose(kernel, whitening_filters(images, size=5)[..., :8], rtol=1e-5)
