"""`cnnlab.model.heads.with_logits`: the logits beside the probabilities, for every head cnnlab
builds, and None where there is no softmax to undo."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.model.heads import with_logits


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check(model: object, shape: tuple[int, ...]) -> None:
    both = with_logits(model)
    assert both is not None
    x = np.random.default_rng(0).random((5, *shape), dtype=np.float32)
    probabilities, logits = (np.asarray(a, np.float64) for a in both.predict_on_batch(x))
    np.testing.assert_allclose(probabilities, model.predict_on_batch(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_softmax(logits), probabilities, rtol=1e-4, atol=1e-6)
    assert logits.shape == probabilities.shape


@pytest.mark.parametrize("preset", ["basic_cnn", "fcn"])
def test_the_logits_of_a_built_model(preset: str) -> None:
    """basic_cnn ends in Dense(softmax); fcn in a separate Activation("softmax")."""
    import keras

    from cnnlab.model.builder import build_model

    keras.utils.set_random_seed(1)
    _check(build_model(preset, (28, 28, 1), 4), (28, 28, 1))


def test_a_softmax_layer_and_a_model_stacked_again() -> None:
    """A `Softmax` layer's input is the logits; a Sequential whose layers are stacked again in
    another model (as the export does) still gives its own graph's logits."""
    import keras

    keras.utils.set_random_seed(2)
    dense = keras.layers.Dense(3)
    original = keras.Sequential([keras.Input((6,)), dense, keras.layers.Softmax()])
    _check(original, (6,))
    again = keras.Sequential([keras.Input((6,)), *original.layers])
    _check(again, (6,))


def test_no_softmax_no_logits() -> None:
    import keras

    linear = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    sigmoid = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="sigmoid")])
    assert with_logits(linear) is None
    assert with_logits(sigmoid) is None
