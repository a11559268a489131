"""cnnlab's cheap augmentation layers: the statistics of Keras' flip, translation and erasing.

RandomHorizontalFlip, RandomShift and RandomErasingMask replace Keras' RandomFlip,
RandomTranslation and RandomErasing in the `improved` and `resnet` presets (issue 16). These
tests check the draws against what the Keras layers draw, that images keep their values and
range, that the layers are off at inference, save and load, and compile under every backend.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.model.builder import build_model, parse_architecture
from cnnlab.model.layers import custom_layers
from cnnlab.runs import load_model

N = 4000  # images per statistical test: a binomial share then has a standard error <= 0.008


def _layer(name: str, seed: int = 0, **options: object) -> keras.layers.Layer:
    return custom_layers()[name](seed=seed, **options)


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(5).uniform(0.05, 1.0, (n, 28, 28, 1)).astype(np.float32)


def _erasing(seed: int = 0) -> keras.layers.Layer:
    return _layer("RandomErasingMask", seed, factor=0.5, scale=[0.02, 0.2], fill_value=0.0)


def test_flip_mirrors_about_half_the_images_and_leaves_the_rest() -> None:
    x = _images(N)
    out = np.asarray(_layer("RandomHorizontalFlip")(x, training=True))
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(mirrored ^ kept)  # each image is itself or its mirror image, exactly
    assert abs(mirrored.mean() - 0.5) < 0.03  # ~4 standard errors


def _shifts(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column shift of the single lit pixel that started at (14, 14)."""
    flat = out[..., 0].reshape(len(out), -1)
    assert np.all((flat > 0).sum(axis=1) == 1)  # a shift never drops nor blurs it
    rows, cols = np.divmod(flat.argmax(axis=1), 28)
    return rows - 14, cols - 14


def test_shift_offsets_are_keras_translation_draws_rounded_to_whole_pixels() -> None:
    dot = np.zeros((N, 28, 28, 1), np.float32)
    dot[:, 14, 14] = 1.0
    out = np.asarray(_layer("RandomShift", 3)(dot, training=True))
    rows, cols = _shifts(out)
    # RandomTranslation(0.1) on 28 px draws a real shift in [-2.8, 2.8]; rounded, -2..2 are
    # each 1/5.6 likely and -3, 3 each 0.3/5.6; nothing outside
    expected = np.array([0.3, 1, 1, 1, 1, 1, 0.3]) / 5.6 * N
    for shift in (rows, cols):
        assert shift.min() >= -3 and shift.max() <= 3
        counts = np.bincount(shift + 3, minlength=7)
        assert counts.min() > 0  # the whole range occurs
        # chi-square goodness of fit at 6 degrees of freedom: 22.5 is its 0.1% level
        assert ((counts - expected) ** 2 / expected).sum() < 22.5
        assert abs(shift.mean()) < 0.1  # symmetric (standard error 0.026)
    assert abs(np.corrcoef(rows, cols)[0, 1]) < 0.1  # the two axes drawn independently


def test_a_shifted_image_keeps_its_pixels_and_the_gap_takes_the_fill_value() -> None:
    x = _images(64)
    out = np.asarray(_layer("RandomShift", 1, fill_value=0.5)(x, training=True))
    for image, shifted in zip(x, out, strict=True):
        # find the shift by trying all 49: exactly one places the image's pixels where they are
        matches = []
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                expected = np.full_like(image, 0.5)
                expected[max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = image[
                    max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)
                ]
                if np.array_equal(shifted, expected):
                    matches.append((dy, dx))
        assert len(matches) == 1


def _boxes(out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For images of ones: which were erased, and the erased box's height and width."""
    erased = out[..., 0] == 0
    hit = erased.any(axis=(1, 2))
    heights = erased.any(axis=2).sum(axis=1)
    widths = erased.any(axis=1).sum(axis=1)
    assert np.array_equal(erased.sum(axis=(1, 2)), heights * widths)  # one solid rectangle
    return hit, heights[hit], widths[hit]


def test_erasing_matches_keras_random_erasing_in_probability_and_box_size() -> None:
    ones = np.ones((N, 28, 28, 1), np.float32)
    ours = _boxes(np.asarray(_erasing(seed=4)(ones, training=True)))
    reference = keras.layers.RandomErasing(
        factor=0.5, scale=(0.02, 0.2), fill_value=0.0, value_range=(0.0, 1.0), seed=4
    )
    theirs = _boxes(np.asarray(reference(ones, training=True)))
    # factor 0.5 means a per-image probability uniform in [0, 0.5]: a quarter of the images
    for hit, _, _ in (ours, theirs):
        assert abs(hit.mean() - 0.25) < 0.03  # ~4 standard errors (0.0068)
    # each side is sqrt(u) of the image, u uniform in [0.02, 0.2]: 3.96 to 12.5 px, covering
    # 3 to 13 whole pixels; the area fraction averages (E sqrt u)^2 = 0.1029
    for _, heights, widths in (ours, theirs):
        for side in (heights, widths):
            assert side.min() >= 3 and side.max() <= 13
        area = heights * widths / 784
        assert abs(area.mean() - 0.1029) < 0.01  # standard error ~0.0016 over ~1000 boxes
        assert area.min() >= 9 / 784 and area.max() <= 169 / 784
    # and the two layers' box sizes are the same distribution, side by side
    for mine, keras_side in ((ours[1], theirs[1]), (ours[2], theirs[2])):
        assert abs(mine.mean() - keras_side.mean()) < 0.5  # pixels; standard error ~0.13
        assert abs(mine.std() - keras_side.std()) < 0.5


def test_values_stay_in_range_and_only_images_are_touched() -> None:
    x = np.random.default_rng(2).random((256, 28, 28, 1)).astype(np.float32)
    x[:, 0, 0] = 1.0  # the range's ends are present
    x[:, 0, 1] = 0.0
    for layer in (_layer("RandomHorizontalFlip"), _layer("RandomShift"), _erasing()):
        out = np.asarray(layer(x, training=True))
        assert out.shape == x.shape  # one output per image: the labels stay paired
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not np.array_equal(out, x)  # it does change some images while training
    # the labels reach the loss untouched: the layers only ever receive the images
    seen = []

    def loss(y_true: object, y_pred: object) -> object:
        seen.append(np.asarray(y_true).ravel())
        return keras.ops.mean(keras.ops.square(y_pred))

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            _layer("RandomHorizontalFlip"),
            _layer("RandomShift"),
            _erasing(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", loss, run_eagerly=True)
    y = np.arange(8, dtype=np.float32)
    model.fit(x[:8], y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(seen[0], y)


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_the_layers_are_off_at_inference() -> None:
    x = _images(8)
    for layer in (_layer("RandomHorizontalFlip"), _layer("RandomShift"), _erasing()):
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
        np.testing.assert_array_equal(np.asarray(layer(x)), x)
        model = keras.Sequential([keras.Input((28, 28, 1)), layer])
        np.testing.assert_array_equal(model.predict(x, verbose=0), x)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"`height_factor` must be in \[0, 1\]"):
        _layer("RandomShift", height_factor=1.5)
    with pytest.raises(ValueError, match="`scale` must be a pair"):
        _layer("RandomErasingMask", scale=0.2)
    with pytest.raises(ValueError, match=r"`factor` must lie in \[0, 1\]"):
        _layer("RandomErasingMask", factor=[0.5, 2])


def test_architecture_files_use_them_and_the_saved_model_loads_back(tmp_path: Path) -> None:
    spec = {
        "name": "augmented",
        "layers": [
            {"type": "RandomHorizontalFlip", "seed": 1},
            {"type": "RandomShift", "height_factor": 0.2, "width_factor": 0.1},
            {"type": "RandomErasingMask", "factor": [0.1, 0.3], "scale": [0.05, 0.1]},
            {"type": "RandomTranslation", "height_factor": 0.1, "width_factor": 0.1},
            {"type": "Flatten"},
            {"type": "Dense", "units": "num_classes", "activation": "softmax"},
        ],
    }
    model = build_model(parse_architecture(spec), (28, 28, 1), 10)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(_images(16), np.arange(16) % 10, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    for before, after in zip(model.layers[:4], loaded.layers[:4], strict=True):
        assert type(after) is type(before)  # the Keras layer stays in the vocabulary too
        assert after.get_config() == before.get_config()
    assert loaded.layers[2].get_config()["factor"] == [0.1, 0.3]
    x = _images(4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


_COMPILED_FIT = textwrap.dedent(
    """
    import numpy as np, keras
    from cnnlab.model.layers import custom_layers
    own = custom_layers()
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        own["RandomHorizontalFlip"](seed=1),
        own["RandomShift"](0.1, 0.1, seed=2),
        own["RandomErasingMask"](0.5, [0.02, 0.2], seed=3),
        keras.layers.Conv2D(4, 3),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    history = model.fit(x, np.arange(64) % 10, batch_size=16, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    print("compiled fit ok on", keras.backend.backend())
    """
)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_each_backend_compiles_and_trains_with_them(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _COMPILED_FIT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"compiled fit ok on {backend}" in done.stdout
