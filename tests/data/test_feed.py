"""cnnlab.data.feed: arrays and streamed image folders behind one interface for train/evaluate."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from signs import make_signs

from cnnlab.config import load_config
from cnnlab.data.feed import ArrayFeed, FolderFeed, load_feed, resolve_folder_recipe
from cnnlab.data.folders import Recipe


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 coloured signs in 8 class folders, and one file that is not an image."""
    root = tmp_path_factory.mktemp("signs")
    make_signs(root, count=96, seed=3)
    (root / "red_circle" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(0)
    for name in ("dark", "light"):
        (root / name).mkdir()
        for i in range(6):
            level = 40 if name == "dark" else 200
            pixels = np.clip(rng.normal(level, 10, (30 + i, 40)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(root / name / f"{i}.jpg")
    return root


def _feed(root: Path, **data: object) -> FolderFeed:
    overrides = {"data.dataset": str(root), "train.seed": 5, "data.image_size": "24"}
    overrides.update({f"data.{k}": v for k, v in data.items()})
    feed = load_feed(load_config(overrides=overrides))
    assert isinstance(feed, FolderFeed)
    return feed


def test_a_folder_is_streamed_with_its_classes_and_unreadable_files(signs: Path) -> None:
    feed = _feed(signs)
    assert feed.class_names == tuple(sorted(p.name for p in signs.iterdir() if p.is_dir()))
    assert feed.input_shape == (24, 24, 3)
    assert feed.recipe == Recipe((24, 24), "rgb", "squash")
    assert [Path(p).name for p in feed.unreadable] == ["broken.jpg"]
    assert feed.count("train") + feed.count("val") + feed.count("test") == 96


def test_training_batches_cover_every_training_picture_once_an_epoch(signs: Path) -> None:
    feed = _feed(signs)
    batches = feed.batches("train", 10, shuffle=True, seed=1)
    labels = np.concatenate([batches[i][1] for i in range(len(batches))])
    x, _ = batches[0]
    assert x.dtype == np.float32 and x.shape[1:] == (24, 24, 3)
    assert x.min() >= 0.0 and x.max() <= 1.0
    expected = Counter(feed.dataset.train.labels.tolist())
    assert Counter(labels.tolist()) == expected


def test_numpy_batches_and_arrays_agree_with_the_split(signs: Path) -> None:
    feed = _feed(signs)
    x, y = feed.arrays("test")
    assert len(x) == len(y) == feed.count("test")
    assert np.array_equal(y, feed.dataset.test.labels)
    pieces = list(feed.numpy_batches("test", 4))
    assert np.array_equal(np.concatenate([p[0] for p in pieces]), x)


def test_auto_size_and_colour_come_from_the_pictures(signs: Path, grey_folder: Path) -> None:
    coloured = resolve_folder_recipe(load_config(overrides={"data.dataset": str(signs)}).data)
    assert coloured.color == "rgb" and coloured.size[0] == coloured.size[1]
    assert coloured.size[0] % 8 == 0 and 32 <= coloured.size[0] <= 128
    grey = resolve_folder_recipe(load_config(overrides={"data.dataset": str(grey_folder)}).data)
    assert grey.color == "grayscale"  # colour JPEGs whose pixels are grey
    assert grey.size == (32, 32)  # the median short side (about 32) on the multiple of 8


def test_limit_keeps_a_seeded_choice_of_every_class(signs: Path) -> None:
    feed = _feed(signs, limit=16)
    assert feed.count("train") == 16
    assert len(set(feed.dataset.train.labels.tolist())) > 2  # not the first class's files


def test_a_sample_for_whitening_is_a_few_training_pictures(signs: Path) -> None:
    sample = _feed(signs).sample(count=10)
    assert len(sample) == 10 and sample.shape[1:] == (24, 24, 3)


def test_arrays_keep_their_splits(tiny_npz: Path) -> None:
    feed = load_feed(load_config(overrides={"data.dataset": str(tiny_npz), "train.seed": 0}))
    assert isinstance(feed, ArrayFeed) and feed.recipe is None
    assert feed.count("train") + feed.count("val") == 240 and feed.count("test") == 80
    labels = np.concatenate([y for _, y in feed.numpy_batches("test", 32)])
    assert np.array_equal(labels, feed.splits.y_test)


def test_balanced_class_weights_are_inverse_frequency() -> None:
    from cnnlab.data.feed import balanced_class_weights

    assert balanced_class_weights(np.array([10, 10, 10])) == {0: 1.0, 1: 1.0, 2: 1.0}
    counts = np.array([30, 10, 0, 20])
    weights = balanced_class_weights(counts)  # 60 images over the 3 classes that have any
    assert weights == {0: 0.666667, 1: 2.0, 2: 0.0, 3: 1.0}
    totals = [weights[c] * counts[c] for c in (0, 1, 3)]
    np.testing.assert_allclose(totals, 20.0, rtol=1e-5)  # each class adds the same to the loss
