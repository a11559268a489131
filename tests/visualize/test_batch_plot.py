"""`cnnlab visualize batch`: training pictures after the recipe and the model's augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from signs import make_signs

from cnnlab.cli import main
from cnnlab.model.builder import build_model
from cnnlab.visualize.batch import augmentation_layers, augmented, plot_batch


def test_augmentation_is_applied_in_training_mode_only_to_random_layers() -> None:
    model = build_model("photo_cnn", (24, 24, 3), 2)
    names = [type(layer).__name__ for layer in augmentation_layers(model)]
    assert names[0] == "RandomHorizontalFlip" and "Conv2D" not in names
    rng = np.random.default_rng(0)
    images = rng.random((6, 24, 24, 3)).astype("float32")
    changed = augmented(model, images)
    assert changed.shape == images.shape and changed.min() >= 0 and changed.max() <= 1
    assert not np.allclose(changed, images)  # augmentation really ran
    plain = build_model("basic_cnn", (28, 28, 1), 10)
    grey = rng.random((2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(augmented(plain, grey), grey)  # no augmentation layers


def test_plot_batch_titles_each_picture_with_its_class() -> None:
    images = np.zeros((5, 8, 8, 3), np.float32)
    fig = plot_batch(images, [0, 1, 1, 0, 1], ["cat", "dog"], title="five")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["cat", "dog", "dog", "cat", "dog"]


def test_cli_draws_a_folder_batch_before_any_run(tmp_path: Path) -> None:
    make_signs(tmp_path / "signs", count=32, seed=6)
    out = tmp_path / "batch.png"
    assert main(["visualize", "batch", str(tmp_path / "signs"), "-n", "9", "-o", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.size[0] > 300 and picture.mode in ("RGB", "RGBA")
